"""(JPEG input, original target) pairs for training, validation and test, and the LightningDataModule that serves them.

Every source photo is decoded once into a uint8 array. Training pairs are random: a crop of ``crop_size + 8`` (random
flips and 90-degree turns) is JPEG-compressed, then re-cropped to ``crop_size`` at a random offset so the network sees
every alignment of the 8x8 JPEG grid; or, for ``1 - grid_shift_fraction`` of the crops, at offset 0, on the grid, as
JPEG files and the restorer's tiles are. With ``jpeg="pillow"`` the loader's workers make the JPEG; with
``jpeg="torch"`` they only crop, and the batch is compressed where it lands (the GPU) by ``torch_jpeg``, which gives
Pillow's pixels bit for bit. Validation and test pairs are fixed (seeded crops, fixed qualities) and made once by
Pillow, so numbers compare across runs. The train / val / test split is by photo group (``dequantizer.data.split``).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dequantizer.data.sources import FolderPhotos
from dequantizer.data.split import check_fractions, split_names
from dequantizer.data.torch_jpeg import jpeg_roundtrip
from dequantizer.errors import DequantizerError
from dequantizer.files import atomic_write
from dequantizer.images import load_rgb
from dequantizer.jpeg import SUBSAMPLINGS, check_quality, jpeg_roundtrip_array

log = logging.getLogger(__name__)

GRID_SHIFT = 8  # the JPEG block size: training crops are shifted by up to this much after compression
JPEG_ENCODERS = ("pillow", "torch")  # data.jpeg: who makes the training JPEGs (see the module docstring)


def parse_quality(quality: int | Sequence[int]) -> tuple[int, int]:
    """``50`` -> (50, 50); ``[10, 60]`` -> (10, 60), drawn per sample."""
    if isinstance(quality, int) and not isinstance(quality, bool):
        return check_quality(quality), quality
    try:
        low, high = (int(value) for value in quality)
    except (TypeError, ValueError):
        raise DequantizerError(f"data.quality={quality!r}: use one integer or a [low, high] range") from None
    try:
        check_quality(low), check_quality(high)
    except DequantizerError as error:
        raise DequantizerError(f"data.quality={list(quality)}: {error}") from None
    if low > high:
        raise DequantizerError(f"data.quality=[{low}, {high}]: the low end is above the high end")
    return low, high


def validation_qualities(quality: tuple[int, int], count: int = 5) -> list[int]:
    """Fixed qualities spread over the range, used round-robin for validation crops."""
    low, high = quality
    return sorted({round(value) for value in np.linspace(low, high, count)})


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).contiguous()


Focus = list[tuple[tuple[int, int], float]]  # [((low, high), share of the draws), ...]


def parse_focus(quality: tuple[int, int], focus_quality, focus_fraction) -> Focus:
    """``data.focus_quality``/``focus_fraction`` as ranges and shares: one ``[low, high]`` with one share, or a list of
    ranges with a list of shares (e.g. ``[[1, 60], [90, 100]]`` with ``[0.5, 0.2]``); None: no focus."""
    if focus_quality is None:
        return []
    single = len(focus_quality) == 2 and all(isinstance(value, int) for value in focus_quality)
    ranges = [focus_quality] if single else list(focus_quality)
    fractions = [focus_fraction] if isinstance(focus_fraction, int | float) else list(focus_fraction)
    if len(fractions) != len(ranges):
        raise DequantizerError(f"data.focus_fraction={fractions} needs one share per range of data.focus_quality")
    focus = [(parse_quality(list(span)), float(fraction)) for span, fraction in zip(ranges, fractions, strict=True)]
    low, high = quality
    for (focus_low, focus_high), _ in focus:
        if not low <= focus_low <= focus_high <= high:
            raise DequantizerError(f"data.focus_quality=[{focus_low}, {focus_high}] must lie inside data.quality")
    if any(fraction < 0 for fraction in fractions) or sum(fractions) > 1:
        raise DequantizerError(f"data.focus_fraction={fractions}: shares between 0 and 1, at most 1 in all")
    return focus


def draw_quality(quality: tuple[int, int], focus: Focus) -> int:
    """A training quality: from each ``focus`` range with its share of the draws (FBCNN: 10-60, three times in
    four), else uniformly from the whole ``quality`` range."""
    draw = random.random()
    for span, fraction in focus:
        if draw < fraction:
            return random.randint(*span)
        draw -= fraction
    return random.randint(*quality)


SUBSAMPLING_NAMES = list(SUBSAMPLINGS)  # a crop's subsampling travels as its index here


@dataclass
class Draw:
    """One training sample's random draws: the clean patch (the crop, its grid-shift margin and, for a double JPEG,
    the margin of the crop between the two: the first JPEG's input), the side of what the last JPEG compresses,
    the JPEG quality (the first one's, for a double JPEG), the second quality (0: a single JPEG), the crop between
    the two JPEGs, the training window's start, and the chroma subsampling."""

    patch: np.ndarray
    side: int
    quality: int
    second: int
    between: tuple[int, int]
    window: tuple[int, int]
    subsampling: str

    @property
    def told(self) -> int:
        """The quality the model is told: the damage the pixels carry, that is the harsher of the two."""
        return min(self.quality, self.second) if self.second else self.quality


class Crops(NamedTuple):
    """A training sample before its JPEGs (``data.jpeg=torch``): the patch (uint8 C x S x S, S = crop + 16: the
    sample's margins, padded as JPEG pads edges), the first quality, the second (0 for a single JPEG), the crop
    between the two JPEGs, the training window's start and the subsampling (an index into ``SUBSAMPLING_NAMES``).
    Collated, every field gains a batch axis; ``JpegDataModule.on_after_batch_transfer`` turns the batch into pairs
    on the device."""

    patch: torch.Tensor
    quality: int | torch.Tensor  # tensors of B once collated
    second: int | torch.Tensor
    between_top: int | torch.Tensor
    between_left: int | torch.Tensor
    top: int | torch.Tensor
    left: int | torch.Tensor
    subsampling: int | torch.Tensor


def take_windows(images: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size`` x ``size`` window of each image (B x C x H x W) that starts at its (top, left)."""
    offsets = torch.arange(size, device=images.device)
    channels, width = images.shape[1], images.shape[-1]
    rows = (tops[:, None] + offsets)[:, None, :, None].expand(-1, channels, -1, width)
    columns = (lefts[:, None] + offsets)[:, None, None, :].expand(-1, channels, size, -1)
    return images.gather(2, rows).gather(3, columns)


def jpeg_by_subsampling(images: torch.Tensor, quality: torch.Tensor, subsampling: torch.Tensor) -> torch.Tensor:
    """``torch_jpeg.jpeg_roundtrip`` of each image with its own subsampling (one call per subsampling present)."""
    result = torch.empty_like(images)
    for index in subsampling.unique().tolist():
        chosen = subsampling == index
        result[chosen] = jpeg_roundtrip(images[chosen], quality[chosen], SUBSAMPLING_NAMES[index])
    return result


def pairs_from_crops(crops: Crops, crop_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of ``Crops`` -> (jpeg, target, told quality) as the workers would make them with Pillow: a double
    JPEG's patch compressed at its first quality, cropped, compressed at its second; a single one's compressed once;
    then the ``crop_size`` window at (top, left)."""
    size = crop_size + GRID_SHIFT
    clean = take_windows(crops.patch, crops.between_top, crops.between_left, size)
    double = crops.second > 0
    jpeg = torch.empty_like(clean)
    single = ~double
    if single.any():
        jpeg[single] = jpeg_by_subsampling(clean[single], crops.quality[single], crops.subsampling[single])
    if double.any():
        first = jpeg_by_subsampling(crops.patch[double], crops.quality[double], crops.subsampling[double])
        first = take_windows(first, crops.between_top[double], crops.between_left[double], size)
        jpeg[double] = jpeg_by_subsampling(first, crops.second[double], crops.subsampling[double])
    told = torch.where(double, torch.minimum(crops.quality, crops.second), crops.quality)
    return (take_windows(jpeg, crops.top, crops.left, crop_size), take_windows(clean, crops.top, crops.left, crop_size),
            told)  # fmt: skip


class RandomJpegPairs(Dataset):
    """``length`` random training pairs per epoch, cycling through the photos; with ``make_jpeg=False``, the
    ``Crops`` they are made from (the same random draws).

    ``double_fraction`` of the crops are compressed twice, as photos saved again are: at a first quality, then (half of
    them cropped by 1-7 px first, off the first one's block grid) at a second, both drawn as single JPEGs' are; the
    model is told the harsher. ``other_subsampling_fraction`` of the crops use 4:4:4 or 4:2:2 (those of the two that
    differ from ``subsampling``, equally often) instead of it."""

    def __init__(
        self,
        photos: list[np.ndarray],
        crop_size: int,
        quality: tuple[int, int],
        length: int,
        subsampling: str,
        focus: Focus | None = None,
        grid_shift_fraction: float = 1.0,
        greyscale_fraction: float = 0.0,
        make_jpeg: bool = True,
        double_fraction: float = 0.0,
        other_subsampling_fraction: float = 0.0,
    ):
        self.photos, self.crop_size, self.quality = photos, crop_size, quality
        self.greyscale_fraction = greyscale_fraction
        self.length, self.subsampling = length, subsampling
        self.focus = focus or []
        self.grid_shift_fraction = grid_shift_fraction
        self.make_jpeg = make_jpeg
        self.double_fraction, self.other_subsampling_fraction = double_fraction, other_subsampling_fraction
        self.other_subsamplings = [name for name in SUBSAMPLINGS if name in ("4:4:4", "4:2:2") and name != subsampling]

    def __len__(self) -> int:
        return self.length

    def draw(self, index: int) -> Draw:
        # `random` is seeded per worker by Lightning (seed_everything(workers=True)).
        photo = self.photos[index % len(self.photos)]
        height, width = photo.shape[:2]
        shift = min(GRID_SHIFT, height - self.crop_size, width - self.crop_size)
        double = self.double_fraction > 0 and random.random() < self.double_fraction
        margin = min(GRID_SHIFT, height - self.crop_size - shift, width - self.crop_size - shift) if double else 0
        size = self.crop_size + shift + margin
        top, left = random.randint(0, height - size), random.randint(0, width - size)
        patch = photo[top : top + size, left : left + size]
        patch = np.rot90(patch, random.randint(0, 3))
        if random.random() < 0.5:
            patch = patch[:, ::-1]
        patch = np.ascontiguousarray(patch)
        if random.random() < self.greyscale_fraction:
            # Grey photos stored as RGB: their JPEG has flat chroma, and the restorer must not invent colour.
            patch = np.repeat(np.asarray(Image.fromarray(patch).convert("L"))[..., None], 3, axis=2)
        quality = draw_quality(self.quality, self.focus)
        second, between = 0, (0, 0)
        if double:
            second = draw_quality(self.quality, self.focus)
            if margin >= 2 and random.random() < 0.5:  # cropped between the two, off the first one's grid
                between = (random.randint(1, margin - 1), random.randint(1, margin - 1))
        subsampling = self.subsampling
        other = self.other_subsampling_fraction > 0 and self.other_subsamplings  # no draw at 0: later draws unchanged
        if other and random.random() < self.other_subsampling_fraction:
            subsampling = random.choice(self.other_subsamplings)
        dy, dx = random.randint(0, shift), random.randint(0, shift)
        if random.random() >= self.grid_shift_fraction:
            dy = dx = 0  # on the JPEG grid
        return Draw(patch, self.crop_size + shift, quality, second, between, (dy, dx), subsampling)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int] | Crops:
        draw = self.draw(index)
        if not self.make_jpeg:
            # Batched patches share one size: a patch smaller than both margins is padded as JPEG pads its edges
            # (replicated), which changes only the chroma of its last few rows and columns.
            pad = self.crop_size + 2 * GRID_SHIFT - draw.patch.shape[0]
            patch = np.pad(draw.patch, ((0, pad), (0, pad), (0, 0)), mode="edge")
            return Crops(to_tensor(patch), draw.quality, draw.second, *draw.between, *draw.window,
                         SUBSAMPLING_NAMES.index(draw.subsampling))  # fmt: skip
        (top, left), side = draw.between, draw.side
        clean = np.ascontiguousarray(draw.patch[top : top + side, left : left + side])
        if draw.second:
            first = jpeg_roundtrip_array(draw.patch, draw.quality, draw.subsampling)
            first = np.ascontiguousarray(first[top : top + side, left : left + side])
            jpeg = jpeg_roundtrip_array(first, draw.second, draw.subsampling)
        else:
            jpeg = jpeg_roundtrip_array(clean, draw.quality, draw.subsampling)
        dy, dx = draw.window
        window = np.s_[dy : dy + self.crop_size, dx : dx + self.crop_size]
        return to_tensor(jpeg[window]), to_tensor(clean[window]), draw.told


class FixedJpegPairs(Dataset):
    """Pairs made once: ``crops_per_photo`` seeded crops of each photo, qualities assigned round-robin."""

    def __init__(
        self,
        photos: list[np.ndarray],
        crop_size: int,
        qualities: list[int],
        crops_per_photo: int,
        subsampling: str,
        seed: int,
    ):
        rng = np.random.default_rng(seed)
        self.pairs: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        for photo in photos:
            height, width = photo.shape[:2]
            for _ in range(crops_per_photo):
                # A crop of one flat colour measures nothing (its JPEG is exact or nearly: an infinite or huge PSNR
                # that swamps the means): it is drawn again, which moves the seeded crops after it.
                for _attempt in range(10):
                    top = int(rng.integers(0, height - crop_size + 1))
                    left = int(rng.integers(0, width - crop_size + 1))
                    crop = np.ascontiguousarray(photo[top : top + crop_size, left : left + crop_size])
                    if (crop != crop[:1, :1]).any():
                        break
                quality = qualities[len(self.pairs) % len(qualities)]
                jpeg = jpeg_roundtrip_array(crop, quality, subsampling)
                self.pairs.append((to_tensor(jpeg), to_tensor(crop), quality))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.pairs[index]


class JpegDataModule(L.LightningDataModule):
    """Serves (jpeg, target, quality) batches of uint8 CxHxW tensors; the LightningModule converts them to float.

    Args:
        source: a photo source (``SamplePhotos``, ``FolderPhotos``, ``FlickrPhotos``).
        quality: JPEG quality, an int, or ``[low, high]`` drawn per training sample (blind training).
        crop_size: side of the square training/validation crops (the paper: 96).
        focus_quality: ``[low, high]`` inside ``quality`` drawn ``focus_fraction`` of the time (blind training
            weighted towards the qualities that matter most), or a list of ranges with a list of shares (e.g. the
            low qualities and the top 90-100, where a restorer must learn to leave nearly clean images alone), or
            None for uniform draws over ``quality``.
        grid_shift_fraction: share of training crops whose 8x8 JPEG grid is shifted; the others sit on the grid.
        greyscale_fraction: share of training crops made grey (R = G = B), so grey photos stay grey.
        double_fraction: share of training crops compressed twice (half of them cropped between), as photos saved
            again are; the model is told the harsher quality, the damage the pixels carry.
        other_subsampling_fraction: share of training crops with 4:4:4 or 4:2:2 chroma instead of ``subsampling``.
        jpeg: who makes the training JPEGs: "pillow" (the loader's workers; the reference) or "torch" (the batch, on
            the training device: the GPU does the work, the workers only crop; the same pixels).
        val_fraction, test_fraction: shares of the photo groups held out to pick the best checkpoint (val) and to
            report on after training (test), when the split is first made.
        samples_per_epoch: training pairs per epoch; ``None`` means one per training photo.
        val_crops_per_photo: fixed crops taken from each validation (and test) photo.
        split_file: where the split is saved; ``None`` means ``split.json`` in the source's root.
    """

    def __init__(
        self,
        source: FolderPhotos,
        quality: int | Sequence[int] = 50,
        crop_size: int = 96,
        batch_size: int = 16,
        num_workers: int = 2,
        val_fraction: float = 0.2,
        test_fraction: float = 0.1,
        samples_per_epoch: int | None = None,
        val_crops_per_photo: int = 1,
        subsampling: str = "4:2:0",
        seed: int = 1234,
        split_file: str | None = None,
        pin_memory: bool = False,
        focus_quality: Sequence[int] | Sequence[Sequence[int]] | None = None,
        focus_fraction: float | Sequence[float] = 0.75,
        grid_shift_fraction: float = 1.0,
        greyscale_fraction: float = 0.0,
        jpeg: str = "pillow",
        double_fraction: float = 0.0,
        other_subsampling_fraction: float = 0.0,
    ):
        super().__init__()
        self.source = source
        self.quality = parse_quality(quality)
        self.focus = parse_focus(self.quality, focus_quality, focus_fraction)
        fractions = {"grid_shift_fraction": grid_shift_fraction, "greyscale_fraction": greyscale_fraction,
                     "double_fraction": double_fraction, "other_subsampling_fraction": other_subsampling_fraction}
        for name, value in fractions.items():
            if not 0 <= value <= 1:
                raise DequantizerError(f"data.{name}={value} must lie between 0 and 1")
        self.grid_shift_fraction = grid_shift_fraction
        self.greyscale_fraction = greyscale_fraction
        self.double_fraction, self.other_subsampling_fraction = double_fraction, other_subsampling_fraction
        if crop_size < 8:
            raise DequantizerError(f"data.crop_size={crop_size} is too small: use at least 8 (one JPEG block)")
        try:
            check_fractions(val_fraction, test_fraction)
        except DequantizerError as error:
            raise DequantizerError(f"data.{error}") from None
        if subsampling not in SUBSAMPLINGS:
            raise DequantizerError(f"data.subsampling={subsampling!r} is not one of {', '.join(SUBSAMPLINGS)}")
        if jpeg not in JPEG_ENCODERS:
            raise DequantizerError(f"data.jpeg={jpeg!r} is not one of {', '.join(JPEG_ENCODERS)}")
        self.jpeg = jpeg
        if batch_size < 1:
            raise DequantizerError(f"data.batch_size={batch_size} must be at least 1")
        self.crop_size, self.batch_size, self.num_workers = crop_size, batch_size, num_workers
        self.val_fraction, self.test_fraction, self.samples_per_epoch = val_fraction, test_fraction, samples_per_epoch
        self.val_crops_per_photo, self.subsampling, self.seed = val_crops_per_photo, subsampling, seed
        self.split_file = Path(split_file) if split_file else None
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        # What the post-training table is computed on: "test", or "val" for a split saved without a test part.
        self.test_part = "test"
        self.test_photos = 0
        self.skipped: list[str] = []  # unreadable files
        self.too_small: list[str] = []  # photos smaller than the crop

    # -- split ---------------------------------------------------------------------------------------------------------
    def split(self, paths: list[Path], save: bool = False) -> dict[str, list[Path]]:
        """Train, val and test photo paths. Made once and saved (``save``); photos added later join their group's
        part, or a part drawn by a seeded hash of their new group."""
        root = self.source.root
        names = {path.relative_to(root).as_posix(): path for path in paths}
        split_file = self.split_file or root / "split.json"
        fixed = self.source.saved_split()  # made with the data (Flickr): never rewritten here
        saved = fixed if fixed is not None or not split_file.is_file() else json.loads(split_file.read_text())
        groups = {name: self.source.group(path) for name, path in names.items()}
        split = split_names(groups, saved, self.val_fraction, self.test_fraction, self.seed)
        if save and fixed is None:
            # An older split without a test part stays without one (see split_names).
            record = {part: members for part, members in split.items() if saved is None or part in saved}
            if saved is None or any(record[part] != saved.get(part) for part in record):
                self._save_split(split_file, record)
        result = {part: [names[name] for name in split[part] if name in names] for part in split}
        if not result["train"] or not result["val"]:
            raise DequantizerError(f"the split in {split_file} leaves train or val empty: delete it to split again")
        return result

    def _save_split(self, split_file: Path, split: dict[str, list[str]]) -> None:
        record = {"seed": self.seed, "val_fraction": self.val_fraction, "test_fraction": self.test_fraction, **split}
        try:
            atomic_write(split_file, json.dumps(record, indent=1) + "\n")
        except OSError as error:
            raise DequantizerError(f"cannot save the split to {split_file} ({error}): set data.split_file") from None

    # -- photos --------------------------------------------------------------------------------------------------------
    def _load(self, paths: list[Path]) -> list[np.ndarray]:
        photos = []
        for path in paths:
            try:
                photo = load_rgb(path)
            except DequantizerError as error:  # unreadable, truncated, not an image, decompression bomb...
                log.warning("skipping %s", error)
                self.skipped.append(str(path))
                continue
            height, width = photo.shape[:2]
            if min(height, width) < self.crop_size:
                log.warning("skipping %s: %dx%d is smaller than data.crop_size=%d", path, width, height,
                            self.crop_size)
                self.too_small.append(f"{path.name} ({width}x{height})")
                continue
            photos.append(photo)
        return photos

    def prepare_data(self) -> None:
        # Lightning calls this in one process per node before `setup`, the others wait: downloads and files
        # (exported photos, the split) are written here only, never by several ranks at once.
        self.source.prepare()
        self.split(self.source.photo_paths(), save=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        split = self.split(self.source.photo_paths())
        train_photos, val_photos = self._load(split["train"]), self._load(split["val"])
        test_photos = self._load(split["test"])
        if self.skipped:
            log.warning("skipped %d unreadable files", len(self.skipped))
        if self.too_small:
            log.warning("skipped %d photos smaller than data.crop_size=%d", len(self.too_small), self.crop_size)
        if (not train_photos or not val_photos) and self.too_small:
            raise DequantizerError(
                f"data.crop_size={self.crop_size} is larger than photo {self.too_small[0]} and the other photos of the "
                f"train or val split: lower data.crop_size or add larger photos"
            )
        if not train_photos or not val_photos:
            raise DequantizerError(f"no readable photos left in the train or val split under {self.source.root}")
        length = self.samples_per_epoch or len(train_photos)
        self.train_set = RandomJpegPairs(
            train_photos, self.crop_size, self.quality, length, self.subsampling,
            self.focus, self.grid_shift_fraction, self.greyscale_fraction, make_jpeg=self.jpeg == "pillow",
            double_fraction=self.double_fraction, other_subsampling_fraction=self.other_subsampling_fraction,
        )  # fmt: skip
        qualities = validation_qualities(self.quality)
        self.val_set = FixedJpegPairs(
            val_photos, self.crop_size, qualities, self.val_crops_per_photo, self.subsampling, self.seed
        )
        if test_photos:
            self.test_set = FixedJpegPairs(
                test_photos, self.crop_size, qualities, self.val_crops_per_photo, self.subsampling, self.seed
            )
            self.test_part, self.test_photos = "test", len(test_photos)
        else:
            # A split saved before test parts existed: report on val, and say so (train.py names the part).
            log.warning("no test photos in the split: the table after training is computed on the validation photos")
            self.test_set, self.test_part, self.test_photos = self.val_set, "val", len(val_photos)
        log.info("data: %d train photos, %d val photos -> %d val crops, %d test photos -> %d test crops",
                 len(train_photos), len(val_photos), len(self.val_set), len(test_photos),
                 len(self.test_set) if test_photos else 0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(self.train_set) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def val_dataloader(self) -> DataLoader:
        # Fixed pairs are already in memory: no workers needed.
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, pin_memory=self.pin_memory)

    def test_dataloader(self) -> DataLoader:
        # Held-out photos: neither trained on nor used to pick the best checkpoint.
        return DataLoader(self.test_set, batch_size=self.batch_size, shuffle=False, pin_memory=self.pin_memory)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # Training batches of data.jpeg=torch arrive as crops, on the training device: compress them there.
        if isinstance(batch, Crops):
            return pairs_from_crops(batch, self.crop_size)
        return batch

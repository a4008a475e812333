"""Restoring images: a generator (``weights.load_generator``) run over images of any size in tiles, the quality each
image is restored for, and the image modes, EXIF and ICC data around it.

Tiles start at multiples of 8 from the image origin (so every tile sees the JPEG block grid as the whole image does),
overlap, and are blended with weights that fall off towards each tile's edges, so no seams show. The overlap follows
from the model's receptive field (a larger model gets a wider one). Tiles run in batches; memory stays bounded by the
tile batch plus the output image. A self-ensemble (EDSR's "+") restores each tile flipped and transposed as well and
averages the results, turned back; a tile's sides are multiples of 8, so every view keeps the 8x8 block grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from dequantizer.errors import DequantizerError
from dequantizer.images import GREYSCALE_MODES, save_image_atomic, split_alpha
from dequantizer.jpeg import earlier_jpeg, estimate_jpeg_quality, jpeg_history
from dequantizer.models import to_model_range, to_unit_range
from dequantizer.tiling import blend_window, overlap_for, tile_starts
from dequantizer.weights import load_generator, resolve_model

# The views of a self-ensemble, as (view, its inverse) on NCHW tensors: flips, then transposes (a transposed JPEG's
# quantization table is the transpose of its own; the default model gains from them as well).
SELF_ENSEMBLE_VIEWS = (
    (lambda x: x, lambda x: x),
    (lambda x: x.flip(-1), lambda x: x.flip(-1)),
    (lambda x: x.flip(-2), lambda x: x.flip(-2)),
    (lambda x: x.flip(-2, -1), lambda x: x.flip(-2, -1)),
    (lambda x: x.transpose(-2, -1), lambda x: x.transpose(-2, -1)),
    (lambda x: x.flip(-1).transpose(-2, -1), lambda x: x.transpose(-2, -1).flip(-1)),
    (lambda x: x.flip(-2).transpose(-2, -1), lambda x: x.transpose(-2, -1).flip(-2)),
    (lambda x: x.flip(-2, -1).transpose(-2, -1), lambda x: x.transpose(-2, -1).flip(-2, -1)),
)
SELF_ENSEMBLE_SIZES = (1, 2, 4, 8)  # 2: a mirror; 4: the flips; 8: flips and transposes


def check_ensemble(ensemble: int) -> int:
    if isinstance(ensemble, bool) or not isinstance(ensemble, int) or ensemble not in SELF_ENSEMBLE_SIZES:
        sizes = ", ".join(map(str, SELF_ENSEMBLE_SIZES))
        raise DequantizerError(f"a self-ensemble of {ensemble!r} views: use one of {sizes}")
    return ensemble


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_device(device: str | torch.device | None) -> torch.device:
    """A device that exists and works here (default: CUDA when present), or one clear line."""
    if device is None:
        return default_device()
    try:
        parsed = torch.device(device)
        torch.empty(1, device=parsed)
    except (RuntimeError, AssertionError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DequantizerError(f"device {str(device)!r} cannot be used here ({reason}); use --device cpu") from None
    return parsed


@dataclass
class Restorer:
    """Restores RGB uint8 arrays with a generator, tile by tile.

    ``precision``: "bf16" runs the network under autocast (AMX / tensor cores), "fp32" in full precision.
    ``ensemble``: views per tile averaged (``SELF_ENSEMBLE_SIZES``; 1: none): better restorations at that many
    times the time.
    """

    generator: nn.Module
    device: torch.device = field(default_factory=default_device)
    precision: str = "bf16"
    tile_size: int = 512
    overlap: int | None = None  # default: from the model's receptive field (metadata "overlap", else measured once)
    batch_size: int = 1  # tiles per forward: 1 keeps peak memory low on CPU; raise it on a GPU
    metadata: dict[str, Any] = field(default_factory=dict)  # what the weights file says about the model
    ensemble: int = 1

    def __post_init__(self):
        check_ensemble(self.ensemble)
        if self.tile_size % 8 or self.tile_size < 16:
            raise DequantizerError(f"tile size {self.tile_size}: use a multiple of 8, at least 16")
        if self.overlap is not None and (self.overlap % 8 or not 0 <= self.overlap < self.tile_size):
            raise DequantizerError("the tile overlap must be a multiple of 8, smaller than the tile size")
        if self.precision not in ("bf16", "fp32"):
            raise DequantizerError(f"precision {self.precision!r}: use bf16 or fp32")
        self.generator = self.generator.to(self.device, memory_format=torch.channels_last).eval()
        self.scale = getattr(self.generator, "scale", 1)
        if self.overlap is None and self.metadata.get("overlap"):
            self.overlap = int(self.metadata["overlap"])
        if self.overlap is not None:
            self.overlap_in_use()  # a tile size too small for a known overlap is refused before any work

    def overlap_in_use(self) -> int:
        """The overlap in use: given, recorded in the weights' metadata (exports record it), or measured from the
        receptive field (once, when the first image needs more than one tile)."""
        if self.overlap is None:
            self.overlap = overlap_for(self.generator)
        if 2 * self.overlap > self.tile_size:
            raise DequantizerError(f"tile size {self.tile_size} is too small for this model: its tiles overlap by "
                                   f"{self.overlap} px (from its receptive field); use a tile size of at least "
                                   f"{2 * self.overlap}")
        return self.overlap

    @torch.inference_mode()
    def predict_quality(self, tiles: torch.Tensor) -> float:
        """The mean JPEG quality that a quality-aware model's head reads in uint8 NCHW tiles."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            predicted = self.generator(to_model_range(tiles.to(self.device)), None, return_quality=True)[1]
        return float(predicted.float().mean())

    @torch.inference_mode()
    def restore_tiles(self, tiles: torch.Tensor, quality: int | None = None) -> torch.Tensor:
        """uint8 NCHW tiles -> float [0, 1] NCHW restored tiles on the CPU. ``quality``: the JPEG quality, for
        quality-aware models (None: they predict it from each tile, upright, and restore every view for that)."""
        inputs = to_model_range(tiles.to(self.device))
        condition = None if quality is None else torch.full((len(tiles),), float(quality), device=self.device)
        predicts = condition is None and self.ensemble > 1 and hasattr(self.generator, "quality_head")
        total = None
        for view, inverse in SELF_ENSEMBLE_VIEWS[: self.ensemble]:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                if predicts:  # the upright view: the head was trained on upright quantization tables
                    out, condition = self.generator(view(inputs), None, return_quality=True)
                    predicts = False
                else:
                    out = self.generator(view(inputs), condition)
            out = inverse(out)
            total = out.float() if total is None else total + out.float()
        return to_unit_range(total / self.ensemble).clamp(0, 1).cpu()

    def restore_array(self, rgb: np.ndarray, quality: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """HxWx3 uint8 -> (sH)x(sW)x3 uint8. ``quality``: the JPEG quality the image was saved at, if known.
        ``progress(tiles done, tiles in all)`` is called before the first tile and after each batch of tiles."""
        height, width = rgb.shape[:2]
        # Pad bottom/right to whole 8x8 blocks by repeating the edge, as JPEG encoders do: tiles then stay aligned.
        padded_h, padded_w = -(-height // 8) * 8, -(-width // 8) * 8
        rgb = np.pad(rgb, ((0, padded_h - height), (0, padded_w - width), (0, 0)), mode="edge")
        image = torch.from_numpy(rgb).permute(2, 0, 1)
        tile_h, tile_w = min(self.tile_size, padded_h), min(self.tile_size, padded_w)
        report = progress or (lambda done, total: None)
        if padded_h <= self.tile_size and padded_w <= self.tile_size:  # one tile: no overlap needed
            report(0, 1)
            restored = self.restore_tiles(image[None], quality)[0]
            report(1, 1)
            return self._unpad(restored, height, width)
        overlap = self.overlap_in_use()
        stride = self.tile_size - overlap
        boxes = [
            (top, left)
            for top in tile_starts(padded_h, tile_h, stride)
            for left in tile_starts(padded_w, tile_w, stride)
        ]
        s = self.scale
        out = torch.zeros(3, padded_h * s, padded_w * s)
        weights = torch.zeros(1, padded_h * s, padded_w * s)
        window = blend_window(tile_h * s, tile_w * s, overlap * s)
        report(0, len(boxes))
        for first in range(0, len(boxes), self.batch_size):
            batch = boxes[first : first + self.batch_size]
            tiles = torch.stack([image[:, top : top + tile_h, left : left + tile_w] for top, left in batch])
            for (top, left), restored in zip(batch, self.restore_tiles(tiles, quality), strict=True):
                region = np.s_[:, top * s : (top + tile_h) * s, left * s : (left + tile_w) * s]
                out[region] += restored * window
                weights[region] += window
            report(first + len(batch), len(boxes))
        return self._unpad(out / weights, height, width)

    def _unpad(self, out: torch.Tensor, height: int, width: int) -> np.ndarray:
        """Float [0, 1] CHW of the padded image -> HxWx3 uint8 of the original size (times the model's scale)."""
        out = out[:, : height * self.scale, : width * self.scale]
        return (out * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def default_precision(device: torch.device) -> str:
    """bf16 where the hardware runs it natively (CUDA, AVX512-BF16/AMX CPUs), else fp32."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


_RESTORERS: dict[tuple, Restorer] = {}


ENGINES = ("torch", "onnx")


def get_restorer(model: str | Path | None = None, device: str | torch.device | None = None,
                 precision: str | None = None, tile_size: int = 512, ensemble: int = 1,
                 engine: str = "torch") -> Restorer:
    """A cached ``Restorer`` for a model name or file. ``engine="onnx"`` runs the network with onnxruntime in fp32
    (an .onnx model as it is; any other exported once into a cache, ``onnx_engine.cached_export``); the tiles, their
    blending and the self-ensemble are the same Python code for both engines."""
    if engine not in ENGINES:
        raise DequantizerError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "onnx":
        from dequantizer import onnx_engine

        name, _ = onnx_engine.providers(device)  # onnxruntime missing, or the device unusable: one line, first
        if precision not in (None, "fp32"):
            raise DequantizerError(f"precision {precision!r}: engine='onnx' runs in fp32 only")
        path, precision = onnx_engine.onnx_model_file(model), "fp32"
        torch_device = torch.device("cpu")  # tiles are cut and blended on the CPU; onnxruntime places the network

        def load():
            return onnx_engine.load_onnx_generator(path, device)
    else:
        path = resolve_model(model)
        torch_device = parse_device(device)
        name, precision = str(torch_device), precision or default_precision(torch_device)

        def load():
            return load_generator(path)
    key = (engine, str(path.resolve()), name, precision, tile_size, check_ensemble(ensemble))
    if key not in _RESTORERS:
        # Restorers that differ only in their self-ensemble share one copy of the network.
        twin = next((restorer for other, restorer in _RESTORERS.items() if other[:-1] == key[:-1]), None)
        generator, metadata = (twin.generator, twin.metadata) if twin else load()
        _RESTORERS[key] = Restorer(generator, device=torch_device, precision=precision, tile_size=tile_size,
                                   metadata=metadata, ensemble=ensemble)
    return _RESTORERS[key]


def is_grey(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


# Where no quantization steps are read and the head reads at least this, the image is restored as a quality-100 one:
# a JPEG of quality 2-99 would have left its steps (one too coarse to leave them reads far below 97 to the head), and
# the head reads never-compressed photos as it reads q97-99 ones, while restoring an uncompressed image as a q98 one
# costs far more than the reverse (experiments/README.md, reading the quality from the pixels).
UNCOMPRESSED_HEAD_QUALITY = 97


def quality_from_pixels(rgb: np.ndarray, restorer: Restorer) -> int | None:
    """For an image without tables and a quality-aware model: the quality of the JPEG that the pixels were last
    decoded from, read from the quantization steps their DCT coefficients sit on (``jpeg_history``), or of a harsher
    one before it whose steps they still show (``earlier_jpeg``); where there are none, 100 if the model's head reads
    the image as nearly lossless, else None (the head then predicts the quality tile by tile: a resized JPEG, another
    encoder's tables coarser than about q75, or any JPEG too coarse to leave its steps)."""
    if not hasattr(restorer.generator, "quality_head"):
        return None
    history = jpeg_history(rgb)
    if history is not None:
        earlier = earlier_jpeg(rgb, history[0])  # saved twice, the first time harsher: restored for the first
        return history[0] if earlier is None else earlier[0]
    side = min(256, rgb.shape[0] // 8 * 8, rgb.shape[1] // 8 * 8)
    if side < 8:
        return None
    crop = torch.from_numpy(np.array(rgb[:side, :side])).permute(2, 0, 1)[None]  # a copy: rgb may be read-only
    return 100 if restorer.predict_quality(crop) >= UNCOMPRESSED_HEAD_QUALITY else None


@dataclass(frozen=True)
class QualityChoice:
    """The JPEG quality an image is restored for, and where it came from: "user" (``quality=``), "tables" (the file's
    quantization tables), "recorded" (the text chunk of ``quantize --format png``), "pixels" (the quantization steps
    the decoded pixels sit on; also those of an earlier, harsher JPEG under a file's tables), "head" (the model reads
    it: 100 for a nearly lossless image, None for tile by tile), "none" (a model that is not told the quality).
    ``kept`` says why the pixels are passed through unchanged instead, if they are; ``told`` is False for a model
    that restores without being told a quality (the paper's: one quality each), which the quality only gates."""

    quality: int | None
    source: str
    detail: str = ""  # e.g. "an earlier JPEG under the file's q75"
    kept: str = ""  # e.g. "above the model's max_quality 90"
    told: bool = True

    @property
    def named(self) -> bool:
        """Whether a file or its user named a quality (what ``max_quality`` gates), rather than the pixels alone."""
        return self.source in ("user", "tables", "recorded") or bool(self.detail)

    @property
    def origin(self) -> str:
        """Where the quality came from, in words: "the tables", "the pixels: an earlier JPEG under the file's q75"."""
        return f"the {self.source}" + (f": {self.detail}" if self.detail else "")

    def __str__(self) -> str:
        if self.kept:
            return f"kept as it is, q{self.quality} from {self.origin} ({self.kept})"
        if not self.told:
            named = f"; q{self.quality} from {self.origin}" if self.quality is not None else ""
            return f"restored (its model is not told a quality{named})"
        if self.quality is None:
            return "restored as its model reads each tile"
        return f"restored as q{self.quality} (from {self.origin})"


def choose_quality(image: Image.Image, restorer: Restorer, quality: int | None = None) -> QualityChoice:
    """What ``restore_image`` does with ``image``: restore it for ``quality`` if given, else for what the file's tables
    say, else (quality-aware models) for what its pixels say (``quality_from_pixels``); or keep its pixels."""
    choice = _quality_source(image, restorer, quality)
    if not hasattr(restorer.generator, "quality_head"):
        choice = replace(choice, told=False)
    if restorer.scale != 1 or choice.quality is None:
        return choice
    max_quality = restorer.metadata.get("max_quality")
    if choice.named and max_quality is not None and choice.quality > max_quality:
        return replace(choice, kept=f"above the model's max_quality {max_quality}, where it was measured to harm")
    # A grey JPEG of quality 100 lost nothing but the rounding of its DCT coefficients to integers: restoring it was
    # measured to do no good (experiments/README.md), so its pixels are kept.
    if choice.quality == 100 and is_grey_image(image):
        return replace(choice, kept="a grey image at quality 100 lost only rounding")
    return choice


def _quality_source(image: Image.Image, restorer: Restorer, quality: int | None) -> QualityChoice:
    if quality is not None:
        return QualityChoice(quality, "user")
    named = estimate_jpeg_quality(image)
    aware = hasattr(restorer.generator, "quality_head")
    if named is not None:
        # The pixels may carry harsher damage than the last tables say: a JPEG saved again at a milder quality. Read
        # on the file's own block grid, before any EXIF rotation moves it.
        earlier = earlier_jpeg(np.asarray(split_alpha(image)[0]), named) if aware else None
        if earlier is None:
            return QualityChoice(named, "tables" if getattr(image, "quantization", None) else "recorded")
        return QualityChoice(earlier[0], "pixels", f"an earlier JPEG under the file's q{named}")
    if not aware:
        return QualityChoice(None, "none")
    read = quality_from_pixels(np.asarray(split_alpha(ImageOps.exif_transpose(image))[0]), restorer)
    return QualityChoice(read, "pixels" if read is not None and read < 100 else "head")


def is_grey_image(image: Image.Image) -> bool:
    """A grey mode, or a grey photo stored as RGB (a grey JPEG decodes with R = G = B exactly)."""
    return image.mode in GREYSCALE_MODES or is_grey(np.asarray(split_alpha(image)[0]))


def decoded_view(image: Image.Image) -> Image.Image:
    """The input as ``restore_image`` reads it, to show beside its restoration: upright, 8-bit RGB or L (a grey
    photo), with its alpha; without an ICC profile (a CMYK one would not describe these pixels)."""
    image = ImageOps.exif_transpose(image)
    rgb, alpha = split_alpha(image)
    view = rgb.convert("L") if is_grey_image(image) else rgb
    if alpha is not None:
        view.putalpha(alpha)
    view.info.pop("icc_profile", None)
    return view


def restore_image(image: Image.Image, restorer: Restorer, quality: int | None = None, *,
                  choice: QualityChoice | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Image.Image:
    """Restore a PIL image of any mode: EXIF orientation applied, alpha passed through (resized with the image if
    the model upsamples), greyscale stays greyscale; the ICC profile and EXIF (orientation reset) kept in ``info``.

    A JPEG file says its quality in its quantization tables (``choose_quality``: for a quality-aware model, the
    harsher quality of an earlier JPEG that its pixels still show, if any); ``quality`` overrides it (a strength knob:
    lower restores harder), and ``choice`` is what ``choose_quality`` returned already (it also decides whether
    the pixels are kept as they are). ``progress(tiles done, tiles in all)``
    follows the network's work (``Restorer.restore_array``). Quality-aware models are told the quality (without
    one, ``quality_from_pixels`` reads it from the quantization steps a JPEG left in the pixels, else the model
    predicts it); above the model's ``max_quality`` (where it was measured to do more harm than good), and for a grey
    image of quality 100, the pixels are passed through unchanged (``QualityChoice.kept`` says why).
    """
    choice = choice or choose_quality(image, restorer, quality)  # made already by a caller that reports it
    image = ImageOps.exif_transpose(image)  # its EXIF (camera, date, GPS) kept, the orientation tag removed
    icc_profile, exif = image.info.get("icc_profile"), image.info.get("exif")
    rgb, alpha = split_alpha(image)
    greyscale = is_grey_image(image)  # a grey photo stored as RGB holds no colour to restore either
    if choice.kept:
        restored = rgb.copy()
    else:
        restored = Image.fromarray(restorer.restore_array(np.asarray(rgb), choice.quality, progress))
    if greyscale:
        restored = restored.convert("L")
        if image.mode not in GREYSCALE_MODES:
            restored = restored.convert("RGB")  # grey pixels, in the mode they came in
    if alpha is not None:
        restored.putalpha(alpha.resize(restored.size, Image.BICUBIC) if alpha.size != restored.size else alpha)
    if icc_profile and image.mode != "CMYK":  # a CMYK profile does not describe the RGB output
        restored.info["icc_profile"] = icc_profile
    if exif:
        restored.info["exif"] = exif
    return restored


def save_restored(image: Image.Image, target: str | Path) -> Path:
    """Write a restored image losslessly, in the format its suffix names (png, tif, webp), with the ICC profile and
    EXIF it carries, atomically."""
    options = {key: image.info[key] for key in ("icc_profile", "exif") if image.info.get(key)}
    if Path(target).suffix.lower() == ".webp":
        options |= {"lossless": True, "exact": True}  # Pillow's WebP is lossy unless told otherwise
    return save_image_atomic(image, target, **options)

"""Training data (dequantizer/data/: datamodule.py, sources.py, split.py): JPEG pairs made by Pillow or in torch after
the transfer, how their qualities, block grids and colours are drawn, fixed validation pairs, a split saved once that
never leaks, photo sources, unreadable photos skipped, and clear errors for bad values. JPEG in torch is tested in
test_torch_jpeg.py, the Flickr client in test_flickr.py."""

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from dequantizer.data import FlickrPhotos, FolderPhotos, JpegDataModule, SamplePhotos
from dequantizer.data.datamodule import (
    Crops,
    FixedJpegPairs,
    RandomJpegPairs,
    draw_quality,
    pairs_from_crops,
    parse_quality,
)
from dequantizer.errors import DequantizerError
from dequantizer.jpeg import jpeg_roundtrip, jpeg_roundtrip_array


def make_photos(folder, count=10, size=(80, 60), seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        smooth = rng.random((size[1] // 8, size[0] // 8, 3)) * 255
        image = Image.fromarray(smooth.astype(np.uint8)).resize(size, Image.BICUBIC)
        image.save(folder / f"photo{index:02d}.png")
    return folder


def datamodule(root, **kwargs):
    defaults = dict(quality=30, crop_size=32, batch_size=4, num_workers=0, val_crops_per_photo=2)
    return JpegDataModule(FolderPhotos(root), **{**defaults, **kwargs})


def test_pairs_are_uint8_crops_and_the_input_is_a_real_jpeg(tmp_path):
    dm = datamodule(make_photos(tmp_path / "photos"), samples_per_epoch=12)
    dm.setup()
    jpeg, target, quality = next(iter(dm.train_dataloader()))
    assert jpeg.shape == target.shape == (4, 3, 32, 32) and jpeg.dtype == torch.uint8
    assert (quality == 30).all()
    assert (jpeg != target).any()
    assert len(dm.train_set) == 12


def jpeg_grid_phases(jpeg, target, quality):
    """The (row, column) offsets of the 8x8 JPEG grid at which ``jpeg`` is exactly the JPEG of ``target``.

    With 4:4:4 every 8x8 block is coded on its own, so the whole blocks of the window are reproduced bit for bit by
    compressing the target's pixels over those blocks: at the grid's true offset only, and only when the JPEG and
    the target windows are aligned."""
    jpeg, target = jpeg.permute(1, 2, 0).numpy(), target.permute(1, 2, 0).numpy()
    side = (jpeg.shape[0] // 8 - 1) * 8  # whole blocks at any offset
    phases = []
    for dy in range(8):
        for dx in range(8):
            window = np.s_[dy : dy + side, dx : dx + side]
            coded = np.asarray(jpeg_roundtrip(Image.fromarray(np.ascontiguousarray(target[window])), quality, "4:4:4"))
            if np.array_equal(coded, jpeg[window]):
                phases.append((dy, dx))
    return phases


@pytest.mark.parametrize("grid_shift_fraction", [0.0, 1.0])
def test_training_pairs_are_aligned_and_their_jpeg_grid_shifts_as_asked(tmp_path, grid_shift_fraction):
    photos = [np.asarray(Image.open(path).convert("RGB")) for path in make_photos(tmp_path, size=(96, 96)).iterdir()]
    pairs = RandomJpegPairs(photos, crop_size=32, quality=(30, 30), length=24, subsampling="4:4:4",
                            grid_shift_fraction=grid_shift_fraction)
    grids = set()
    for index in range(len(pairs)):
        jpeg, target, quality = pairs[index]
        phases = jpeg_grid_phases(jpeg, target, quality)
        assert len(phases) == 1, f"pair {index}: the JPEG matches the target at grid offsets {phases}, not one"
        grids |= set(phases)
    if grid_shift_fraction == 0:
        assert grids == {(0, 0)}  # on the grid, as JPEG files and the restorer's tiles are
    else:
        assert len(grids) > 8, grids  # of the 64 offsets, 24 draws show many


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
@pytest.mark.parametrize("double_fraction, other_subsampling_fraction", [(0.0, 0.0), (0.5, 0.5)])
def test_torch_jpeg_batches_are_the_pillow_pairs(tmp_path, subsampling, double_fraction, other_subsampling_fraction):
    """data.jpeg=torch: the workers return crops, the batch is compressed after the transfer; with the same random
    draws the pairs are Pillow's, pixel for pixel (grey crops, shifted grids, double JPEGs cropped between or not,
    other subsamplings, and photos too small for the full margins included)."""
    import random

    folders = make_photos(tmp_path / "large", 3, size=(64, 60)), make_photos(tmp_path / "small", 2, size=(44, 46))
    photos = [np.asarray(Image.open(path).convert("RGB")) for folder in folders for path in sorted(folder.iterdir())]
    options = dict(crop_size=40, quality=(1, 100), length=32, subsampling=subsampling, greyscale_fraction=0.3,
                   double_fraction=double_fraction, other_subsampling_fraction=other_subsampling_fraction)
    reference, crops = RandomJpegPairs(photos, **options), RandomJpegPairs(photos, **options, make_jpeg=False)
    random.seed(5)
    expected = [reference[index] for index in range(32)]
    random.seed(5)
    batch = torch.utils.data.default_collate([crops[index] for index in range(32)])
    assert isinstance(batch, Crops) and batch.patch.shape == (32, 3, 56, 56)
    jpeg, target, quality = pairs_from_crops(batch, 40)
    exact = 0
    for index, (want_jpeg, want_target, want_quality) in enumerate(expected):
        assert torch.equal(target[index], want_target) and quality[index] == want_quality
        margins = 8 + (8 if batch.second[index] else 0)
        if min(photos[index % len(photos)].shape[:2]) >= 40 + margins:  # full margins: Pillow's JPEG exactly
            assert torch.equal(jpeg[index], want_jpeg), index
            exact += 1
        elif not batch.second[index]:  # padded to the batch's size: at most the chroma near the edge moves
            assert (jpeg[index].int() - want_jpeg.int()).abs().float().mean() < 1
        # (a double JPEG of a photo too small for its margins: the torch path's first JPEG sees the padded edge, a
        # double JPEG all the same, of the photo's edge replicated)
    assert exact >= 19
    if double_fraction:  # the draws reach every kind
        doubles = batch.second > 0
        assert 0 < doubles.sum() < 32 and (batch.between_top[doubles] + batch.between_left[doubles] > 0).any()
        assert (quality[doubles] == torch.minimum(batch.quality, batch.second)[doubles]).all()
        assert len(batch.subsampling.unique()) >= 2


def test_datamodule_makes_torch_jpeg_pairs_after_the_transfer(tmp_path):
    dm = datamodule(make_photos(tmp_path / "photos"), samples_per_epoch=8, jpeg="torch")
    dm.setup()
    crops = next(iter(dm.train_dataloader()))
    assert isinstance(crops, Crops) and crops.patch.shape == (4, 3, 48, 48)
    jpeg, target, quality = dm.on_after_batch_transfer(crops, 0)
    assert jpeg.shape == target.shape == (4, 3, 32, 32) and jpeg.dtype == torch.uint8
    assert (quality == 30).all() and (jpeg != target).any()
    val = next(iter(dm.val_dataloader()))
    assert dm.on_after_batch_transfer(val, 0) is val  # fixed pairs, made by Pillow


def test_validation_crops_of_one_flat_colour_are_redrawn():
    """A flat crop's JPEG is exact (an infinite PSNR would swamp the validation means): such crops are drawn again."""
    photo = np.zeros((64, 256, 3), np.uint8)
    photo[:, :128] = (200, 30, 90)  # one colour, not grey
    photo[:, 128:] = np.random.default_rng(0).integers(0, 256, (64, 128, 3))
    pairs = FixedJpegPairs([photo], crop_size=32, qualities=[90], crops_per_photo=16, subsampling="4:2:0", seed=0)
    assert all((target != target[:, :1, :1]).any() for _, target, _ in pairs.pairs)


def test_split_is_saved_reused_and_never_leaks(tmp_path):
    root = make_photos(tmp_path / "photos", count=20)
    first = datamodule(root).split(FolderPhotos(root).photo_paths(), save=True)
    train, val, test = (set(first[part]) for part in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert len(val) == 4 and len(test) == 2  # 20% and 10% of 20
    saved = json.loads((root / "split.json").read_text())
    assert sorted(saved["train"] + saved["val"] + saved["test"]) == sorted(p.name for p in root.glob("*.png"))
    # another seed later does not reshuffle: the split is made once
    again = datamodule(root, seed=99).split(FolderPhotos(root).photo_paths(), save=True)
    assert again == first
    # new photos are placed without moving the old ones
    make_photos(tmp_path / "more", count=30, seed=3)
    for path in (tmp_path / "more").glob("*.png"):
        path.rename(root / f"new_{path.name}")
    grown = datamodule(root).split(FolderPhotos(root).photo_paths(), save=True)
    for part in ("train", "val", "test"):
        assert set(first[part]) <= set(grown[part])
        assert len(grown[part]) > len(first[part]), part  # 30 new photos: some land in each part
    assert sum(len(paths) for paths in grown.values()) == len({path for paths in grown.values() for path in paths})
    assert json.loads((root / "split.json").read_text())["test"] == [p.name for p in grown["test"]]


def test_only_prepare_data_writes_the_split(tmp_path):
    """Under DDP, Lightning calls prepare_data in one process per node and setup in every process."""
    root = make_photos(tmp_path / "photos")
    dm = datamodule(root)
    dm.setup()
    assert not (root / "split.json").exists()
    datamodule(root).prepare_data()
    assert (root / "split.json").is_file()


def test_a_split_saved_without_a_test_part_keeps_its_parts_and_reports_on_val(tmp_path):
    root = make_photos(tmp_path / "photos", count=10)
    names = sorted(path.name for path in root.glob("*.png"))
    (root / "split.json").write_text(json.dumps({"train": names[:8], "val": names[8:]}))
    make_photos(tmp_path / "more", count=10, seed=3)
    for path in (tmp_path / "more").glob("*.png"):
        path.rename(root / f"new_{path.name}")
    dm = datamodule(root)
    dm.prepare_data()
    saved = json.loads((root / "split.json").read_text())
    assert "test" not in saved and saved["train"][:8] == names[:8] and saved["val"][:2] == names[8:]
    assert len(saved["train"] + saved["val"]) == 20  # the newcomers join train or val, never a test of newcomers
    dm.setup()
    assert dm.test_part == "val" and dm.test_set is dm.val_set


def test_sample_photos_keep_the_stereo_pair_together(tmp_path, samples_dir):
    source = SamplePhotos(samples_dir)
    paths = source.photo_paths()
    assert len(paths) == 15
    for seed in range(10):
        split = JpegDataModule(source, split_file=str(tmp_path / f"split{seed}.json"), seed=seed).split(paths)
        sides = {part for part, names in split.items() for p in names if p.stem.startswith("motorcycle")}
        assert len(sides) == 1


def test_validation_pairs_are_fixed_across_runs(tmp_path):
    root = make_photos(tmp_path / "photos")
    first, second = datamodule(root, quality=[10, 50]), datamodule(root, quality=[10, 50])
    first.setup(), second.setup()
    for (a_jpeg, a_target, a_q), (b_jpeg, b_target, b_q) in zip(first.val_set, second.val_set, strict=True):
        assert torch.equal(a_jpeg, b_jpeg) and torch.equal(a_target, b_target) and a_q == b_q
    assert {q for _, _, q in first.val_set} <= {10, 20, 30, 40, 50}


def test_blind_quality_is_drawn_per_sample(tmp_path):
    dm = datamodule(make_photos(tmp_path / "photos"), quality=[5, 95], samples_per_epoch=64)
    dm.setup()
    qualities = {dm.train_set[i][2] for i in range(64)}
    assert len(qualities) > 10 and min(qualities) >= 5 and max(qualities) <= 95


@pytest.mark.parametrize("quality", [0, 101, [0, 50], [60, 40], "high", True])
def test_bad_quality_is_a_clear_error(quality):
    with pytest.raises(DequantizerError, match="quality"):
        parse_quality(quality)


def test_crop_larger_than_photos_is_a_clear_error(tmp_path):
    dm = datamodule(make_photos(tmp_path / "photos", size=(80, 60)), crop_size=64)
    with pytest.raises(DequantizerError, match=r"data.crop_size=64 is larger than photo .*\(80x60\)"):
        dm.setup()


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DequantizerError, match="does not exist"):
        datamodule(tmp_path / "nowhere").setup()
    with pytest.raises(DequantizerError, match="dequantizer download"):
        JpegDataModule(FlickrPhotos(tmp_path / "flickr")).setup()


def test_unreadable_files_are_skipped_and_counted(tmp_path, caplog):
    root = make_photos(tmp_path / "photos")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_text("not an image")
    (root / "truncated.jpg").write_bytes((root / "photo00.png").read_bytes()[:100])
    dm = datamodule(root)
    dm.setup()
    assert len(dm.skipped) == 3
    assert "skipped 3 unreadable files" in caplog.text


def test_other_bad_values_are_clear_errors(tmp_path):
    for kwargs, match in [
        (dict(crop_size=4), "crop_size"),
        (dict(val_fraction=1.5), "val_fraction"),
        (dict(val_fraction=0.5, test_fraction=0.5), "test_fraction"),
        (dict(subsampling="4:1:1"), "subsampling"),
        (dict(batch_size=0), "batch_size"),
        (dict(jpeg="gpu"), "data.jpeg='gpu' is not one of pillow, torch"),
    ]:
        with pytest.raises(DequantizerError, match=match):
            datamodule(tmp_path, **kwargs)


def test_two_photo_groups_split_into_train_and_val_only():
    from dequantizer.data.split import make_split

    assert make_split(["a", "b"], 0.2, 0.1, seed=0)["test"] == set()
    parts = make_split([f"g{i}" for i in range(10)], 0.2, 0.1, seed=0)
    assert [len(parts[part]) for part in ("train", "val", "test")] == [7, 2, 1]
    with pytest.raises(DequantizerError, match="at least 2"):
        make_split(["a", "a"], 0.2, 0.1, seed=0)


# -- how training pairs are drawn: qualities, grids, grey --------------------------------------------------------------


def test_quality_draws_follow_the_focus():
    random.seed(0)
    focused = [draw_quality((1, 100), [((10, 60), 0.75)]) for _ in range(4000)]
    share = np.mean([10 <= q <= 60 for q in focused])
    assert 0.75 + 0.25 * 51 / 100 - 0.03 < share < 0.75 + 0.25 * 51 / 100 + 0.03  # focus + its share of the rest
    assert min(focused) == 1 and max(focused) == 100  # the whole range is still covered
    assert all(10 <= draw_quality((1, 100), [((10, 60), 1.0)]) <= 60 for _ in range(200))
    # two ranges: the low qualities and the top, the rest uniform
    mixed = [draw_quality((1, 100), [((1, 60), 0.5), ((90, 100), 0.2)]) for _ in range(4000)]
    assert 0.2 + 0.3 * 11 / 100 - 0.03 < np.mean([q >= 90 for q in mixed]) < 0.2 + 0.3 * 11 / 100 + 0.03
    assert 0.5 + 0.3 * 60 / 100 - 0.03 < np.mean([q <= 60 for q in mixed]) < 0.5 + 0.3 * 60 / 100 + 0.03


def textured_photos(folder, count=6, size=(96, 80)):
    """``count`` PNGs of seeded noise drawn at 1/4 of ``size`` and enlarged (more texture than make_photos')."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = rng.random((size[1] // 4, size[0] // 4, 3)) * 255
        Image.fromarray(pixels.astype(np.uint8)).resize(size, Image.BICUBIC).save(folder / f"p{index}.png")
    return folder


def drawn_pairs(tmp_path, count=40, **kwargs):
    """``count`` training pairs (JPEG q20, 32-px crops) as the DataModule draws them, with ``kwargs`` for it."""
    data = JpegDataModule(FolderPhotos(textured_photos(tmp_path / "photos")), quality=20, crop_size=32, num_workers=0,
                          samples_per_epoch=count, **kwargs)
    data.setup()
    random.seed(1)
    return [data.train_set[index] for index in range(count)]


def on_grid(jpeg, target):
    """Whether the JPEG crop is the crop's own JPEG (its blocks on the crop's grid), away from the crop's edges."""
    again = jpeg_roundtrip_array(target.permute(1, 2, 0).numpy(), 20)
    return np.array_equal(jpeg.permute(1, 2, 0).numpy()[:16, :16], again[:16, :16])


def test_crops_sit_on_the_jpeg_grid_unless_shifted(tmp_path):
    assert all(on_grid(jpeg, target) for jpeg, target, _ in drawn_pairs(tmp_path / "a", grid_shift_fraction=0.0))
    shifted = [on_grid(jpeg, target) for jpeg, target, _ in drawn_pairs(tmp_path / "b", grid_shift_fraction=1.0)]
    assert np.mean(shifted) < 0.2  # only the draws with a (0, 0) shift land on the grid


def test_greyscale_crops_are_grey_in_and_out(tmp_path):
    for jpeg, target, _ in drawn_pairs(tmp_path, count=8, greyscale_fraction=1.0):
        assert (target[0] == target[1]).all() and (target[1] == target[2]).all()
        assert (jpeg[0].int() - jpeg[1].int()).abs().max() <= 1  # a grey JPEG decodes (almost) grey


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(quality=[10, 50], focus_quality=[5, 40]), "inside data.quality"),
        (dict(quality=[10, 50], focus_quality=[20, 30], focus_fraction=1.5), "between 0 and 1"),
        (dict(quality=[1, 100], focus_quality=[[1, 60], [90, 100]], focus_fraction=[0.6, 0.6]), "at most 1 in all"),
        (dict(quality=[1, 100], focus_quality=[[1, 60], [90, 100]], focus_fraction=0.5), "one share per range"),
        (dict(quality=[10, 50], focus_quality=[[10, 20], [40, 60]], focus_fraction=[0.2, 0.2]), "inside data.quality"),
        (dict(greyscale_fraction=-0.1), "between 0 and 1"),
    ],
)
def test_bad_sampling_values_are_clear_errors(tmp_path, kwargs, match):
    with pytest.raises(DequantizerError, match=match):
        JpegDataModule(FolderPhotos(tmp_path), **kwargs)

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dequantizer.data import FlickrPhotos, FolderPhotos, JpegDataModule, SamplePhotos
from dequantizer.data.datamodule import parse_quality
from dequantizer.data.images import jpeg_roundtrip, load_rgb
from dequantizer.errors import DequantizerError


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


def test_jpeg_roundtrip_matches_pillow_file_encoding(tmp_path):
    image = Image.fromarray((np.random.default_rng(1).random((40, 48, 3)) * 255).astype(np.uint8))
    image.save(tmp_path / "x.jpg", quality=10)
    expected = np.asarray(Image.open(tmp_path / "x.jpg"))
    np.testing.assert_array_equal(np.asarray(jpeg_roundtrip(image, 10)), expected)


def test_split_is_saved_reused_and_never_leaks(tmp_path):
    root = make_photos(tmp_path / "photos", count=20)
    first = datamodule(root).split(FolderPhotos(root).photo_paths())
    assert not set(first["train"]) & set(first["val"])
    assert len(first["val"]) == 4  # 20% of 20
    saved = json.loads((root / "split.json").read_text())
    assert sorted(saved["train"] + saved["val"]) == sorted(p.name for p in root.glob("*.png"))
    # another seed later does not reshuffle: the split is made once
    again = datamodule(root, seed=99).split(FolderPhotos(root).photo_paths())
    assert again == first
    # new photos are placed without moving the old ones
    make_photos(tmp_path / "more", count=5, seed=3)
    for path in (tmp_path / "more").glob("*.png"):
        path.rename(root / f"new_{path.name}")
    grown = datamodule(root).split(FolderPhotos(root).photo_paths())
    assert set(first["train"]) <= set(grown["train"]) and set(first["val"]) <= set(grown["val"])
    assert not set(grown["train"]) & set(grown["val"])


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


def test_load_rgb_handles_colour_modes_and_orientation(tmp_path):
    Image.new("L", (6, 4), 200).save(tmp_path / "grey.png")
    Image.new("RGBA", (6, 4), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("CMYK", (6, 4), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    rotated = Image.new("RGB", (6, 4))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(tmp_path / "grey.png").shape == (4, 6, 3)
    assert (load_rgb(tmp_path / "clear.png") == 255).all()  # transparent -> white
    assert load_rgb(tmp_path / "cmyk.jpg").shape == (4, 6, 3)
    assert load_rgb(tmp_path / "rotated.jpg").shape == (6, 4, 3)


def test_other_bad_values_are_clear_errors(tmp_path):
    for kwargs, match in [
        (dict(crop_size=4), "crop_size"),
        (dict(val_fraction=1.5), "val_fraction"),
        (dict(subsampling="4:1:1"), "subsampling"),
        (dict(batch_size=0), "batch_size"),
    ]:
        with pytest.raises(DequantizerError, match=match):
            datamodule(tmp_path, **kwargs)

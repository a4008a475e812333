"""Reading image files (dequantizer/images.py): colour modes and orientation to 8-bit RGB, and broken files refused in
one line wherever images enter: the DataModule, evaluate and prepare skip them, random bytes never crash the loaders.
(test_fuzz.py mutates real files of every format; test_api.py hands broken and odd files to dequantize.)"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dequantizer import dequantize
from dequantizer.data import FolderPhotos, JpegDataModule
from dequantizer.data.flickr import prepare_dataset
from dequantizer.errors import DequantizerError
from dequantizer.evaluate import load_photos
from dequantizer.images import image_paths, load_rgb
from helpers import BROKEN, noise, odd_images


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


def test_datamodule_evaluate_and_prepare_skip_broken_files(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(6):
        noise(100, 120, seed=index).save(folder / f"good{index}.png")
    for name, make in BROKEN.items():
        (folder / name).write_bytes(make())
    buffers, _ = odd_images()
    for name, data in buffers.items():
        (folder / name).write_bytes(data)
    datamodule = JpegDataModule(FolderPhotos(folder), quality=10, crop_size=32, batch_size=2, num_workers=0)
    datamodule.setup()
    assert len(datamodule.skipped) == 4 and len(datamodule.too_small) == len(buffers)  # all under 32 px
    photos, failures, _ = load_photos(image_paths([folder]))
    assert len(failures) == 4 and all("cannot read it as an image" in failure for failure in failures)
    assert len(photos) == 6 + len(buffers)

    # prepare: a download folder whose files went bad after the download
    source = tmp_path / "flickr"
    (source / "images").mkdir(parents=True)
    records = []
    for index, name in enumerate(["good0.png", "zero.jpg", "truncated.jpg", "good1.png"]):
        (source / "images" / f"{index}.jpg").write_bytes((folder / name).read_bytes())
        records.append({"id": str(index), "category": "x", "sha256": str(index), "file": f"images/{index}.jpg"})
    (source / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = prepare_dataset(source, size=16, val_fraction=0.5)
    assert summary["photos"] == 2 and summary["skipped"] == {"unreadable": 2}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_random_bytes_never_crash_the_loaders(tmp_path, weights, data):
    path = tmp_path / "random.jpg"
    path.write_bytes(data)
    try:
        load_rgb(path)
    except DequantizerError as error:  # what the DataModule skips a file on, and nothing else
        assert "\n" not in str(error) and str(path) in str(error)
    try:
        dequantize(path, model=weights)
    except DequantizerError as error:
        assert "\n" not in str(error)

"""Bad and odd images everywhere images enter: the DataModule, dequantize, evaluate, prepare."""

import io
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dequantizer import dequantize
from dequantizer.data import FolderPhotos, JpegDataModule
from dequantizer.data.flickr import prepare_dataset
from dequantizer.errors import DequantizerError
from dequantizer.evaluate import image_paths, load_photos
from dequantizer.images import load_rgb


def png_claiming(width, height):
    """A tiny PNG whose header claims width x height: opening it must not allocate that."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def photo(size=(120, 100), seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8))


BROKEN = {
    "zero.jpg": lambda: b"",
    "truncated.jpg": lambda: jpeg_bytes(photo())[:300],
    "text.png": lambda: b"this is not an image",
    "bomb.png": lambda: png_claiming(30000, 30000),
}


def jpeg_bytes(image, **options):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def odd_images():
    """name -> (image bytes, expected restored size, expected mode)."""
    rotated = photo((40, 24))
    exif = rotated.getexif()
    exif[0x0112] = 6
    buffers = {}
    for name, image, options in [
        ("one.png", photo((1, 1)), {}), ("seven_by_five.png", photo((7, 5)), {}),
        ("deep.png", Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100), {}),
        ("cmyk.jpg", photo((30, 20)).convert("CMYK"), {}), ("palette.png", photo((30, 20)).convert("P"), {}),
        ("la.png", photo((30, 20)).convert("LA"), {}), ("rotated.jpg", rotated, {"exif": exif}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, Image.registered_extensions()["." + name.rsplit(".", 1)[1]], **options)
        buffers[name] = buffer.getvalue()
    expected = {"one.png": ((1, 1), "RGB"), "seven_by_five.png": ((7, 5), "RGB"), "deep.png": ((30, 20), "L"),
                "cmyk.jpg": ((30, 20), "RGB"), "palette.png": ((30, 20), "RGB"), "la.png": ((30, 20), "LA"),
                "rotated.jpg": ((24, 40), "RGB")}
    return buffers, expected


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_dequantize_broken_files_is_one_clear_line(tmp_path, weights, name):
    (tmp_path / name).write_bytes(BROKEN[name]())
    with pytest.raises(DequantizerError, match=f"{name}: cannot read it as an image") as error:
        dequantize(tmp_path / name, model=weights)
    assert "\n" not in str(error.value)


def test_dequantize_odd_images(tmp_path, weights):
    buffers, expected = odd_images()
    for name, data in buffers.items():
        (tmp_path / name).write_bytes(data)
        restored = dequantize(tmp_path / name, model=weights)
        assert (restored.size, restored.mode) == expected[name], name


def test_datamodule_evaluate_and_prepare_skip_broken_files(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(6):
        photo(seed=index).save(folder / f"good{index}.png")
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


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(1, 40), height=st.integers(1, 40), mode=st.sampled_from(["RGB", "L", "RGBA", "P", "CMYK"]),
       seed=st.integers(0, 1000))
def test_random_small_images_keep_their_size(weights, width, height, mode, seed):
    image = photo((width, height), seed).convert(mode)
    restored = dequantize(image, model=weights)
    assert restored.size == (width, height)

"""The public API, quantize and dequantize: every colour mode, EXIF orientation and ICC profile, paths and batches,
arrays in and arrays out, the quality knob, and odd or broken images (refused in one clear line)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

import dequantizer
from dequantizer import dequantize, quantize
from dequantizer.errors import DequantizerError
from helpers import BROKEN, noise, odd_images


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "RGBA", "LA", "I;16"])
def test_round_trip_every_colour_mode(mode, weights):
    image = noise(30, 40).convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(noise(30, 40).convert("L"), dtype=np.uint16) * 257)
    jpeg = quantize(image, quality=10)
    restored = dequantize(jpeg, model=weights)
    assert restored.size == image.size
    if mode in ("RGBA", "LA"):
        assert restored.mode in ("RGBA", "LA")
        assert np.array_equal(np.asarray(restored.getchannel("A")), np.asarray(image.getchannel("A")))
    expected = "L" if mode in ("L", "I;16") else "LA" if mode == "LA" else "RGBA" if mode == "RGBA" else "RGB"
    assert restored.mode == expected


def test_exif_orientation_and_icc_profile(tmp_path, weights):
    image = noise(24, 40)
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image.save(tmp_path / "rotated.jpg", exif=exif, icc_profile=profile, quality=20)
    restored = dequantize(tmp_path / "rotated.jpg", model=weights)
    assert restored.size == (24, 40)
    assert restored.info["icc_profile"] == profile


def test_batches_and_paths(tmp_path, weights):
    noise(30, 40).save(tmp_path / "a.png")
    outputs = dequantize([tmp_path / "a.png", noise(16, 16)], model=weights)
    assert [o.size for o in outputs] == [(40, 30), (16, 16)]


def test_arrays_in_arrays_out(weights):
    rgb = np.asarray(noise(24, 32))
    for pixels in (rgb, rgb[..., 0], rgb[..., :1], np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])):
        jpeg = quantize(pixels, quality=20)
        restored = dequantize(jpeg, model=weights)
        assert isinstance(jpeg, np.ndarray) and isinstance(restored, np.ndarray)
        assert jpeg.shape == restored.shape == pixels.shape and restored.dtype == np.uint8
    with pytest.raises(dequantizer.DequantizerError, match="pass HxW, HxWx3 or HxWx4 uint8"):
        dequantize(rgb.astype(np.float32), model=weights)


def test_clear_errors(tmp_path, weights):
    with pytest.raises(DequantizerError, match="no shipped model named 'nope'"):
        dequantize(noise(30, 40), model="nope")
    with pytest.raises(DequantizerError, match="no such file"):
        dequantize(tmp_path / "missing.jpg", model=weights)
    (tmp_path / "fake.jpg").write_text("hello")
    with pytest.raises(DequantizerError, match="cannot read it as an image"):
        dequantize(tmp_path / "fake.jpg", model=weights)


def test_dequantize_takes_a_quality_and_refuses_a_bad_one(samples_dir):
    from dequantizer import dequantize, quantize

    photo = Image.open(samples_dir / "chelsea.png").convert("RGB").crop((100, 50, 196, 146))
    jpeg = quantize(photo, quality=30)
    hard, gentle, told, told_30, before = (
        np.asarray(image).astype(int)  # signed: uint8 differences would wrap around
        for image in (dequantize(jpeg, quality=5), dequantize(jpeg, quality=95), dequantize(jpeg),
                      dequantize(jpeg, quality=30), jpeg)
    )
    assert np.array_equal(told, told_30)  # the file's tables say 30
    # Told a lower quality, the model restores harder: it moves further from its input.
    assert np.abs(hard - before).mean() > 2 * np.abs(gentle - before).mean()
    with pytest.raises(DequantizerError, match="quality"):
        dequantize(jpeg, quality=0)


# -- odd and broken images ---------------------------------------------------------------------------------------------


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


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(1, 40), height=st.integers(1, 40), mode=st.sampled_from(["RGB", "L", "RGBA", "P", "CMYK"]),
       seed=st.integers(0, 1000))
def test_random_small_images_keep_their_size(weights, width, height, mode, seed):
    image = noise(height, width, seed).convert(mode)
    restored = dequantize(image, model=weights)
    assert restored.size == (width, height)

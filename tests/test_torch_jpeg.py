"""The torch JPEG round trip against Pillow's: the same coefficients and the same pixels, bit for bit."""

from __future__ import annotations

import io

import jpeglib
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from dequantizer.data.torch_jpeg import jpeg_coefficients, jpeg_roundtrip, quantization_tables
from dequantizer.jpeg import SUBSAMPLINGS, jpeg_roundtrip_array
from helpers import jpeg_bytes

ASTRONAUT = data.astronaut()
CAMERA = data.camera()


def as_batch(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None] if rgb.ndim == 3 else torch.from_numpy(rgb)[None, None]


def as_array(batch: torch.Tensor) -> np.ndarray:
    return batch[0].permute(1, 2, 0).numpy() if batch.shape[1] == 3 else batch[0, 0].numpy()


def pillow_jpeg(pixels: np.ndarray, quality: int, subsampling: str = "4:2:0") -> bytes:
    return jpeg_bytes(pixels, quality=quality, subsampling=SUBSAMPLINGS[subsampling])


def test_every_quality_in_one_batch_matches_pillow():
    """Qualities 1-100 side by side in one batch (per-image tables), colour 4:2:0, sides that are no multiple of
    the 16-px MCU: every pixel equals Pillow's."""
    crops = np.stack([ASTRONAUT[q : q + 45, 2 * q : 2 * q + 61] for q in range(1, 101)])
    restored = jpeg_roundtrip(torch.from_numpy(crops).permute(0, 3, 1, 2), torch.arange(1, 101))
    expected = np.stack([jpeg_roundtrip_array(crop, q) for q, crop in zip(range(1, 101), crops, strict=True)])
    assert restored.dtype == torch.uint8
    np.testing.assert_array_equal(restored.permute(0, 2, 3, 1).numpy(), expected)


@pytest.mark.parametrize("subsampling", list(SUBSAMPLINGS))
@pytest.mark.parametrize("size", [(64, 64), (57, 83), (200, 211), (9, 13)])
@pytest.mark.parametrize("quality", [1, 10, 50, 90, 100])
def test_colour_pixels_and_coefficients_match_pillow(tmp_path, subsampling, size, quality):
    crop = ASTRONAUT[100 : 100 + size[0], 150 : 150 + size[1]]
    batch = as_batch(crop)
    np.testing.assert_array_equal(as_array(jpeg_roundtrip(batch, quality, subsampling)),
                                  jpeg_roundtrip_array(crop, quality, subsampling))  # fmt: skip
    path = tmp_path / "crop.jpg"
    path.write_bytes(pillow_jpeg(crop, quality, subsampling))
    stored = jpeglib.read_dct(str(path))
    for ours, theirs in zip(jpeg_coefficients(batch, quality, subsampling), (stored.Y, stored.Cb, stored.Cr),
                            strict=True):  # fmt: skip
        rows, columns = theirs.shape[:2]  # the file's blocks; ours may run on into the last MCU's
        np.testing.assert_array_equal(ours[0, :rows, :columns].numpy(), theirs)


@pytest.mark.parametrize("quality", [1, 5, 25, 50, 75, 95, 100])
def test_grey_matches_pillow(quality):
    crop = CAMERA[37:250, 11:190]
    with Image.open(io.BytesIO(pillow_jpeg(crop, quality))) as decoded:
        expected = np.asarray(decoded)
    np.testing.assert_array_equal(as_array(jpeg_roundtrip(as_batch(crop), quality)), expected)


def test_extremes_and_flat_images_match_pillow():
    """Saturated colours, flat blocks (exact rounding ties in the DC) and noise, where the range limit works."""
    rng = np.random.default_rng(0)
    images = [np.zeros((24, 40, 3), np.uint8), np.full((24, 40, 3), 255, np.uint8),
              np.tile(np.array([[255, 0, 0], [0, 0, 255]], np.uint8), (12, 20, 1)),
              rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)]  # fmt: skip
    for image in images:
        for quality in (1, 3, 20, 77, 100):
            np.testing.assert_array_equal(as_array(jpeg_roundtrip(as_batch(image), quality)),
                                          jpeg_roundtrip_array(image, quality))  # fmt: skip


def test_values_far_beyond_the_range_saturate_as_pillows_do():
    """A hostile grey block whose inverse DCT reaches 675 at q1: libjpeg-turbo's SIMD code saturates it to 255
    (its C code would wrap it to 0)."""
    block = np.array([[199, 255, 248, 0, 148, 0, 0, 255], [0, 255, 143, 69, 255, 0, 0, 0],
                      [106, 255, 186, 227, 42, 0, 109, 34], [0, 255, 232, 0, 29, 170, 73, 16],
                      [23, 0, 37, 142, 0, 168, 200, 95], [0, 83, 226, 0, 165, 34, 203, 166],
                      [215, 255, 151, 141, 239, 0, 52, 255], [0, 255, 0, 190, 0, 83, 255, 0]], np.uint8)
    with Image.open(io.BytesIO(pillow_jpeg(block, 1))) as decoded:
        expected = np.asarray(decoded)
    np.testing.assert_array_equal(as_array(jpeg_roundtrip(as_batch(block), 1)), expected)
    rgb = np.repeat(block[..., None], 3, axis=2)
    np.testing.assert_array_equal(as_array(jpeg_roundtrip(as_batch(rgb), 1)), jpeg_roundtrip_array(rgb, 1))


def test_tables_are_pillows():
    for quality in range(1, 101):
        with Image.open(io.BytesIO(pillow_jpeg(ASTRONAUT[:16, :16], quality))) as decoded:
            tables = decoded.quantization
        ours = quantization_tables(torch.tensor([quality]))[0].reshape(2, 64)
        assert ours.tolist() == [list(tables[0]), list(tables[1])], quality


def test_runs_on_the_images_device_with_a_quality_per_image():
    images = torch.from_numpy(np.stack([ASTRONAUT[:32, :48], ASTRONAUT[32:64, :48]])).permute(0, 3, 1, 2)
    result = jpeg_roundtrip(images, torch.tensor([10, 90]))
    assert result.shape == images.shape and result.device == images.device
    np.testing.assert_array_equal(result[1].permute(1, 2, 0).numpy(), jpeg_roundtrip_array(ASTRONAUT[32:64, :48], 90))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="subsampling"):
        jpeg_roundtrip(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 50, "4:1:1")
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        jpeg_roundtrip(torch.zeros(3, 8, 8, dtype=torch.uint8), 50)

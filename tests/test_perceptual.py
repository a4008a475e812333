"""The measures that experiments/ publishes numbers with: detail, feature distance, comparison strips."""

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from dequantizer import perceptual
from helpers import jpeg_pixels


def test_feature_distance_is_zero_for_the_original_and_grows_with_jpeg_damage():
    photo = skimage_data.astronaut()[:192, :192].copy()
    distance = perceptual.FeatureDistance()  # EfficientNet-Lite1 with its ImageNet weights
    assert distance.stage_ends == [0, 3, 6, 10, 14]  # the ends of Lite1's stages at 1/2, 1/4, 1/8, 1/16, 1/16
    assert distance(photo, photo) == pytest.approx(0, abs=1e-6)
    by_quality = [distance(jpeg_pixels(photo, quality), photo) for quality in (90, 30, 10)]
    assert 0 < by_quality[0] < by_quality[1] < by_quality[2]


def test_detail_ratio_sees_blur():
    photo = skimage_data.astronaut()[:128, :128]
    blurred = np.asarray(Image.fromarray(photo).resize((64, 64), Image.BOX).resize((128, 128), Image.BILINEAR))
    assert perceptual.detail(blurred) < 0.75 * perceptual.detail(photo)  # 2x box down, bilinear up


def test_comparison_strip_is_written_from_the_most_detailed_crop(tmp_path):
    flat = np.full((256, 256, 3), 128, np.uint8)
    flat[136:200, 72:140] = np.random.default_rng(0).integers(0, 255, (64, 68, 3))  # the only texture
    top, left = perceptual.detailed_crop(flat)
    assert top <= 136 and top + 128 >= 200 and left <= 72 and left + 128 >= 140
    perceptual.save_strip({"a": flat, "b": flat, "c": flat}, (top, left), tmp_path / "strip.png")
    with Image.open(tmp_path / "strip.png") as strip:
        assert strip.size == (3 * 256 + 2 * 4, 256)


def test_block_periodic_energy_sees_jpeg_blocks_and_not_photos():
    photo = skimage_data.astronaut()
    energies = [perceptual.block_periodic_energy(jpeg_pixels(photo, quality)) for quality in (90, 30, 10)]
    original = perceptual.block_periodic_energy(photo)
    assert original < 0.002 and original < energies[0] < energies[1] < energies[2]
    assert perceptual.block_periodic_energy(photo[3:, 5:]) < 0.002  # a photo's own structure is not on any grid
    shifted = jpeg_pixels(photo, 10)[3:, 5:]  # the grid moved off the origin: still blocks, at another phase
    assert perceptual.block_periodic_energy(shifted) > 10 * original

"""Tile geometry (dequantizer/tiling.py): tile origins on the 8x8 grid, the blend window, tile sizes refused, and
what they are for: a tiled restoration equals the whole image's, with the overlap the model's receptive field asks
for."""

import numpy as np
import pytest
import torch

from dequantizer.errors import DequantizerError
from dequantizer.restore import Restorer
from dequantizer.tiling import blend_window, tile_starts
from helpers import blocky, trained_like_generator


def test_tile_starts_are_aligned_and_cover():
    assert tile_starts(1000, 256, 192) == [0, 192, 384, 576, 744]
    assert all(start % 8 == 0 for start in tile_starts(1000, 256, 192))
    assert tile_starts(200, 256, 192) == [0]


def test_blend_window_is_positive_and_flat_inside():
    window = blend_window(64, 64, 16)
    assert window.min() > 0 and window[12:52, 12:52].eq(1).all() and window[0, 0] < 0.01


@pytest.mark.parametrize("size", [(203, 301), (64, 517)])
def test_tiled_output_matches_whole_image(size):
    rgb = blocky(*size)
    generator = trained_like_generator()
    whole = Restorer(generator, device=torch.device("cpu"), precision="fp32", tile_size=1024).restore_array(rgb)
    tiled = Restorer(generator, device=torch.device("cpu"), precision="fp32", tile_size=96, overlap=48,
                     batch_size=3).restore_array(rgb)
    assert whole.shape == tiled.shape == rgb.shape
    assert not np.array_equal(whole, rgb)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_bad_tiling_values_are_refused():
    with pytest.raises(DequantizerError):
        Restorer(trained_like_generator(), tile_size=100)


def test_shipped_model_tiles_seamlessly_with_the_overlap_its_receptive_field_asks_for():
    from PIL import Image

    from dequantizer import quantize
    from dequantizer.tiling import receptive_radius, tile_overlap
    from dequantizer.weights import load_generator, shipped_models

    generator, metadata = load_generator(shipped_models()["blind"])
    radius = receptive_radius(generator)
    small_generator, _ = load_generator(shipped_models()["blind_v1"])
    assert radius > receptive_radius(small_generator)  # the multi-scale body sees farther: a wider overlap
    rng = np.random.default_rng(1)
    smooth = np.asarray(Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).resize((320, 240),
                                                                                              Image.BICUBIC))
    jpeg = np.asarray(quantize(smooth, quality=20))
    whole = Restorer(generator, device=torch.device("cpu"), precision="fp32", tile_size=1024).restore_array(jpeg, 20)
    tiled = Restorer(generator, device=torch.device("cpu"), precision="fp32", tile_size=192)  # 2 x 88 px overlap
    assert np.abs(tiled.restore_array(jpeg, 20).astype(int) - whole.astype(int)).max() <= 1
    assert tiled.overlap == metadata.get("overlap", tile_overlap(radius)) == tile_overlap(radius)
    assert not np.array_equal(whole, jpeg)

import numpy as np
import pytest
import torch

from dequantizer import dequantize
from dequantizer.errors import DequantizerError
from dequantizer.models import Generator, to_model_range
from dequantizer.restore import Restorer
from dequantizer.tiling import blend_window, tile_starts
from dequantizer.weights import check_targets


def trained_like_generator():
    torch.manual_seed(0)
    generator = Generator(channels=8, num_residual_blocks=2, batch_norm=False, output_activation=None,
                          image_residual=True)
    torch.nn.init.normal_(generator.tail.weight, std=0.01)  # a non-identity correction
    return generator


def photo(height, width, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.random((height // 8 + 1, width // 8 + 1, 3)) * 255
    return np.kron(small, np.ones((8, 8, 1)))[:height, :width].astype(np.uint8)


def test_tile_starts_are_aligned_and_cover():
    assert tile_starts(1000, 256, 192) == [0, 192, 384, 576, 744]
    assert all(start % 8 == 0 for start in tile_starts(1000, 256, 192))
    assert tile_starts(200, 256, 192) == [0]


def test_blend_window_is_positive_and_flat_inside():
    window = blend_window(64, 64, 16)
    assert window.min() > 0 and window[12:52, 12:52].eq(1).all() and window[0, 0] < 0.01


@pytest.mark.parametrize("size", [(203, 301), (64, 517)])
def test_tiled_output_matches_whole_image(size):
    rgb = photo(*size)
    generator = trained_like_generator()
    whole = Restorer(generator, device=torch.device("cpu"), precision="fp32", tile_size=1024).restore_array(rgb)
    tiled = Restorer(generator, device=torch.device("cpu"), precision="fp32", tile_size=96, overlap=48,
                     batch_size=3).restore_array(rgb)
    assert whole.shape == tiled.shape == rgb.shape
    assert not np.array_equal(whole, rgb)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_upsampling_generator_gives_larger_output():
    generator = Generator(channels=8, num_residual_blocks=1, num_upsample_blocks=1, image_residual=True)
    out = Restorer(generator, device=torch.device("cpu"), tile_size=64, overlap=16).restore_array(photo(100, 90))
    assert out.shape == (200, 180, 3)


def test_model_configs_may_not_name_arbitrary_code():
    check_targets({"_target_": "dequantizer.models.Generator", "activation": {"_target_": "torch.nn.PReLU"}})
    with pytest.raises(DequantizerError, match="refusing to build 'os.system'"):
        check_targets({"_target_": "dequantizer.models.Generator", "activation": {"_target_": "os.system"}})


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


@pytest.mark.parametrize("size", [(48, 64), (203, 301)])
def test_a_self_ensemble_averages_the_restorations_of_flipped_and_transposed_views(size):
    rgb = photo(*size) // 2 + 64  # mid-grey: no view's restoration is clipped (the mean of the views is)
    generator = trained_like_generator()
    restore = Restorer(generator, device=torch.device("cpu"), precision="fp32", tile_size=1024).restore_array
    views = [lambda a: a, lambda a: a[:, ::-1], lambda a: a[::-1], lambda a: a[::-1, ::-1]]
    views += [lambda a, v=v: v(a).transpose(1, 0, 2) for v in views]
    inverses = [lambda a: a, lambda a: a[:, ::-1], lambda a: a[::-1], lambda a: a[::-1, ::-1]]
    inverses += [lambda a, v=v: v(a.transpose(1, 0, 2)) for v in inverses]
    # Each view restored on its own (the image padded to whole 8x8 blocks first, as the restorer does, so the
    # flipped views keep the block grid), turned back, and averaged.
    padded = np.pad(rgb, ((0, -size[0] % 8), (0, -size[1] % 8), (0, 0)), mode="edge")
    restored = [inverse(restore(np.ascontiguousarray(view(padded)))).astype(float)
                for view, inverse in zip(views, inverses, strict=True)]
    for count in (1, 2, 4, 8):
        ensemble = Restorer(generator, device=torch.device("cpu"), precision="fp32", tile_size=1024, ensemble=count)
        out = ensemble.restore_array(rgb).astype(float)
        expected = np.mean(restored[:count], axis=0)[: size[0], : size[1]]
        assert out.shape == rgb.shape and np.abs(out - expected).max() <= 1  # each view rounded, then the mean
    tiled = Restorer(generator, device=torch.device("cpu"), precision="fp32", tile_size=96, overlap=48, ensemble=8)
    assert np.abs(tiled.restore_array(rgb).astype(float) - out).max() <= 1


def test_a_self_ensemble_restores_every_view_for_the_quality_read_upright():
    from test_quality_aware import randomise, tiny_unet

    generator = randomise(tiny_unet())
    restorer = Restorer(generator, device=torch.device("cpu"), precision="fp32", tile_size=1024, ensemble=8)
    tiles = torch.from_numpy(photo(40, 56)).permute(2, 0, 1)[None]
    with torch.no_grad():
        predicted = float(generator(to_model_range(tiles), None, return_quality=True)[1])
    torch.testing.assert_close(restorer.restore_tiles(tiles), restorer.restore_tiles(tiles, predicted))


@pytest.mark.parametrize("ensemble", [3, 8.0, True, "8"])
def test_a_self_ensemble_of_another_size_is_refused(ensemble):
    with pytest.raises(DequantizerError, match="a self-ensemble of .* views: use one of 1, 2, 4, 8"):
        Restorer(trained_like_generator(), ensemble=ensemble)
    with pytest.raises(DequantizerError, match="a self-ensemble of"):
        dequantize(photo(16, 16), ensemble=ensemble)

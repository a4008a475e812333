"""Restoring an image (dequantizer/restore.py): the Restorer on arrays (an upsampling generator, the self-ensemble of
flipped and transposed views), and the quality each image is restored for: told, named by its tables, read from the
lattice of its pixels' DCT coefficients (an earlier harsher JPEG included), or read by the model's quality head.
Tile geometry and seamless tiling are in test_tiling.py."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from dequantizer import dequantize
from dequantizer.errors import DequantizerError
from dequantizer.images import read_image
from dequantizer.models import Generator, to_model_range
from dequantizer.restore import QualityChoice, Restorer, choose_quality, get_restorer
from helpers import blocky, jpeg_bytes, randomise, real_world_photos, tiny_unet, trained_like_generator, twice

PHOTOS = real_world_photos()


def test_upsampling_generator_gives_larger_output():
    generator = Generator(channels=8, num_residual_blocks=1, num_upsample_blocks=1, image_residual=True)
    out = Restorer(generator, device=torch.device("cpu"), tile_size=64, overlap=16).restore_array(blocky(100, 90))
    assert out.shape == (200, 180, 3)


# -- the self-ensemble -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(48, 64), (203, 301)])
def test_a_self_ensemble_averages_the_restorations_of_flipped_and_transposed_views(size):
    rgb = blocky(*size) // 2 + 64  # mid-grey: no view's restoration is clipped (the mean of the views is)
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
    generator = randomise(tiny_unet())
    restorer = Restorer(generator, device=torch.device("cpu"), precision="fp32", tile_size=1024, ensemble=8)
    tiles = torch.from_numpy(blocky(40, 56)).permute(2, 0, 1)[None]
    with torch.no_grad():
        predicted = float(generator(to_model_range(tiles), None, return_quality=True)[1])
    torch.testing.assert_close(restorer.restore_tiles(tiles), restorer.restore_tiles(tiles, predicted))


@pytest.mark.parametrize("ensemble", [3, 8.0, True, "8"])
def test_a_self_ensemble_of_another_size_is_refused(ensemble):
    with pytest.raises(DequantizerError, match="a self-ensemble of .* views: use one of 1, 2, 4, 8"):
        Restorer(trained_like_generator(), ensemble=ensemble)
    with pytest.raises(DequantizerError, match="a self-ensemble of"):
        dequantize(blocky(16, 16), ensemble=ensemble)


# -- the quality an image is restored for ------------------------------------------------------------------------------


def test_the_quality_used_and_its_source():
    restorer = get_restorer("blind")
    photo = PHOTOS["astronaut"]
    double = read_image(io.BytesIO(twice(photo, 20, 75)), "double")
    choice = choose_quality(double, restorer)
    assert 19 <= choice.quality <= 21 and choice.source == "pixels"
    assert choice.detail == "an earlier JPEG under the file's q75" and choice.named
    assert choose_quality(double, restorer, 40) == QualityChoice(40, "user")
    single = read_image(io.BytesIO(jpeg_bytes(photo, quality=75)), "single")
    assert choose_quality(single, restorer) == QualityChoice(75, "tables")
    assert str(QualityChoice(75, "tables")) == "restored as q75 (from the tables)"
    assert str(QualityChoice(None, "head")) == "restored as its model reads each tile"
    assert choose_quality(Image.fromarray(photo), get_restorer("blind_v1")) == QualityChoice(None, "none", told=False)
    # a model that is not told the quality reads nothing from the pixels
    assert choose_quality(double, get_restorer("blind_v1")) == QualityChoice(75, "tables", told=False)
    assert str(QualityChoice(75, "tables", told=False)) == ("restored (its model is not told a quality; q75 from "
                                                            "the tables)")


def test_decoded_pixels_are_restored_for_the_quality_their_coefficients_show(samples_dir):
    from dequantizer import dequantize
    from dequantizer.jpeg import jpeg_roundtrip

    photo = Image.open(samples_dir / "chelsea.png").convert("RGB").crop((100, 48, 228, 176))
    decoded = np.asarray(jpeg_roundtrip(photo, 90).convert("RGB"))  # no tables: an array
    assert np.array_equal(dequantize(decoded), dequantize(decoded, quality=90))
    decoded = np.asarray(jpeg_roundtrip(photo, 2).convert("RGB"))  # too few coefficients survive: the head decides
    assert not np.array_equal(dequantize(decoded), dequantize(decoded, quality=2))


def test_pixels_without_a_lattice_that_the_head_reads_as_nearly_lossless_are_restored_as_quality_100(samples_dir):
    from dequantizer.jpeg import jpeg_roundtrip
    from dequantizer.restore import get_restorer, quality_from_pixels

    blind = get_restorer("blind")
    moon = Image.open(samples_dir / "moon.png").convert("L")  # the head reads 98 here, where a q98 restoration hurts
    assert quality_from_pixels(np.asarray(jpeg_roundtrip(moon, 100).convert("RGB")), blind) == 100
    assert quality_from_pixels(np.asarray(jpeg_roundtrip(moon, 98).convert("RGB")), blind) == 98
    assert quality_from_pixels(np.asarray(jpeg_roundtrip(moon, 2).convert("RGB")), blind) is None  # head: far below


def test_a_grey_jpeg_of_quality_100_is_kept_as_it_is_and_a_colour_one_restored(samples_dir, tmp_path):
    from dequantizer import dequantize

    camera = Image.open(samples_dir / "camera.png").convert("L").crop((0, 0, 128, 128))
    camera.save(tmp_path / "grey.jpg", quality=100)
    grey = Image.open(tmp_path / "grey.jpg")
    assert np.array_equal(np.asarray(dequantize(grey)), np.asarray(grey))  # its tables say 100
    assert np.array_equal(dequantize(np.asarray(grey)), np.asarray(grey))  # no tables: no lattice, the head reads 100
    assert not np.array_equal(np.asarray(dequantize(grey, quality=90)), np.asarray(grey))  # told otherwise
    coffee = Image.open(samples_dir / "coffee.png").convert("RGB").crop((0, 0, 128, 128))
    coffee.save(tmp_path / "colour.jpg", quality=100)
    colour = Image.open(tmp_path / "colour.jpg")
    assert not np.array_equal(np.asarray(dequantize(colour)), np.asarray(colour))  # 4:2:0 chroma to restore

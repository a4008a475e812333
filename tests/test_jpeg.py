"""What the pixels of a decoded JPEG tell (dequantizer/jpeg.py): the quality of its last compression from its DCT
coefficients, another encoder's steps named by the nearest IJG quality, and an earlier, harsher JPEG under a milder
one (a real-world photo saved twice, maybe cropped between), found on its own block grid."""

import io

import numpy as np
import pytest
from PIL import Image

from dequantizer.jpeg import earlier_jpeg
from helpers import decoded, jpeg_bytes, real_world_photos, twice

PHOTOS = real_world_photos()


# -- the last JPEG -----------------------------------------------------------------------------------------------------


def test_a_decoded_jpeg_shows_its_quality_in_its_dct_coefficients(samples_dir):
    from dequantizer.jpeg import jpeg_history, jpeg_roundtrip

    photo = Image.open(samples_dir / "coffee.png").convert("RGB")
    qualities = (5, 10, 30, 50, 75, 85, 90, 95, 97, 98, 99)
    read = {q: jpeg_history(np.asarray(jpeg_roundtrip(photo, q).convert("RGB"))) for q in (*qualities, 100)}
    assert [read[q][0] for q in qualities] == list(qualities)  # exact, the last compression's quality
    assert all(read[q][2] == (0, 0) and read[q][1] > 0.5 for q in qualities)
    # Quality 100 (every step 1), a never-compressed photo, a tiny or a flat image: nothing to read.
    assert read[100] is None and jpeg_history(np.asarray(photo)) is None
    assert jpeg_history(np.asarray(jpeg_roundtrip(photo, 90).convert("RGB"))[:12, :12]) is None
    assert jpeg_history(np.full((64, 64, 3), 128, np.uint8)) is None
    assert jpeg_history(np.asarray(jpeg_roundtrip(photo.convert("L"), 90)))[0] == 90  # an HxW grey array
    # A q75 JPEG re-saved at q95: the q75 lattice fits best, and its artefacts are what is left to restore.
    resaved = jpeg_roundtrip(jpeg_roundtrip(photo, 75).convert("RGB"), 95)
    assert jpeg_history(np.asarray(resaved.convert("RGB")))[0] == 75


def test_another_encoders_steps_are_read_and_named_by_the_nearest_ijg_quality_as_its_file_would_be(samples_dir):
    from dequantizer.jpeg import (
        dct_coefficients,
        estimate_jpeg_quality,
        ijg_luminance_table,
        jpeg_history,
        luma,
        quantization_steps,
    )

    photo = Image.open(samples_dir / "coffee.png").convert("RGB")
    # A camera-like luminance table: IJG's q90 steps, each scaled by 0.8-1.2 at random. A finer IJG table whose steps
    # divide some of these fits them too (weakly): the steps themselves decide.
    steps = np.clip(ijg_luminance_table(90) * np.random.default_rng(0).uniform(0.8, 1.2, 64), 1, 255).round()
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", qtables=[steps.astype(int).tolist()] * 2)
    jpeg = Image.open(buffer)
    decoded = np.asarray(jpeg.convert("RGB"))
    read, _ = quantization_steps(dct_coefficients(luma(decoded[:256, :256])))
    known = ~np.isnan(read)
    assert known.sum() >= 20 and np.array_equal(read[known], steps[known])  # every step read is exact (this seed)
    history = jpeg_history(decoded)
    assert history is not None and 0 <= history[0] - estimate_jpeg_quality(jpeg) <= 2  # what its tables say, or
    # a little above (named from the steps read, not all 64): a gentler restoration, never a harsher one
    # A never-compressed photo: no step anywhere.
    assert np.isnan(quantization_steps(dct_coefficients(luma(np.asarray(photo)[:256, :256])))[0]).all()


# -- an earlier, harsher JPEG: its tables name the mild quality, its pixels still carry the harsh one ------------------


@pytest.mark.parametrize("name", list(PHOTOS))
@pytest.mark.parametrize("first, second, shift, origin", [
    (20, 75, (0, 0), (0, 0)), (20, 75, (3, 5), (5, 3)), (10, 90, (0, 0), (0, 0)), (10, 90, (1, 0), (7, 0)),
    (10, 30, (4, 4), (4, 4)),
])  # fmt: skip
def test_an_earlier_harsher_jpeg_is_read_from_the_pixels_on_its_own_grid(name, first, second, shift, origin):
    found = earlier_jpeg(decoded(twice(PHOTOS[name], first, second, shift)), second)
    assert found is not None, (name, first, second, shift)
    quality, fit, grid = found
    assert abs(quality - first) <= 2 and fit >= 0.25 and grid == origin


@pytest.mark.parametrize("name", list(PHOTOS))
@pytest.mark.parametrize("quality", [10, 30, 45, 50, 75, 90, 95])
def test_a_single_jpeg_shows_no_earlier_one(name, quality):
    assert earlier_jpeg(decoded(jpeg_bytes(PHOTOS[name], quality=quality)), quality) is None
    cropped = np.ascontiguousarray(PHOTOS[name][3:, 5:])
    assert earlier_jpeg(decoded(jpeg_bytes(cropped, quality=quality)), quality) is None

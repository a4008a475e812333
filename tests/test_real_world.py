"""Real-world JPEGs: a photo saved at a harsh quality, maybe cropped, then saved again at a mild one. Its tables name
the mild quality; its pixels still carry the harsh one, and that is what it is restored for."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from dequantizer import dequantize
from dequantizer.cli import main
from dequantizer.images import read_image
from dequantizer.jpeg import earlier_jpeg
from dequantizer.restore import QualityChoice, choose_quality, get_restorer

PHOTOS = {"astronaut": data.astronaut()[:256, 128:384], "coffee": data.coffee()[:256, :320]}


def jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def decoded(data_: bytes) -> np.ndarray:
    return np.asarray(read_image(io.BytesIO(data_), "jpeg"))


def twice(rgb: np.ndarray, first: int, second: int, shift: tuple[int, int] = (0, 0)) -> bytes:
    """Saved at ``first``, cropped by ``shift`` (rows, columns), saved at ``second``."""
    return jpeg(np.ascontiguousarray(decoded(jpeg(rgb, first))[shift[0] :, shift[1] :]), second)


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
    assert earlier_jpeg(decoded(jpeg(PHOTOS[name], quality)), quality) is None
    cropped = np.ascontiguousarray(PHOTOS[name][3:, 5:])
    assert earlier_jpeg(decoded(jpeg(cropped, quality)), quality) is None


def test_the_quality_used_and_its_source():
    restorer = get_restorer("blind")
    photo = PHOTOS["astronaut"]
    double = read_image(io.BytesIO(twice(photo, 20, 75)), "double")
    choice = choose_quality(double, restorer)
    assert 19 <= choice.quality <= 21 and choice.source == "pixels"
    assert choice.detail == "an earlier JPEG under the file's q75" and choice.named
    assert choose_quality(double, restorer, 40) == QualityChoice(40, "user")
    assert choose_quality(read_image(io.BytesIO(jpeg(photo, 75)), "single"), restorer) == QualityChoice(75, "tables")
    assert str(QualityChoice(75, "tables")) == "restored as q75 (from the tables)"
    assert str(QualityChoice(None, "head")) == "restored as its model reads each tile"
    assert choose_quality(Image.fromarray(photo), get_restorer("blind_v1")) == QualityChoice(None, "none", told=False)
    # a model that is not told the quality reads nothing from the pixels
    assert choose_quality(double, get_restorer("blind_v1")) == QualityChoice(75, "tables", told=False)
    assert str(QualityChoice(75, "tables", told=False)) == ("restored (its model is not told a quality; q75 from "
                                                            "the tables)")


def test_a_double_jpeg_is_restored_for_its_first_quality_and_the_cli_says_so(tmp_path, capsys):
    photo = PHOTOS["coffee"]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "double.jpg").write_bytes(twice(photo, 20, 75, (3, 5)))
    (folder / "single.jpg").write_bytes(jpeg(photo, 75))
    assert main(["dequantize", str(folder), "-o", str(tmp_path / "out")]) == 0
    lines = sorted(capsys.readouterr().out.strip().splitlines())
    assert lines[0].startswith(f"{folder / 'double.jpg'} -> {tmp_path / 'out' / 'double.png'}: restored as q")
    assert lines[0].endswith("(from the pixels: an earlier JPEG under the file's q75)")
    single = f"{folder / 'single.jpg'} -> {tmp_path / 'out' / 'single.png'}"
    assert lines[1] == f"{single}: restored as q75 (from the tables)"
    quality = int(lines[0].split("restored as q")[1].split()[0])
    told = np.asarray(dequantize(folder / "double.jpg", quality=quality))
    with Image.open(tmp_path / "out" / "double.png") as restored:
        np.testing.assert_array_equal(np.asarray(restored), told)
    # ... and it comes nearer the photo than restored for the file's own quality (1 dB nearer here)
    reference = photo[3:, 5:]
    error = lambda image: np.mean((np.asarray(image, dtype=float) - reference) ** 2)  # noqa: E731
    with Image.open(tmp_path / "out" / "double.png") as restored:
        assert error(restored) < 0.9 * error(dequantize(folder / "double.jpg", quality=75))  # measured: 0.80

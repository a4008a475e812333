import numpy as np
from PIL import Image

from dequantizer.cli import main


def test_quantize_writes_png_round_trips_and_reports_bad_files(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    pixels = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(photos / "a.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    code = main(["quantize", str(photos), "-q", "10", "-o", str(tmp_path / "out")])
    assert code == 1  # one file failed, the rest went on
    out = np.asarray(Image.open(tmp_path / "out" / "a.q10.png"))
    assert out.shape == pixels.shape and not np.array_equal(out, pixels)
    assert "broken.jpg: cannot read it as an image" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_quantize_bad_quality_is_one_line(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["quantize", str(tmp_path / "a.png"), "-q", "0", "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: JPEG quality 0 is out of range: use an integer from 1 to 100"

"""`dequantizer evaluate` (dequantizer/evaluate.py): JPEG vs restored tables and reports, tiny images and progress,
references that are or were JPEGs (warned about, and the means without them), every photo's grid labelled and kept
apart, the gain figure."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dequantizer.cli import main
from helpers import noise


def test_cli_evaluate_writes_reports(tmp_path, weights, capsys):
    noise(48, 64).save(tmp_path / "clean.png")
    code = main(["evaluate", str(tmp_path / "clean.png"), "--quality", "10", "50", "-m", str(weights),
                 "-o", str(tmp_path / "report")])
    assert code == 0
    out = capsys.readouterr().out
    assert "JPEG PSNR" in out and "gain" in out
    assert {p.name for p in (tmp_path / "report").iterdir()} >= {"results.csv", "results.json", "grids"}


def test_evaluate_tiny_images_and_progress(tmp_path, weights, capsys):
    noise(5, 5).save(tmp_path / "five.png")
    noise(3, 300).save(tmp_path / "thin.png")
    noise(1, 1).save(tmp_path / "one.png")
    noise(40, 40).save(tmp_path / "fine.png")
    assert main(["evaluate", str(tmp_path), "-q", "10", "-m", str(weights)]) == 0
    captured = capsys.readouterr()
    assert "on 4 images" in captured.out and "100%" in captured.err  # the progress bar ran to the end
    assert main(["evaluate", str(tmp_path), "-q", "10", "-m", str(weights), "--quiet"]) == 0
    assert "100%" not in capsys.readouterr().err


def test_evaluate_warns_when_a_reference_is_or_was_a_jpeg(tmp_path, weights, capsys):
    smooth = noise(12, 12).resize((96, 96), Image.BICUBIC)
    smooth.save(tmp_path / "lossy.jpg", quality=75)
    smooth.save(tmp_path / "fine.jpg", quality=95)
    smooth.save(tmp_path / "clean.png")
    Image.open(tmp_path / "lossy.jpg").save(tmp_path / "jpeg_born.png")  # decoded and re-saved losslessly
    Image.open(tmp_path / "lossy.jpg").crop((3, 5, 96, 96)).save(tmp_path / "cropped.png")  # off its block grid
    assert main(["evaluate", str(tmp_path), "-q", "10", "-m", str(weights), "--quiet", "-o", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    assert "the same without the 3 references warned about above" in out
    # Each photo's row is written, and the means without the three (the mean of the two others' rows).
    photos = list(csv.DictReader(open(tmp_path / "r" / "photos.csv")))
    assert sorted(Path(row["photo"]).name for row in photos) == sorted(
        ["lossy.jpg", "fine.jpg", "clean.png", "jpeg_born.png", "cropped.png"])
    record = json.loads((tmp_path / "r" / "results.json").read_text())
    assert sorted(Path(path).name for path in record["jpeg_born_references"]) == [
        "cropped.png", "jpeg_born.png", "lossy.jpg"]
    [clean] = record["rows_without_jpeg_born"]
    kept = [float(row["gain"]) for row in photos if Path(row["photo"]).name in ("fine.jpg", "clean.png")]
    assert clean["images"] == 2 and clean["gain"] == pytest.approx(sum(kept) / 2)
    assert record["rows"][0]["images"] == 5 and len(record["photos"]) == 5
    assert main(["evaluate", str(tmp_path / "jpeg_born.png"), "-q", "10", "-m", str(weights), "--quiet"]) == 0
    assert "every reference is or was a JPEG" in capsys.readouterr().out
    assert "lossy.jpg is itself a JPEG (quality about 75)" in err
    assert "jpeg_born.png was a JPEG before (quality about 75:" in err
    assert "cropped.png was a JPEG before (quality about 75, cropped: its block grid starts at row 3, column 5" in err
    assert "fine.jpg" not in err and "clean.png" not in err


def test_evaluate_grids_every_photo_labelled_and_apart(tmp_path, weights, capsys):
    from dequantizer.evaluate import Row, gain_figure

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for index in range(3):  # the same names in both folders
            photo = noise(12, 16, seed=index + ord(folder)).resize((64, 48), Image.BICUBIC)
            photo.save(tmp_path / folder / f"{index}.png")
    assert main(["evaluate", str(tmp_path / "a"), str(tmp_path / "b"), "-q", "10", "-m", str(weights), "--quiet",
                 "-o", str(tmp_path / "r")]) == 0
    grids = sorted(path.name for path in (tmp_path / "r" / "grids").iterdir())
    assert grids == [f"{folder}_{index}_q10.png" for folder in "ab" for index in range(3)]  # all six, none overwritten
    grid = np.asarray(Image.open(tmp_path / "r" / "grids" / "b_2_q10.png"))
    strip = grid.shape[0] - 48
    assert grid.shape[1] == 3 * 64 and strip > 0  # JPEG | restored | original, under a strip of labels
    assert (grid[:strip] < 128).any() and (grid[:strip] == 255).mean() > 0.5  # dark text on white
    assert np.array_equal(grid[strip:, 128:], np.asarray(Image.open(tmp_path / "b" / "2.png")))
    # One quality: a bar with its value, not a lone dot on a quality axis; several: a line.
    rows = [Row(10, 6, 30.0, 31.0, 0.8, 0.85, 30.0, 31.0)]
    (axis,) = gain_figure(rows, [], 0).axes
    assert len(axis.patches) == 1 and axis.texts[0].get_text() == "+1.00 dB" and not axis.lines[1:]
    (axis,) = gain_figure(rows + [Row(20, 6, 32.0, 32.5, 0.8, 0.85, 32.0, 32.5)], [], 0).axes
    assert not axis.patches and list(axis.lines[0].get_xdata()) == [10, 20]

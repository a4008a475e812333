"""The console script as a user meets it: one clear line per failure, nothing silently lost, one meaning per flag."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dequantizer
from dequantizer import dequantize, quantize
from dequantizer.cli import main
from dequantizer.jpeg import estimate_jpeg_quality
from dequantizer.weights import read_metadata, save_generator


def noise(height=24, width=32, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8))


def one_line_error(capsys, expected):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert any(expected in line for line in lines), err
    return err


def test_quantize_writes_the_jpeg_file_itself_and_reports_bad_files(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    noise().save(photos / "a.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    code = main(["quantize", str(photos), "-q", "90", "-o", str(tmp_path / "out")])
    assert code == 1  # one file failed, the rest went on
    with Image.open(tmp_path / "out" / "a.q90.jpg") as out:
        assert out.format == "JPEG" and estimate_jpeg_quality(out) == 90  # the quality travels with the file
    one_line_error(capsys, "broken.jpg: cannot read it as an image")
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_quantize_png_records_the_quality_and_dequantize_reads_it(tmp_path, weights):
    noise(48, 48).save(tmp_path / "a.png")
    assert main(["quantize", str(tmp_path / "a.png"), "-q", "90", "--format", "png", "-o", str(tmp_path)]) == 0
    with Image.open(tmp_path / "a.q90.png") as png:
        assert estimate_jpeg_quality(png) == 90
        expected = np.asarray(quantize(noise(48, 48), 90))
        assert np.array_equal(np.asarray(png.convert("RGB")), expected)
    # a model that passes quality 90 through: the PNG's recorded quality must reach the gate
    gated = tmp_path / "gated.safetensors"
    save_generator(_state(weights), gated, {**read_metadata(weights), "max_quality": 84})
    restored = dequantize(tmp_path / "a.q90.png", model=gated)
    assert np.array_equal(np.asarray(restored), expected)
    assert not np.array_equal(np.asarray(dequantize(Image.fromarray(expected), model=gated)), expected)


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_bad_quality_is_one_line(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["quantize", str(tmp_path / "a.png"), "-q", "0", "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: JPEG quality 0 is out of range: use an integer from 1 to 100"


def test_q_means_quality_in_every_subcommand(tmp_path, weights, capsys):
    noise(32, 32).save(tmp_path / "clean.png")
    assert main(["quantize", str(tmp_path / "clean.png"), "-q", "20", "-o", str(tmp_path / "jpeg")]) == 0
    jpeg = tmp_path / "jpeg" / "clean.q20.jpg"
    assert main(["dequantize", str(jpeg), "-q", "10", "-o", str(tmp_path / "out"), "-m", str(weights)]) == 0
    assert main(["evaluate", str(tmp_path / "clean.png"), "-q", "20", "-m", str(weights), "--quiet"]) == 0
    assert "     20 " in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"dequantizer {dequantizer.__version__}"


@pytest.mark.parametrize("command", ["dequantize", "quantize", "evaluate"])
def test_output_that_is_a_file_is_one_line(tmp_path, weights, capsys, command):
    noise().save(tmp_path / "a.png")
    (tmp_path / "taken").write_text("a file")
    extra = ["-m", str(weights)] if command != "quantize" else []
    assert main([command, str(tmp_path / "a.png"), "-o", str(tmp_path / "taken"), *extra]) == 2
    one_line_error(capsys, "taken is a file: --output takes a folder")


def test_unwritable_output_folder_is_one_line(tmp_path, weights, capsys, monkeypatch):
    noise().save(tmp_path / "a.png")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if "locked" in str(path) else real_access(path, mode))
    assert main(["dequantize", str(tmp_path / "a.png"), "-o", str(tmp_path / "locked"), "-m", str(weights)]) == 2
    one_line_error(capsys, "cannot write to")


def test_a_file_that_cannot_be_written_fails_alone(tmp_path, weights, capsys, monkeypatch):
    import tempfile

    for name in ("a", "b"):
        quantize(noise(seed=ord(name))).save(tmp_path / f"{name}.jpg")
    real_mkstemp = tempfile.mkstemp

    def full_disk_for_a(*args, prefix="", **kwargs):
        if prefix.startswith(".a."):
            raise OSError(28, "No space left on device")
        return real_mkstemp(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full_disk_for_a)
    out = tmp_path / "out"
    assert main(["dequantize", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), "-o", str(out), "-m",
                 str(weights)]) == 1
    err = one_line_error(capsys, "a.png: No space left on device")
    assert "1 restored, 0 skipped" in err and (out / "b.png").is_file() and not (out / "a.png").exists()


def test_unusable_device_is_one_line(tmp_path, weights, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    noise().save(tmp_path / "a.png")
    assert main(["dequantize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "-m", str(weights),
                 "--device", "cuda"]) == 2
    one_line_error(capsys, "device 'cuda' cannot be used here")


def test_corrupt_model_files_are_one_line_without_unsafe_advice(tmp_path, capsys):
    noise().save(tmp_path / "a.png")
    (tmp_path / "bad.safetensors").write_bytes(os.urandom(200))
    (tmp_path / "bad.ckpt").write_bytes(os.urandom(2000))
    for name in ("bad.safetensors", "bad.ckpt"):
        assert main(["dequantize", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "-m",
                     str(tmp_path / name)]) == 2
        err = one_line_error(capsys, f"cannot read {tmp_path / name}")
        assert "weights_only" not in err and "corrupt or truncated" in err


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


def test_inputs_that_share_a_name_are_all_kept(tmp_path, weights, capsys):
    for camera in ("camA", "camB"):
        (tmp_path / camera).mkdir()
        quantize(noise(seed=len(camera))).save(tmp_path / camera / "IMG_0001.jpg")
    quantize(noise(seed=5)).save(tmp_path / "camA" / "photo.jpg")
    quantize(noise(seed=6)).save(tmp_path / "camA" / "photo.jpeg")
    out = tmp_path / "out"
    assert main(["dequantize", str(tmp_path / "camA"), str(tmp_path / "camB"), "-o", str(out), "-m",
                 str(weights)]) == 0
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png"))
    assert written == ["camA/IMG_0001.png", "camA/photo.jpeg.png", "camA/photo.jpg.png", "camB/IMG_0001.png"]
    assert "4 restored, 0 skipped" in capsys.readouterr().err
    # quantize keeps them apart the same way
    assert main(["quantize", str(tmp_path / "camA"), "-q", "30", "-o", str(tmp_path / "q")]) == 0
    assert {p.name for p in (tmp_path / "q").iterdir()} == {"IMG_0001.q30.jpg", "photo.jpg.q30.jpg",
                                                            "photo.jpeg.q30.jpg"}


def test_inputs_that_still_collide_are_refused(tmp_path, weights, capsys):
    for parent in ("a", "b"):
        (tmp_path / parent / "cam").mkdir(parents=True)
        quantize(noise()).save(tmp_path / parent / "cam" / "x.jpg")
    assert main(["dequantize", str(tmp_path / "a" / "cam"), str(tmp_path / "b" / "cam"), "-o", str(tmp_path / "o"),
                 "-m", str(weights)]) == 2
    one_line_error(capsys, "would both be written to")
    assert not (tmp_path / "o").exists()


def test_arrays_in_arrays_out(weights):
    rgb = np.asarray(noise(24, 32))
    for pixels in (rgb, rgb[..., 0], rgb[..., :1], np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])):
        jpeg = quantize(pixels, quality=20)
        restored = dequantize(jpeg, model=weights)
        assert isinstance(jpeg, np.ndarray) and isinstance(restored, np.ndarray)
        assert jpeg.shape == restored.shape == pixels.shape and restored.dtype == np.uint8
    with pytest.raises(dequantizer.DequantizerError, match="pass HxW, HxWx3 or HxWx4 uint8"):
        dequantize(rgb.astype(np.float32), model=weights)


def test_exif_is_kept_with_the_orientation_reset(tmp_path, weights):
    image = noise(24, 40)
    exif = image.getexif()
    exif[0x0110], exif[0x0132], exif[0x0112] = "Camera X", "2020:01:01 10:00:00", 6
    image.save(tmp_path / "photo.jpg", exif=exif, quality=30)
    restored = dequantize(tmp_path / "photo.jpg", model=weights)
    assert restored.size == (24, 40)
    assert main(["dequantize", str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "out"), "-m", str(weights)]) == 0
    for kept in (restored.getexif(), Image.open(tmp_path / "out" / "photo.png").getexif()):
        assert kept[0x0110] == "Camera X" and kept[0x0132] == "2020:01:01 10:00:00" and 0x0112 not in kept


def test_tile_size_below_the_models_overlap_says_what_to_use(tmp_path, weights, capsys):
    noise(300, 300).save(tmp_path / "big.png")
    assert main(["dequantize", str(tmp_path / "big.png"), "-o", str(tmp_path / "out"), "-m", str(weights),
                 "--tile-size", "16"]) == 1  # measured from the receptive field when the first large image comes
    one_line_error(capsys, "tile size 16 is too small for this model: its tiles overlap by")
    recorded = tmp_path / "recorded.safetensors"  # exports record the overlap: refused before any work
    save_generator(_state(weights), recorded, {**read_metadata(weights), "overlap": 72})
    assert main(["dequantize", str(tmp_path / "big.png"), "-o", str(tmp_path / "out"), "-m", str(recorded),
                 "--tile-size", "128"]) == 2
    one_line_error(capsys, "tile size 128 is too small for this model: its tiles overlap by 72 px (from its "
                           "receptive field); use a tile size of at least 144")


def test_a_self_ensemble_is_one_flag_of_dequantize_and_evaluate(tmp_path, weights, capsys):
    smooth = noise(12, 16).resize((64, 48), Image.BICUBIC)
    smooth.save(tmp_path / "clean.png")
    jpeg = quantize(smooth, quality=20)
    jpeg.save(tmp_path / "q20.png")
    assert main(["dequantize", str(tmp_path / "q20.png"), "-q", "20", "-m", str(weights), "--ensemble", "8",
                 "--precision", "fp32", "-o", str(tmp_path / "out")]) == 0
    expected = dequantize(jpeg, model=str(weights), quality=20, ensemble=8, precision="fp32")
    written = np.asarray(Image.open(tmp_path / "out" / "q20.png"), dtype=int)
    assert written.shape == (48, 64, 3) and np.abs(written - np.asarray(expected, dtype=int)).max() <= 1
    assert main(["evaluate", str(tmp_path / "clean.png"), "-q", "20", "-m", str(weights), "--ensemble", "4",
                 "--quiet", "-o", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["model"]["ensemble"] == 4
    with pytest.raises(SystemExit):
        main(["dequantize", str(tmp_path / "q20.png"), "--ensemble", "3", "-o", str(tmp_path / "out")])
    assert "--ensemble: invalid choice: 3 (choose from 1, 2, 4, 8)" in capsys.readouterr().err


@pytest.mark.parametrize("output_format", ["webp", "tif"])
def test_every_output_format_holds_the_restored_pixels_exactly(tmp_path, weights, output_format):
    """The formats offered are lossless: the WebP and TIFF outputs hold the PNG output's pixels, every one."""
    noise(40, 56).save(tmp_path / "photo.jpg", quality=20)
    for name in ("png", output_format):
        assert main(["dequantize", str(tmp_path / "photo.jpg"), "-o", str(tmp_path / name), "-m", str(weights),
                     "--format", name, "--quiet"]) == 0  # fmt: skip
    with Image.open(tmp_path / "png" / "photo.png") as png:
        with Image.open(tmp_path / output_format / f"photo.{output_format}") as other:
            np.testing.assert_array_equal(np.asarray(other.convert("RGB")), np.asarray(png))


def test_quantize_and_dequantize_share_one_overwrite_rule(tmp_path, weights, capsys):
    noise(32, 32).save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    for command, target in (("quantize", out / "a.q10.jpg"), ("dequantize", out / "a.q10.png")):
        target.write_bytes(b"kept")
        source = tmp_path / ("a.png" if command == "quantize" else "a.q10.png")
        if command == "dequantize":
            quantize(noise(32, 32), 10).save(source)
        extra = ["-m", str(weights)] if command == "dequantize" else []
        assert main([command, str(source), "-o", str(out), *extra]) == 0
        assert target.read_bytes() == b"kept"  # there already: skipped, and said so
        assert "1 skipped (already there; --overwrite to redo)" in capsys.readouterr().err
        assert main([command, str(source), "-o", str(out), "--overwrite", *extra]) == 0
        assert target.read_bytes() != b"kept" and Image.open(target).size == (32, 32)
        assert ", 0 skipped (already there; --overwrite to redo), 0 failed" in capsys.readouterr().err


@pytest.mark.parametrize("blocked", ["folder in the way", "file where a folder goes", "folder locked"])
def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, weights, capsys, monkeypatch, blocked):
    import dequantizer.restore

    (tmp_path / "in" / "sub").mkdir(parents=True)
    quantize(noise()).save(tmp_path / "in" / "sub" / "x.jpg")
    quantize(noise(seed=1)).save(tmp_path / "in" / "y.jpg")
    out = tmp_path / "out"
    out.mkdir()
    if blocked == "folder in the way":
        (out / "sub" / "x.png").mkdir(parents=True)
    elif blocked == "file where a folder goes":
        (out / "sub").write_text("a file")
    else:
        (out / "sub").mkdir()
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: "sub" not in str(path) and real_access(path, mode))
    restored = []
    real_restore = dequantizer.restore.restore_image

    def counted(image, *args, **kwargs):
        restored.append(image.size)
        return real_restore(image, *args, **kwargs)

    monkeypatch.setattr(dequantizer.restore, "restore_image", counted)
    assert main(["dequantize", str(tmp_path / "in"), "-o", str(out), "-m", str(weights)]) == 1
    one_line_error(capsys, f"cannot write {out / 'sub' / 'x.png'}")
    assert len(restored) == 1 and (out / "y.png").is_file()  # only the file that could be written was restored


def test_a_single_large_photo_shows_its_tiles_progress(tmp_path, weights, capsys):
    noise(16, 24).resize((300, 200), Image.BICUBIC).save(tmp_path / "large.jpg", quality=20)
    assert main(["dequantize", str(tmp_path / "large.jpg"), "-o", str(tmp_path / "out"), "-m", str(weights),
                 "--tile-size", "128"]) == 0
    err = capsys.readouterr().err
    assert "large.jpg: 100%" in err and "6/6 [" in err  # 3 x 2 tiles of 128 with the tiny model's 16-px overlap
    assert main(["dequantize", str(tmp_path / "large.jpg"), "-o", str(tmp_path / "quiet"), "-m", str(weights),
                 "--tile-size", "128", "--quiet"]) == 0
    assert "tile" not in capsys.readouterr().err


def test_each_file_says_what_was_done_even_when_kept(tmp_path, weights, capsys):
    gated = tmp_path / "gated.safetensors"
    save_generator(_state(weights), gated, {**read_metadata(weights), "max_quality": 90})
    noise(32, 32).save(tmp_path / "mild.jpg", quality=95)
    noise(32, 32).save(tmp_path / "harsh.jpg", quality=20)
    assert main(["dequantize", str(tmp_path / "mild.jpg"), str(tmp_path / "harsh.jpg"), "-o", str(tmp_path / "out"),
                 "-m", str(gated)]) == 0
    out = capsys.readouterr().out
    assert "mild.png: kept as it is, q95 from the tables (above the model's max_quality 90" in out
    assert "harsh.png: restored (its model is not told a quality; q20 from the tables)" in out


def test_models_lists_what_each_is_for_in_words(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "blind (default):" in out and "for JPEG quality 1-100; trained on" in out
    assert "for JPEG quality 50; trained on Debian's desktop wallpapers" in out
    assert "Photos" not in out  # no internal class names (FolderPhotos, SamplePhotos)


def test_every_positional_argument_says_what_it_is():
    from dequantizer.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for name, command in commands.items():
        for action in command._actions:
            if not action.option_strings:
                assert action.help, f"{name} {action.dest}"


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


def test_files_skipped_or_unreadable_leave_no_empty_folders(tmp_path, weights):
    (tmp_path / "in" / "broken").mkdir(parents=True)
    (tmp_path / "in" / "broken" / "x.jpg").write_bytes(b"not a jpeg")
    quantize(noise()).save(tmp_path / "in" / "y.jpg")
    for command in ("dequantize", "quantize"):
        out = tmp_path / command
        extra = ["-m", str(weights)] if command == "dequantize" else []
        assert main([command, str(tmp_path / "in"), "-o", str(out), *extra]) == 1
        assert [path.relative_to(out).as_posix() for path in out.rglob("*")] == [next(out.iterdir()).name]

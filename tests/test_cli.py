"""The console script as a user meets it (dequantizer/cli.py): one clear line per failure, nothing silently lost, one
meaning per flag, each file's line saying what was done. `evaluate`'s reports are in test_evaluate.py."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import dequantizer
from dequantizer import dequantize, quantize
from dequantizer.cli import main
from dequantizer.jpeg import estimate_jpeg_quality
from dequantizer.weights import read_metadata, save_generator
from helpers import jpeg_bytes, noise, one_line_error, real_world_photos, twice

PHOTOS = real_world_photos()


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


def test_files_skipped_or_unreadable_leave_no_empty_folders(tmp_path, weights):
    (tmp_path / "in" / "broken").mkdir(parents=True)
    (tmp_path / "in" / "broken" / "x.jpg").write_bytes(b"not a jpeg")
    quantize(noise()).save(tmp_path / "in" / "y.jpg")
    for command in ("dequantize", "quantize"):
        out = tmp_path / command
        extra = ["-m", str(weights)] if command == "dequantize" else []
        assert main([command, str(tmp_path / "in"), "-o", str(out), *extra]) == 1
        assert [path.relative_to(out).as_posix() for path in out.rglob("*")] == [next(out.iterdir()).name]


def test_cli_dequantize_folder_with_a_bad_file(tmp_path, weights, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    quantize(noise(30, 40)).save(photos / "a.jpg")
    quantize(noise(24, 24)).save(photos / "sub" / "b.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "restored"
    code = main(["dequantize", str(photos), "-o", str(out), "-m", str(weights)])
    assert code == 1
    assert (out / "a.png").is_file() and (out / "sub" / "b.png").is_file()
    err = capsys.readouterr().err
    assert "broken.jpg: cannot read it as an image" in err and "Traceback" not in err
    assert "2 restored, 0 skipped" in err
    # a rerun skips what exists
    assert main(["dequantize", str(photos / "a.jpg"), "-o", str(out), "-m", str(weights)]) == 0
    assert "0 restored, 1 skipped" in capsys.readouterr().err
    # never overwrite an input
    assert main(["dequantize", str(out / "a.png"), "-o", str(out), "-m", str(weights), "--overwrite"]) == 1
    assert "refusing to overwrite an input" in capsys.readouterr().err


def test_a_double_jpeg_is_restored_for_its_first_quality_and_the_cli_says_so(tmp_path, capsys):
    photo = PHOTOS["coffee"]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "double.jpg").write_bytes(twice(photo, 20, 75, (3, 5)))
    (folder / "single.jpg").write_bytes(jpeg_bytes(photo, quality=75))
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
        assert error(restored) < 0.9 * error(dequantize(folder / "double.jpg", quality=75))

"""A seeded mutation fuzz of every way images come in: one damaged file is that file's problem alone.

Small JPEG (baseline with EXIF, progressive, grey, 4:4:4), PNG, WebP, BMP and TIFF files are mutated (bit flips,
truncations, inserted, duplicated and zeroed runs) and handed to ``dequantize(path)``, the CLI on a folder, and the
DataModule's photo loading. Every case must be restored or refused with the project's one-line ``DequantizerError``;
nothing else may escape, and nothing may hang.
"""

from __future__ import annotations

import io
import random
import signal
import struct
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image
from skimage import data

from dequantizer import dequantize
from dequantizer.cli import main
from dequantizer.data import FolderPhotos, JpegDataModule
from dequantizer.errors import DequantizerError
from helpers import FAST, run_train

# Enough mutations to meet the rare kinds of damage (e.g. PNGs whose damage Pillow raises as SyntaxError, the escape
# that a folder's first file once turned into a traceback), with the tiny model.
CASES = 8000
HANG_SECONDS = 30  # per case: far above what refusing the slowest (a TIFF whose header claims 124 MP) takes


def seed_files() -> dict[str, bytes]:
    """The files mutated: one small photo in every format (and JPEG flavour) the tool reads."""
    rgb = Image.fromarray(data.astronaut()[100:124, 150:180])
    grey = Image.fromarray(data.camera()[100:124, 150:180])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the orientation is applied when read
    files = {}
    for name, image, options in [
        ("baseline.jpg", rgb, {"quality": 75, "exif": exif.tobytes()}),
        ("progressive.jpg", rgb, {"quality": 75, "progressive": True}),
        ("grey.jpg", grey, {"quality": 75}),
        ("444.jpg", rgb, {"quality": 75, "subsampling": 0}),
        ("photo.png", rgb, {}),
        ("photo.webp", rgb, {"quality": 80}),
        ("photo.bmp", rgb, {}),
        ("photo.tiff", rgb, {}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, Image.registered_extensions()["." + name.rsplit(".", 1)[1]], **options)
        files[name] = buffer.getvalue()
    return files


SEEDS = seed_files()
pytestmark = pytest.mark.filterwarnings("ignore:::PIL")  # Pillow's notes on damaged metadata: expected here


def mutate(original: bytes, rng: random.Random) -> bytes:
    data = bytearray(original)
    kind = rng.choice(["flip", "truncate", "insert", "duplicate", "zero"])
    at = rng.randrange(len(data))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[at:]
    elif kind == "insert":
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "duplicate":
        data[at:at] = data[at : at + rng.randint(1, 64)]
    else:
        length = rng.randint(1, 64)
        data[at : at + length] = bytes(len(data[at : at + length]))
    return bytes(data)


def cases(count: int, seed: int):
    """(seed file's name, mutated bytes), the formats in turn."""
    rng = random.Random(seed)
    names = list(SEEDS)
    for index in range(count):
        name = names[index % len(names)]
        yield name, mutate(SEEDS[name], rng)


@contextmanager
def hang_guard(seconds: int):
    def stop(*_):
        raise TimeoutError(f"no answer in {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def broken_chunk_png() -> bytes:
    """A PNG whose IDAT chunk length is wrong, so the reader lands inside the data (Pillow: SyntaxError)."""
    png = SEEDS["photo.png"]
    at = png.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", png[at : at + 4])
    return png[:at] + struct.pack(">I", length - 7) + png[at + 4 :]


@pytest.mark.slow
def test_mutated_files_are_restored_or_refused_in_one_line(tmp_path, weights):
    outcomes = {"restored": 0, "refused": 0}
    escapes = []
    for index, (name, blob) in enumerate(cases(CASES, seed=0)):
        path = tmp_path / f"case{index % 8}.{name.rsplit('.', 1)[1]}"
        path.write_bytes(blob)
        try:
            with hang_guard(HANG_SECONDS):
                dequantize(path, model=weights, device="cpu")
            outcomes["restored"] += 1
        except DequantizerError as error:
            assert "\n" not in str(error) and str(path) in str(error), str(error)
            outcomes["refused"] += 1
        except Exception as error:  # an escape: keep going to count them all
            escapes.append(f"{name} #{index}: {type(error).__name__}: {error}")
    assert not escapes, f"{len(escapes)} of {CASES} escaped: {escapes[:5]}"
    assert min(outcomes.values()) > CASES // 5, outcomes  # the mutations reach both outcomes


def test_a_corrupt_first_file_does_not_stop_the_folder(tmp_path, weights, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a-broken-chunk.png").write_bytes(broken_chunk_png())
    for name in ("b.jpg", "c.jpg"):
        (folder / name).write_bytes(SEEDS["baseline.jpg"])
    status = main(["dequantize", str(folder), "-o", str(tmp_path / "out"), "-m", str(weights), "--device", "cpu"])
    errors = capsys.readouterr().err
    assert status == 1
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["b.png", "c.png"]
    assert "a-broken-chunk.png: cannot read it as an image (broken PNG file" in errors
    assert "Traceback" not in errors
    assert "2 restored, 0 skipped (already there; --overwrite to redo), 1 failed" in errors


@pytest.mark.parametrize("command", ["dequantize", "quantize"])
def test_the_cli_on_a_folder_of_mutated_files(tmp_path, weights, capsys, command):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, (name, blob) in enumerate(cases(48, seed=1)):
        (folder / f"{index:02d}.{name.rsplit('.', 1)[1]}").write_bytes(blob)
    (folder / "good.jpg").write_bytes(SEEDS["baseline.jpg"])
    options = ["-m", str(weights), "--device", "cpu"] if command == "dequantize" else ["-q", "20"]
    with hang_guard(HANG_SECONDS * 4):
        status = main([command, str(folder), "-o", str(tmp_path / "out"), *options])
    errors = capsys.readouterr().err.strip().splitlines()
    failed = [line for line in errors if line.startswith("error: ")]
    written = list((tmp_path / "out").iterdir())
    assert "Traceback" not in "\n".join(errors)
    assert all("cannot read it as an image" in line for line in failed), failed
    assert any(path.name.startswith("good") for path in written)
    assert len(written) + len(failed) == 49 and failed and status == 1


def test_the_datamodule_skips_mutated_photos_and_names_them(tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(6):  # good photos, large enough for the crops
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"good{index}.png")
    for index, (name, blob) in enumerate(cases(64, seed=2)):
        (folder / f"mutated{index:02d}.{name.rsplit('.', 1)[1]}").write_bytes(blob)
    (folder / "broken-chunk.png").write_bytes(broken_chunk_png())
    datamodule = JpegDataModule(FolderPhotos(folder), quality=30, crop_size=16, batch_size=4, num_workers=0)
    datamodule.prepare_data()
    with hang_guard(HANG_SECONDS * 4):
        datamodule.setup("fit")
    assert str(folder / "broken-chunk.png") in datamodule.skipped
    assert any("broken-chunk.png: cannot read it as an image" in record.message for record in caplog.records)
    jpeg, target, _ = next(iter(datamodule.train_dataloader()))
    assert jpeg.shape == target.shape == (4, 3, 16, 16)


@pytest.mark.slow  # train.py
def test_training_skips_a_damaged_photo_and_names_it(tmp_path):
    """train.py on a folder holding a damaged PNG: one warning naming it, then the epoch runs on the others."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(8):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"good{index}.png")
    (folder / "broken-chunk.png").write_bytes(broken_chunk_png())
    result = run_train(tmp_path, "experiment=quick", *FAST, "data=folder", f"data.source.root={folder}",
                       "trainer.max_epochs=1", "test=false")
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "broken-chunk.png: cannot read it as an image (broken PNG file" in output
    assert "skipped 1 unreadable files" in output and "Traceback" not in output

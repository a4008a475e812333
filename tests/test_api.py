"""The public API and the CLI on real files: colour modes, folders with bad files, safe loading."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from dequantizer import dequantize, quantize
from dequantizer.cli import main
from dequantizer.errors import DequantizerError


def colourful(size=(40, 30)):
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "RGBA", "LA", "I;16"])
def test_round_trip_every_colour_mode(mode, weights):
    image = colourful().convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(colourful().convert("L"), dtype=np.uint16) * 257)
    jpeg = quantize(image, quality=10)
    restored = dequantize(jpeg, model=weights)
    assert restored.size == image.size
    if mode in ("RGBA", "LA"):
        assert restored.mode in ("RGBA", "LA")
        assert np.array_equal(np.asarray(restored.getchannel("A")), np.asarray(image.getchannel("A")))
    expected = "L" if mode in ("L", "I;16") else "LA" if mode == "LA" else "RGBA" if mode == "RGBA" else "RGB"
    assert restored.mode == expected


def test_exif_orientation_and_icc_profile(tmp_path, weights):
    image = colourful((40, 24))
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image.save(tmp_path / "rotated.jpg", exif=exif, icc_profile=profile, quality=20)
    restored = dequantize(tmp_path / "rotated.jpg", model=weights)
    assert restored.size == (24, 40)
    assert restored.info["icc_profile"] == profile


def test_batches_and_paths(tmp_path, weights):
    colourful().save(tmp_path / "a.png")
    outputs = dequantize([tmp_path / "a.png", colourful((16, 16))], model=weights)
    assert [o.size for o in outputs] == [(40, 30), (16, 16)]


def test_clear_errors(tmp_path, weights):
    with pytest.raises(DequantizerError, match="no shipped model named 'nope'"):
        dequantize(colourful(), model="nope")
    with pytest.raises(DequantizerError, match="no such file"):
        dequantize(tmp_path / "missing.jpg", model=weights)
    (tmp_path / "fake.jpg").write_text("hello")
    with pytest.raises(DequantizerError, match="cannot read it as an image"):
        dequantize(tmp_path / "fake.jpg", model=weights)


def test_malicious_pickle_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {}, "hyper_parameters": {"generator": {}}, "evil": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(DequantizerError, match="refusing to load .*evil.ckpt: it holds code objects") as error:
        dequantize(colourful(), model=tmp_path / "evil.ckpt")
    assert "weights_only" not in str(error.value)  # never repeat torch's advice to unpickle an untrusted file


def test_cli_dequantize_folder_with_a_bad_file(tmp_path, weights, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    quantize(colourful()).save(photos / "a.jpg")
    quantize(colourful((24, 24))).save(photos / "sub" / "b.png")
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


def test_cli_evaluate_writes_reports(tmp_path, weights, capsys):
    colourful((64, 48)).save(tmp_path / "clean.png")
    code = main(["evaluate", str(tmp_path / "clean.png"), "--quality", "10", "50", "-m", str(weights),
                 "-o", str(tmp_path / "report")])
    assert code == 0
    out = capsys.readouterr().out
    assert "JPEG PSNR" in out and "gain" in out
    assert {p.name for p in (tmp_path / "report").iterdir()} >= {"results.csv", "results.json", "grids"}

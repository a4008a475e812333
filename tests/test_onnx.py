"""ONNX export and engine="onnx": onnxruntime restores real photos as torch does in fp32 (within 1 grey level), at
any size, with the quality told or predicted, with the model's metadata (tile overlap, max_quality gate) kept."""

import sys

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from dequantizer import dequantize
from dequantizer.cli import main
from dequantizer.errors import DequantizerError
from dequantizer.models import to_model_range, to_unit_range
from dequantizer.onnx_engine import cached_export, export_onnx, load_onnx_generator
from dequantizer.restore import get_restorer
from dequantizer.tiling import receptive_radius, tile_overlap
from dequantizer.weights import load_generator, read_metadata, resolve_model
from helpers import jpeg_pixels, one_line_error


def jpeg_file(path, pixels, quality):
    """A JPEG file with its quantization tables, as a camera or an editor writes one."""
    Image.fromarray(pixels).save(path, "JPEG", quality=quality)
    return path


def grey_levels(restored: torch.Tensor) -> np.ndarray:
    """[-1, 1] network output -> uint8 pixels, rounded as Restorer rounds them."""
    return (to_unit_range(restored).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy().astype(int)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    """engine="onnx" exports into a cache of this module's own, never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def blind_onnx(onnx_cache):
    """The shipped default exported once, into the cache that dequantize(engine="onnx") then reuses."""
    return cached_export(resolve_model("blind"))


@pytest.mark.slow
def test_blind_matches_torch_at_any_size_told_or_predicted(blind_onnx):
    runner, metadata = load_onnx_generator(blind_onnx)
    generator, torch_metadata = load_generator(resolve_model("blind"))
    assert hasattr(runner, "quality_head") and runner.scale == 1
    assert {key: metadata[key] for key in torch_metadata} == torch_metadata  # description, generator, overlap, ...
    photo = jpeg_pixels(skimage.data.chelsea(), 25)
    worst = 0
    for height, width in ((120, 200), (93, 61)):  # non-square; the second not whole 8x8 blocks
        pixels = torch.from_numpy(np.array(photo[:height, :width])).permute(2, 0, 1)[None]
        x = to_model_range(torch.cat([pixels, pixels.flip(-1)]))
        with torch.inference_mode():
            told, predicted = generator(x, torch.tensor([25.0, 60.0])), generator(x, None, return_quality=True)
        onnx_told = runner(x, torch.tensor([25.0, 60.0]))
        onnx_predicted, onnx_quality = runner(x, None, return_quality=True)
        assert onnx_told.shape == (2, 3, height, width)
        assert np.allclose(onnx_quality.numpy(), predicted[1].numpy(), atol=0.01)
        for ours, theirs in ((onnx_told, told), (onnx_predicted, predicted[0])):
            worst = max(worst, np.abs(grey_levels(ours) - grey_levels(theirs)).max())
    assert worst <= 1


@pytest.mark.slow
def test_srresnet_model_exports_without_a_quality_input(tmp_path):
    path, (difference, quality_difference) = export_onnx("beta", tmp_path / "beta.onnx")
    assert difference < 0.05 and quality_difference == 0  # grey levels, on the export's own photo crops
    runner, metadata = load_onnx_generator(path)
    generator, torch_metadata = load_generator(resolve_model("beta"))
    assert not hasattr(runner, "quality_head")
    assert metadata["generator"] == torch_metadata["generator"] and metadata["overlap"] >= 16
    photo = jpeg_pixels(skimage.data.astronaut(), 50)
    for height, width in ((72, 120), (50, 34)):
        x = to_model_range(torch.from_numpy(np.array(photo[:height, :width])).permute(2, 0, 1)[None])
        with torch.inference_mode():
            expected = generator(x)
        assert np.abs(grey_levels(runner(x, torch.tensor([50.0]))) - grey_levels(expected)).max() <= 1


@pytest.mark.slow
@pytest.mark.parametrize("tile_size, ensemble", [(512, 1), (192, 2)])  # one tile; many tiles, blended, two views
def test_dequantize_with_onnx_equals_torch_fp32(tmp_path, blind_onnx, tile_size, ensemble):
    path = jpeg_file(tmp_path / "chelsea.jpg", skimage.data.chelsea(), 25)  # 300x451
    onnx = np.asarray(dequantize(path, model="blind", engine="onnx", tile_size=tile_size, ensemble=ensemble))
    torch_ = np.asarray(dequantize(path, model="blind", precision="fp32", tile_size=tile_size, ensemble=ensemble))
    assert onnx.shape == torch_.shape == (300, 451, 3)
    assert np.abs(onnx.astype(int) - torch_).max() <= 1
    assert not np.array_equal(onnx, np.asarray(Image.open(path)))  # restored, not passed through


@pytest.mark.slow
def test_predicted_quality_matches_torch(blind_onnx):
    tiles = torch.from_numpy(np.array(jpeg_pixels(skimage.data.coffee(), 40)[:128, :256])).permute(2, 0, 1)[None]
    onnx = get_restorer("blind", engine="onnx").predict_quality(tiles)
    assert abs(onnx - get_restorer("blind", "cpu", "fp32").predict_quality(tiles)) < 0.01
    assert 20 < onnx < 70  # a q40 JPEG, as the head reads it


@pytest.mark.slow
def test_metadata_round_trip_keeps_the_max_quality_gate(tmp_path, onnx_cache):
    # blind_v1: max_quality 75; its safetensors is old enough to hold no overlap (measured at export, then read)
    path, _ = export_onnx("blind_v1", tmp_path / "v1.onnx")
    _, metadata = load_onnx_generator(path)
    generator, safetensors_metadata = load_generator(resolve_model("blind_v1"))
    assert metadata["max_quality"] == 75 == read_metadata(resolve_model("blind_v1"))["max_quality"]
    assert metadata["overlap"] == safetensors_metadata.get("overlap", tile_overlap(receptive_radius(generator))) == 24
    photo = np.array(skimage.data.astronaut()[:200, :264])
    mild = jpeg_file(tmp_path / "q95.jpg", photo, 95)
    kept = np.asarray(dequantize(mild, model=path, engine="onnx"))
    assert np.array_equal(kept, np.asarray(Image.open(mild)))
    assert np.array_equal(kept, np.asarray(dequantize(mild, "blind_v1")))  # as torch: passed through
    harsh = jpeg_file(tmp_path / "q30.jpg", photo, 30)
    onnx = np.asarray(dequantize(harsh, model=path, engine="onnx"))
    assert not np.array_equal(onnx, np.asarray(Image.open(harsh)))
    assert np.abs(onnx.astype(int) - np.asarray(dequantize(harsh, "blind_v1", precision="fp32"))).max() <= 1


@pytest.mark.slow
def test_cli_export_and_its_errors(tmp_path, capsys, onnx_cache):
    output = tmp_path / "models" / "beta.onnx"
    assert main(["export", "--onnx", "beta", str(output)]) == 0
    assert output.is_file() and f"wrote {output}" in capsys.readouterr().out
    assert [path.name for path in output.parent.iterdir()] == ["beta.onnx"]  # no temporary file left beside it
    jpeg_file(tmp_path / "cat.jpg", skimage.data.chelsea()[:96, :128], 50)
    assert main(["dequantize", str(tmp_path / "cat.jpg"), "-o", str(tmp_path / "out"), "--engine", "onnx",
                 "-m", str(output), "--quiet"]) == 0
    assert Image.open(tmp_path / "out" / "cat.png").size == (128, 96)
    assert main(["export", "--onnx", "no_such_model", str(tmp_path / "x.onnx")]) == 2
    one_line_error(capsys, "no shipped model named 'no_such_model'", alone=True)
    (tmp_path / "taken").write_text("a file")
    assert main(["export", "--onnx", "beta", str(tmp_path / "taken" / "beta.onnx")]) == 2
    one_line_error(capsys, "a part of its path is a file", alone=True)
    assert main(["export", "--onnx", "beta", str(tmp_path / "beta.onnx"), "--half"]) == 2
    one_line_error(capsys, "--half: for the safetensors export only", alone=True)
    assert main(["dequantize", str(tmp_path / "cat.jpg"), "-o", str(tmp_path / "out2"), "-m", str(output)]) == 2
    one_line_error(capsys, "is an ONNX model: restore with engine='onnx'", alone=True)
    assert main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "x.safetensors")]) == 2  # still the default
    one_line_error(capsys, "missing.ckpt", alone=True)


def test_missing_onnxruntime_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    message = "engine='onnx' needs onnxruntime: pip install 'dequantizer[onnx]'"
    with pytest.raises(DequantizerError) as error:
        dequantize(np.zeros((16, 16, 3), np.uint8), engine="onnx")
    assert str(error.value) == message
    jpeg_file(tmp_path / "a.jpg", np.zeros((16, 16, 3), np.uint8), 50)
    assert main(["dequantize", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "out"), "--engine", "onnx"]) == 2
    one_line_error(capsys, message, alone=True)
    assert main(["export", "--onnx", "beta", str(tmp_path / "beta.onnx")]) == 2
    one_line_error(capsys, "pip install 'dequantizer[onnx]'", alone=True)


def test_engine_options_are_checked(tmp_path):
    pixels = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(DequantizerError, match="engine 'tensorrt': use one of torch, onnx"):
        dequantize(pixels, engine="tensorrt")
    with pytest.raises(DequantizerError, match="engine='onnx' runs in fp32 only"):
        dequantize(pixels, engine="onnx", precision="bf16")
    with pytest.raises(DequantizerError, match="engine='onnx' runs on cpu or cuda"):
        dequantize(pixels, engine="onnx", device="mps")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(DequantizerError, match="not an ONNX model onnxruntime can run"):
        dequantize(pixels, model=tmp_path / "bad.onnx", engine="onnx")


@pytest.mark.slow
def test_a_gpu_that_onnxruntime_cannot_use_is_one_line_not_a_quiet_cpu_run(blind_onnx, monkeypatch):
    import onnxruntime

    available = onnxruntime.get_available_providers()
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", *available])
    with pytest.raises(DequantizerError, match="onnxruntime found no usable GPU there; use --device cpu"):
        load_onnx_generator(blind_onnx, "cuda")


def test_the_cached_export_is_made_again_when_torch_or_the_code_changes(monkeypatch):
    from dequantizer import onnx_engine

    path = resolve_model("beta")
    first = onnx_engine.export_digest(path)
    monkeypatch.setattr(onnx_engine, "_DIGESTS", {})
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert onnx_engine.export_digest(path) != first

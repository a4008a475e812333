"""ONNX: export a generator to an ONNX file, and run one with onnxruntime as ``Restorer`` runs a torch generator.

The graph holds the network only: the tile-and-blend loop, the self-ensemble and the quality choice stay in Python
(``Restorer``, ``restore_image``), so both engines restore alike. onnxruntime runs it in fp32.

The graph:
    inputs   image (N, 3, H, W) float32 in [-1, 1] (``to_model_range``); N, H and W are free.
             quality (N,) float32, quality-aware models only: the JPEG quality 1-100, or 0 (any value <= 0) for
             "unknown: use the quality the model predicts".
    outputs  restored (N, 3, sH, sW) float32 in [-1, 1] (s: the model's scale, 1 for every shipped model).
             quality_used (N,) float32, quality-aware models only: the quality used (the predicted one where 0 was
             given).
    metadata_props: the weights' metadata (description, max_quality, qualities, generator config, ...), each value as
             JSON, as the .safetensors holds it, plus the tile ``overlap``, the ``scale`` and ``onnx_format``.

``dequantize(..., engine="onnx")`` runs an .onnx file given as the model; a shipped model's name (or a .safetensors /
.ckpt file) is exported once into the user's cache, ``$XDG_CACHE_HOME/dequantizer/onnx/`` (default ``~/.cache``),
under a name that holds a hash of its weights, and reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dequantizer.errors import DequantizerError
from dequantizer.files import atomic_write
from dequantizer.models import QualityUNet, to_model_range
from dequantizer.tiling import overlap_for
from dequantizer.weights import load_generator, resolve_model

EXPORT_FORMAT = 1  # the graph's interface; a change makes cached exports stale (their file names hold it)
INSTALL_HINT = "pip install 'dequantizer[onnx]'"
MAX_GREY_LEVELS = 1.0  # an export whose pixels differ from torch's by more than this (of 255) is not written
MAX_QUALITY_POINTS = 0.5  # nor one whose quality used differs by more than this (the quality restored for)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise DequantizerError(f"engine='onnx' needs onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


# -- export -----------------------------------------------------------------------------------------------------------
class ExportGraph(nn.Module):
    """What is exported: the generator, with the edge padding its sizes need made part of the graph (so any H and W
    work) and, for quality-aware models, the quality input where 0 means "predict it"."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator
        self.aware = hasattr(generator, "quality_head")
        self.scale = getattr(generator, "scale", 1)
        # QualityUNet pads to whole 8x8 blocks inside its forward, behind a Python `if` that the exporter would fix
        # to the example's size; padding here, always (by 0 px where none is needed), keeps that for every size.
        # A space-to-depth Generator needs sides that are multiples of its fold (torch refuses others).
        fold = getattr(generator, "fold", None)
        self.multiple = 8 if isinstance(generator, QualityUNet) else getattr(fold, "downscale_factor", 1)

    def forward(self, image: torch.Tensor, quality: torch.Tensor | None = None):
        height, width = image.shape[-2:]
        if self.multiple > 1:
            image = F.pad(image, (0, -width % self.multiple, 0, -height % self.multiple), mode="replicate")
        if not self.aware:
            return self.generator(image)[..., : height * self.scale, : width * self.scale]
        restored, predicted = self.generator(image, quality, return_quality=True)
        used = torch.where(quality > 0, quality, predicted)
        return restored[..., : height * self.scale, : width * self.scale], used


def check_photos() -> list[np.ndarray]:
    """Two JPEG-damaged crops of a real photo (scikit-image's astronaut, in the package), at two sizes, to compare
    the exported graph with torch on."""
    import skimage.data

    from dequantizer.jpeg import jpeg_roundtrip_array

    photo = jpeg_roundtrip_array(np.ascontiguousarray(skimage.data.astronaut()), 20)
    return [np.array(photo[64:200, 96:296]), np.array(photo[280:352, 200:248])]  # 136x200, 72x48: as tiles are


def compare(session, graph: ExportGraph, photos: list[np.ndarray]) -> tuple[float, float]:
    """The largest differences between the graph run by onnxruntime and by torch (fp32) on ``photos``: of the
    restored pixels, in grey levels of 255, and of the quality used (quality-aware models, run with a quality given
    for one view and predicted for the other; else 0)."""
    worst = quality_worst = 0.0
    for photo in photos:
        pixels = torch.from_numpy(photo).permute(2, 0, 1)[None]
        image = to_model_range(torch.cat([pixels, pixels.flip(-1)])).contiguous()
        feeds = {"image": image.numpy()}
        args: tuple[torch.Tensor, ...] = (image,)
        if graph.aware:
            quality = torch.tensor([20.0, 0.0])  # one told, one predicted
            feeds["quality"], args = quality.numpy(), (image, quality)
        with torch.inference_mode():
            expected = graph(*args)
        outputs = session.run(None, feeds)
        expected = expected if graph.aware else (expected,)
        worst = max(worst, float(np.abs(outputs[0] - expected[0].numpy()).max()) * 127.5)
        if graph.aware:  # the quality used: a quality off by a few would restore a little differently
            quality_worst = max(quality_worst, float(np.abs(outputs[1] - expected[1].numpy()).max()))
    return worst, quality_worst


def export_onnx(source: str | Path | None, output: str | Path) -> tuple[Path, tuple[float, float]]:
    """Export a model (a shipped name, a .safetensors or a .ckpt file) to ``output`` (.onnx), checked first with
    onnxruntime against torch on real photo crops; nothing is written unless they agree within ``MAX_GREY_LEVELS``.
    Returns the file and the largest differences found (``compare``: grey levels of 255, quality points)."""
    output = Path(output)
    if output.suffix != ".onnx":
        raise DequantizerError(f"ONNX output {output}: name it *.onnx")
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter translates with it)
    except ImportError:
        raise DequantizerError(f"exporting to ONNX needs onnx and onnxscript: {INSTALL_HINT}") from None
    ort = import_onnxruntime()
    path = resolve_model(source)
    if path.suffix == ".onnx":
        raise DequantizerError(f"{path} is an ONNX model already: export from a shipped name, .safetensors or .ckpt")
    _check_writable(output)
    generator, metadata = load_generator(path)
    graph = ExportGraph(generator.float().eval())
    metadata = dict(metadata)
    if not metadata.get("overlap"):  # older weights: measured here once, so the ONNX file never needs torch for it
        metadata["overlap"] = overlap_for(generator)
    metadata |= {"scale": graph.scale, "onnx_format": EXPORT_FORMAT}
    image = to_model_range(torch.from_numpy(check_photos()[0]).permute(2, 0, 1)[None].repeat(2, 1, 1, 1))
    batch, height, width = (torch.export.Dim(name, min=1, max=1 << 15) for name in ("batch", "height", "width"))
    shapes: dict[str, Any] = {"image": {0: batch, 2: height, 3: width}}
    args: tuple[torch.Tensor, ...] = (image.contiguous(),)
    names = (["image"], ["restored"])
    if graph.aware:
        args, shapes["quality"] = (*args, torch.tensor([20.0, 0.0])), {0: batch}
        names = (["image", "quality"], ["restored", "quality_used"])
    try:
        # The exporter prints its progress and warns about axis names; neither means anything to a user.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, args, dynamo=True, input_names=names[0], output_names=names[1],
                                        dynamic_shapes=shapes, verbose=False)
    except Exception as error:  # the exporter fails in many ways; the first line says which
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DequantizerError(f"exporting {path.name} to ONNX failed: {reason}") from None
    model = program.model_proto
    onnx.helper.set_model_props(model, {key: json.dumps(value) for key, value in metadata.items()})
    data = model.SerializeToString()
    worst, quality_worst = compare(session(ort, data, ["CPUExecutionProvider"]), graph, check_photos())
    if worst > MAX_GREY_LEVELS or quality_worst > MAX_QUALITY_POINTS:
        raise DequantizerError(f"the ONNX export of {path.name} differs from torch by {worst:.2f} grey levels and "
                               f"{quality_worst:.2f} in the quality it reads (more than {MAX_GREY_LEVELS:g} and "
                               f"{MAX_QUALITY_POINTS:g}): not written")
    try:
        return atomic_write(output, data), (worst, quality_worst)
    except OSError as error:
        raise DequantizerError(f"cannot write {output}: {error.strerror or error}") from None


def _check_writable(output: Path) -> None:
    """Refuse an output that cannot be written before the export's seconds are spent."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DequantizerError(f"cannot write {output}: a part of its path is a file") from None
    except OSError as error:
        raise DequantizerError(f"cannot write {output}: {error.strerror or error}") from None
    if output.is_dir():
        raise DequantizerError(f"cannot write {output}: it is a folder")
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise DequantizerError(f"cannot write {output}: permission denied")


def cache_dir() -> Path:
    """Where exports for engine="onnx" are kept: $XDG_CACHE_HOME/dequantizer/onnx (default ~/.cache/...)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dequantizer" / "onnx"


_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime) -> digest: a weights file is hashed once per process


def export_digest(path: Path) -> str:
    """A hash of what an export is made from: the weights, the code that builds and exports the networks, torch."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256(f"onnx_format {EXPORT_FORMAT} torch {torch.__version__}\n".encode())
        for source in (path, Path(__file__), Path(sys.modules[QualityUNet.__module__].__file__)):
            with source.open("rb") as file:
                digest.update(hashlib.file_digest(file, "sha256").digest())
        _DIGESTS[key] = digest.hexdigest()[:16]
    return _DIGESTS[key]


def cached_export(path: Path) -> Path:
    """The ONNX export of a weights file, made once into ``cache_dir()`` under a name that holds a hash of the
    weights, of the code that exports them and of torch (``export_digest``), so a change to any is exported again."""
    if not path.is_file():
        raise DequantizerError(f"model file {path} does not exist")
    target = cache_dir() / f"{path.stem}-{export_digest(path)}.onnx"
    if not target.is_file():
        print(f"exporting {path.name} to ONNX once, into {target.parent}", file=sys.stderr)  # takes seconds
        export_onnx(path, target)
    return target


# -- running ----------------------------------------------------------------------------------------------------------
def providers(device: str | torch.device | None) -> tuple[str, list]:
    """onnxruntime's execution providers for a device: "cpu", or "cuda[:N]" where onnxruntime has its CUDA provider
    (the default when it does)."""
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    name = str(device) if device is not None else "cuda" if "CUDAExecutionProvider" in available else "cpu"
    kind, _, index = name.partition(":")
    if kind == "cpu":
        return name, ["CPUExecutionProvider"]
    if kind != "cuda":
        raise DequantizerError(f"device {name!r}: engine='onnx' runs on cpu or cuda")
    if "CUDAExecutionProvider" not in available:
        raise DequantizerError(f"device {name!r} with engine='onnx' needs onnxruntime's CUDA provider (pip install "
                               "onnxruntime-gpu); use --device cpu")
    if index and not index.isdigit():
        raise DequantizerError(f"device {name!r}: use cuda or cuda:N")
    return name, [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def session(ort, model: str | bytes, chosen: list):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings (e.g. about unused initializers) are not the user's
    return ort.InferenceSession(model, options, providers=chosen)


class OnnxGenerator:
    """An exported generator run by onnxruntime, called as ``Restorer`` calls a torch generator:
    ``generator(x, quality)`` and ``generator(x, None, return_quality=True)`` on [-1, 1] NCHW tensors."""

    def __init__(self, inference_session, metadata: dict[str, Any]):
        self.session = inference_session
        self.scale = int(metadata.get("scale", 1))
        self.aware = "quality" in {item.name for item in inference_session.get_inputs()}
        if self.aware:
            self.quality_head = True  # what Restorer and choose_quality look for (hasattr) in a quality-aware model

    def to(self, *args, **kwargs) -> OnnxGenerator:  # Restorer moves its generator; onnxruntime places it itself
        return self

    def eval(self) -> OnnxGenerator:
        return self

    def __call__(self, x: torch.Tensor, quality: torch.Tensor | None = None, return_quality: bool = False):
        feeds = {"image": x.detach().float().cpu().contiguous().numpy()}
        if self.aware:
            told = torch.zeros(len(x)) if quality is None else quality.detach().float().cpu().reshape(-1)
            feeds["quality"] = told.expand(len(x)).contiguous().numpy()  # 0: predict it
        outputs = self.session.run(None, feeds)
        restored = torch.from_numpy(outputs[0]).to(x.device)
        if not return_quality:
            return restored
        return restored, torch.from_numpy(outputs[1]).to(x.device) if self.aware else None


def load_onnx_generator(path: Path, device: str | torch.device | None = None) -> tuple[OnnxGenerator, dict[str, Any]]:
    """An ONNX file written by ``export_onnx`` as a generator for ``Restorer``, and its metadata."""
    ort = import_onnxruntime()
    _, chosen = providers(device)
    if not path.is_file():
        raise DequantizerError(f"model file {path} does not exist")
    try:
        inference_session = session(ort, str(path), chosen)
    except Exception as error:  # onnxruntime's own exception types, for a damaged or foreign file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DequantizerError(f"cannot read {path}: not an ONNX model onnxruntime can run ({reason})") from None
    # onnxruntime falls back to the CPU, quietly, where its CUDA provider finds no usable GPU.
    if device is not None and "CUDAExecutionProvider" in str(chosen) and \
            "CUDAExecutionProvider" not in inference_session.get_providers():
        raise DequantizerError(f"device {str(device)!r}: onnxruntime found no usable GPU there; use --device cpu")
    try:
        metadata = {key: json.loads(value) for key, value in
                    inference_session.get_modelmeta().custom_metadata_map.items()}
    except json.JSONDecodeError:
        metadata = {}
    if "onnx_format" not in metadata or "overlap" not in metadata:
        raise DequantizerError(f"{path} was not exported by dequantizer (no metadata): make it with "
                               "`dequantizer export --onnx`")
    if metadata["onnx_format"] != EXPORT_FORMAT:
        raise DequantizerError(f"{path} is in ONNX export format {metadata['onnx_format']}, this dequantizer reads "
                               f"{EXPORT_FORMAT}: export it again")
    return OnnxGenerator(inference_session, metadata), metadata


def onnx_model_file(model: str | Path | None) -> Path:
    """The .onnx file for engine="onnx": the model itself if it is one, else its cached export."""
    path = resolve_model(model)
    return path if path.suffix == ".onnx" else cached_export(path)

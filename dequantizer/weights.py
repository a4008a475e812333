"""Weights: reading and writing them without unpickling code (safetensors for generators, ``weights_only`` for
checkpoints), building a generator from the config they carry (only the networks' own modules may be named), the
models shipped in the package, and exporting a training checkpoint's generator."""

from __future__ import annotations

import functools
import importlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from dequantizer.errors import DequantizerError
from dequantizer.files import atomic_write
from dequantizer.tiling import overlap_for


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as plain tensors and containers; a checkpoint that needs code to unpickle is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise DequantizerError(f"cannot read {path}: {error.strerror or error}") from None
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):  # a pickle that names code to run: never loaded, whatever torch says
            raise DequantizerError(
                f"refusing to load {path}: it holds code objects, not only weights; dequantizer loads plain-weights "
                "checkpoints only (export the generator with `dequantizer export` from a checkpoint you trust)"
            ) from None
        raise DequantizerError(f"cannot read {path}: not a PyTorch checkpoint (corrupt or truncated?)") from None
    except Exception:  # the weights-only unpickler fails on garbage in many ways (EOF, KeyError, IndexError, zip)
        raise DequantizerError(f"cannot read {path}: not a PyTorch checkpoint (corrupt or truncated?)") from None


def generator_state_from_checkpoint(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The generator's weights from a checkpoint's state dict: the EMA copy when the run kept one."""
    state = checkpoint["state_dict"]
    prefix = "ema.module." if any(key.startswith("ema.module.") for key in state) else "generator."
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def save_generator(
    state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, Any], half: bool = False
) -> Path:
    """Generator weights as safetensors; ``metadata`` (architecture config, training facts) stored as JSON strings.

    ``half`` stores floating-point weights as fp16 (half the file; loading casts them back to the model's fp32,
    and inference in bf16 rounds more coarsely than fp16 storage does)."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    if half:
        tensors = {key: value.half() if value.is_floating_point() else value for key, value in tensors.items()}
    text = {key: json.dumps(value) for key, value in metadata.items()}
    return atomic_write(path, save(tensors, metadata=text))


def load_generator_state(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise DequantizerError(f"cannot read {path}: not a safetensors file (corrupt or truncated?): {error}") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            text = file.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise DequantizerError(f"cannot read {path}: not a safetensors file (corrupt or truncated?): {error}") from None
    try:
        return {key: json.loads(value) for key, value in text.items()}
    except json.JSONDecodeError:
        raise DequantizerError(f"cannot read {path}: its metadata is not dequantizer's (JSON values)") from None


# Config targets a weights file may name: building a generator must never call arbitrary code.
ALLOWED_TARGET_PREFIXES = ("dequantizer.models.", "torch.nn.")


def check_targets(config: Any) -> None:
    """Refuse a generator config whose ``_target_``s point outside the networks' modules."""
    if isinstance(config, dict):
        target = config.get("_target_")
        if target is not None and not str(target).startswith(ALLOWED_TARGET_PREFIXES):
            raise DequantizerError(
                f"refusing to build {target!r}: model configs may only name {ALLOWED_TARGET_PREFIXES}"
            )
        for value in config.values():
            check_targets(value)
    elif isinstance(config, list):
        for value in config:
            check_targets(value)


def build(config: Any) -> Any:
    """What a config describes, as Hydra's ``instantiate`` builds it (``_target_``, ``_partial_``, nested), without
    Hydra: restoring a photo loads torch and the model, nothing more. Call ``check_targets`` first."""
    if isinstance(config, list):
        return [build(value) for value in config]
    if not isinstance(config, dict):
        return config
    arguments = {key: build(value) for key, value in config.items() if key not in ("_target_", "_partial_")}
    if "_target_" not in config:
        return arguments
    module, _, name = config["_target_"].rpartition(".")
    target = getattr(importlib.import_module(module), name)
    return functools.partial(target, **arguments) if config.get("_partial_") else target(**arguments)


def build_generator(config: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """A generator from its config, its weights loaded, in eval mode without gradients."""
    check_targets(config)
    generator = build(config)
    try:
        generator.load_state_dict(state)
    except RuntimeError as error:
        raise DequantizerError(f"the weights do not fit their architecture: {str(error).splitlines()[0]}") from None
    return generator.eval().requires_grad_(False)


def load_generator(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A generator and its metadata from a ``.safetensors`` export or a Lightning ``.ckpt`` (never unpickling code)."""
    path = Path(path)
    if not path.is_file():
        raise DequantizerError(f"model file {path} does not exist")
    if path.suffix == ".onnx":
        raise DequantizerError(f"{path} is an ONNX model: restore with engine='onnx' (--engine onnx)")
    if path.suffix == ".safetensors":
        metadata = read_metadata(path)
        if "generator" not in metadata:
            raise DequantizerError(f"{path} has no 'generator' architecture in its metadata")
        return build_generator(metadata["generator"], load_generator_state(path)), metadata
    checkpoint, config = read_training_checkpoint(path)
    metadata = {"generator": config, "source": str(path)}
    return build_generator(config, generator_state_from_checkpoint(checkpoint)), metadata


def read_training_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A training checkpoint and its generator's config, or one line saying it is not one of ours."""
    checkpoint = read_checkpoint(path)
    config = checkpoint.get("hyper_parameters", {}).get("generator")
    if config is None:
        raise DequantizerError(f"{path} is not a dequantizer training checkpoint (no generator config)")
    return checkpoint, config


# -- the models shipped in the package -------------------------------------------------------------------------------
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
DEFAULT_MODEL = "blind"


def shipped_models() -> dict[str, Path]:
    """Name -> weights file of every model shipped inside the package."""
    return {path.stem: path for path in sorted(PRETRAINED_DIR.glob("*.safetensors"))}


def resolve_model(model: str | Path | None) -> Path:
    """A shipped model's name (None: the default), or a path to a .safetensors / .ckpt (/ .onnx) file."""
    name = DEFAULT_MODEL if model is None else str(model)
    shipped = shipped_models()
    if name in shipped:
        return shipped[name]
    path = Path(name).expanduser()
    if path.suffix in (".safetensors", ".ckpt", ".onnx") or path.exists():
        return path
    available = ", ".join(shipped) or "none"
    raise DequantizerError(f"no shipped model named {name!r} (shipped: {available}); or pass a "
                           ".safetensors/.ckpt/.onnx path")


def run_config(checkpoint_path: Path) -> dict[str, Any]:
    """The Hydra config of the run that wrote ``outputs/<run>/checkpoints/x.ckpt`` (its latest attempt), or {}."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    attempts = sorted(checkpoint_path.resolve().parent.parent.glob("runs/*/.hydra/config.yaml"))
    if not attempts:
        return {}
    config = OmegaConf.load(attempts[-1])
    quality = OmegaConf.select(config, "data.quality")
    return {
        "qualities": OmegaConf.to_container(quality) if OmegaConf.is_config(quality) else quality,  # [lo, hi] or one
        "training_data": instantiate(config.data.source).describe() if "source" in config.get("data", {}) else None,
        "experiment": config.get("experiment_name"),
    }


def validation_record(checkpoint_path: Path, best_psnr: float) -> dict[str, float]:
    """The validation that made ``best_psnr`` best, JPEG input beside it, from the run's CSV logs (if it kept them)."""
    import csv

    for metrics in sorted(checkpoint_path.resolve().parent.parent.glob("runs/*/csv/version_*/metrics.csv")):
        with metrics.open() as file:
            for row in csv.DictReader(file):
                if row.get("val/psnr") and abs(float(row["val/psnr"]) - best_psnr) < 1e-4:
                    keys = ("val/psnr", "val/psnr_jpeg", "val/ssim", "val/ssim_jpeg")
                    return {key: round(float(row[key]), 4) for key in keys if row.get(key)}
    return {"val/psnr": round(best_psnr, 4)}


def export_checkpoint(
    checkpoint_path: str | Path, output: str | Path, description: str = "", command: str = "",
    max_quality: int | None = None, half: bool = False, training_data: str | None = None,
) -> Path:
    """A training checkpoint's generator (EMA copy when kept) as safetensors, with architecture and training facts.

    ``max_quality``: JPEG files above this quality are passed through by ``dequantize`` (measure it first).
    ``half``: store the weights as fp16. ``training_data``: what the model was trained on, and its terms.
    The tile overlap that its receptive field needs is recorded too (``overlap``), so restoring need not measure it.
    """
    checkpoint_path = Path(checkpoint_path)
    checkpoint, config = read_training_checkpoint(checkpoint_path)
    best = next((state for key, state in checkpoint.get("callbacks", {}).items() if "val/psnr" in key), {})
    score = best.get("best_model_score")
    metadata = {
        "generator": config,
        "description": description,
        "command": command,
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "validation": validation_record(checkpoint_path, float(score)) if score is not None else {},
        "max_quality": max_quality,
        **run_config(checkpoint_path),
    }
    if training_data:
        metadata["training_data"] = training_data
    state = generator_state_from_checkpoint(checkpoint)
    metadata["overlap"] = overlap_for(build_generator(config, state))
    return save_generator(state, output, metadata, half=half)

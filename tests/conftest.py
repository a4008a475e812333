"""Shared fixtures: composed configs, the built-in photos exported once, and a train.py runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import dequantizer.config  # noqa: F401  (registers resolvers)
from dequantizer.data import SamplePhotos

ROOT = Path(__file__).resolve().parents[1]
# Every selectable experiment, e.g. "beta", "ours/beta" and the stages of a shipped model, "blind/1_gpu".
EXPERIMENTS = sorted(
    path.relative_to(ROOT / "conf" / "experiment").with_suffix("").as_posix()
    for path in (ROOT / "conf" / "experiment").rglob("*.yaml")
)
# Small and fast: random-weight VGG, tiny crops, a few steps, no W&B.
FAST = [
    "loss.content.pretrained=false",
    "data.num_workers=0",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.samples_per_epoch=8",
    "data.val_crops_per_photo=1",
    "logger=none",
]


def compose_config(overrides: list[str], root: Path):
    """The config train.py would see, with Hydra's runtime values set (run dirs, override_dirname)."""
    os.environ["DEQUANTIZER_ROOT"] = str(root)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(root / "outputs" / "compose-test")
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory) -> Path:
    """scikit-image's photos exported once for the whole session."""
    root = tmp_path_factory.mktemp("data") / "samples"
    SamplePhotos(root).prepare()
    return root


TINY_GENERATOR = {"_target_": "dequantizer.models.Generator", "channels": 8, "num_residual_blocks": 1,
                  "batch_norm": False, "output_activation": None, "image_residual": True, "space_to_depth": 2}


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    """A tiny generator with a non-identity correction, exported as safetensors like a shipped model."""
    import torch

    from dequantizer.models import Generator
    from dequantizer.weights import save_generator

    torch.manual_seed(0)
    generator = Generator(**{key: value for key, value in TINY_GENERATOR.items() if key != "_target_"})
    torch.nn.init.normal_(generator.tail.weight, std=0.01)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_generator(generator.state_dict(), path, {"generator": TINY_GENERATOR, "qualities": [1, 95]})
    return path


def run_train(root: Path, *overrides: str, samples: Path | None = None, multirun: bool = False, env=None,
              timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run train.py as a user would, with all outputs under ``root``. No time limit by default: a busy machine is
    slow, not wrong; ``timeout`` is for tests whose failure is a hang."""
    command = [sys.executable, str(ROOT / "train.py")] + (["-m"] if multirun else []) + list(overrides)
    if samples is not None and not (root / "data" / "samples").exists():
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / "samples").symlink_to(samples)
    return subprocess.run(command, cwd=root, env=train_environment(root, env), capture_output=True, text=True,
                          timeout=timeout)


def train_environment(root: Path, env=None) -> dict[str, str]:
    """train.py's environment in tests: outputs under ``root``, W&B offline, tests/probes.py importable."""
    return {**os.environ, "DEQUANTIZER_ROOT": str(root), "WANDB_MODE": "offline",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")])),
            **(env or {})}

"""Fixtures: the built-in photos exported once, and a tiny generator's weights file. Shared functions and constants
(compose_config, run_train, FAST, the tiny networks, ...) are in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TINY_GENERATOR


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory) -> Path:
    """scikit-image's photos exported once for the whole session."""
    from dequantizer.data import SamplePhotos

    root = tmp_path_factory.mktemp("data") / "samples"
    SamplePhotos(root).prepare()
    return root


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

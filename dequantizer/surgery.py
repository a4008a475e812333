"""Weight surgery on the networks before training, on plain ``nn.Module``s and state dicts:

- ``initialise_from``: start from another run's weights (``model.init_from``: a .ckpt, or generator .safetensors),
  e.g. the paper's Phi starting from Gimel;
- ``grow``: the file may hold fewer residual blocks per level (a ``QualityUNet`` with fewer
  ``encoder_blocks``/``decoder_blocks``): the blocks it lacks start as the identity (their second convolution at
  zero), so the deeper network starts out restoring exactly as the one it grew from;
- ``trainable``: names of the generator's submodules to train (e.g. ``[quality_head]``), the rest frozen (its
  weights; BatchNorm statistics, which ``QualityUNet`` has none of, would still update). Parts that a run trains may
  start afresh where the file lacks their weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from dequantizer.errors import DequantizerError
from dequantizer.weights import generator_state_from_checkpoint, load_generator_state, read_checkpoint

log = logging.getLogger(__name__)


def initialise_from(path: str | Path, generator: nn.Module, discriminator: nn.Module,
                    trainable: Sequence[str] | None = None, grow: bool = False) -> None:
    """Load the weights in ``path`` into the networks: the generator's (from a .ckpt, the EMA copy when the run kept
    one: the generator it validated and exported) and, from a .ckpt that has them, the discriminator's."""
    file = Path(path)
    if not file.is_file():
        raise DequantizerError(
            f"model.init_from={path} does not exist: train that experiment first, or set model.init_from=null"
        )
    try:
        if file.suffix == ".safetensors":
            load_generator_weights(generator, load_generator_state(file), trainable, grow)
        else:
            checkpoint = read_checkpoint(file)
            load_generator_weights(generator, generator_state_from_checkpoint(checkpoint), trainable, grow)
            prefix = "discriminator."
            state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
            if state:
                discriminator.load_state_dict(state)
    except RuntimeError as error:
        raise DequantizerError(
            f"model.init_from={path} holds a different architecture: {str(error).splitlines()[0]}"
        ) from None
    log.info("initialised weights from %s", path)


def load_generator_weights(generator: nn.Module, state: dict[str, torch.Tensor],
                           trainable: Sequence[str] | None = None, grow: bool = False) -> None:
    """Strictly (a ``RuntimeError`` otherwise), except that the parts ``trainable`` names start afresh where
    ``state`` has none of their weights or other shapes (e.g. a quality head that reads other features), and that
    with ``grow`` the residual blocks ``state`` lacks start as the identity."""
    if trainable is None and not grow:
        generator.load_state_dict(state)
        return
    own = generator.state_dict()
    trained = tuple(f"{name}." for name in trainable or ())
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    kept = {k: v for k, v in state.items() if k in fits or not k.startswith(trained)}
    missing, unexpected = generator.load_state_dict(kept, strict=False)
    new_blocks = new_residual_blocks(generator, missing, state) if grow else set()
    left_missing = [k for k in missing if not k.startswith(trained) and residual_block_of(k) not in new_blocks]
    if left_missing or unexpected:
        raise RuntimeError(f"missing {left_missing[:3]}, unexpected {unexpected[:3]}")
    frozen_new = sorted(name for name in new_blocks if trained and not f"{name}.".startswith(trained))
    if frozen_new:
        raise DequantizerError(f"model.grow: the new blocks {frozen_new} would stay the identity, frozen by "
                               f"model.trainable={list(trainable)}: train them too, or grow nothing")
    for name in sorted(new_blocks):
        conv2 = generator.get_submodule(name).conv2
        with torch.no_grad():
            conv2.weight.zero_()
            conv2.bias.zero_()
    if new_blocks:
        log.info("init_from: %d new residual blocks start as the identity: %s", len(new_blocks), sorted(new_blocks))
    fresh = sorted({k.split(".")[0] for k in missing
                    if k.startswith(trained) and residual_block_of(k) not in new_blocks})
    if fresh:
        log.info("init_from: %s start afresh (not in the file, or of other shapes)", fresh)


def residual_block_of(key: str) -> str:
    """The residual block a generator weight belongs to: ``decoder.2.4.conv1.weight`` -> ``decoder.2.4``."""
    return ".".join(key.split(".")[:3])


def new_residual_blocks(generator: nn.Module, missing: Sequence[str], state: dict[str, torch.Tensor]) -> set[str]:
    """The residual blocks (``encoder.L.i``/``decoder.L.i``) of which ``state`` holds no weight at all."""
    held = {residual_block_of(k) for k in state}
    candidates = {residual_block_of(k) for k in missing if k.startswith(("encoder.", "decoder."))}
    return {name for name in candidates if name not in held and hasattr(generator.get_submodule(name), "conv2")}


def freeze_all_but(generator: nn.Module, trainable: Sequence[str] | None) -> list[nn.Parameter]:
    """The parameters of the submodules ``trainable`` names (all of them when None); the other submodules are frozen."""
    if trainable is None:
        return list(generator.parameters())
    children = dict(generator.named_children())
    unknown = [name for name in trainable if name not in children]
    if unknown:
        raise DequantizerError(
            f"model.trainable names {unknown}, which this generator lacks: choose from {sorted(children)}"
        )
    for name, child in children.items():
        child.requires_grad_(name in trainable)
    return [p for name in trainable for p in children[name].parameters()]

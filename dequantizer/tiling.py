"""Tile geometry for restoring images of any size: how far a network sees, how much tiles overlap, where they start,
and how their overlaps are blended. Tiles start at multiples of 8, so every tile sees the JPEG block grid as the whole
image does."""

import numpy as np
import torch
from torch import nn


def receptive_radius(generator: nn.Module, mass: float = 0.99, size: int = 160) -> int:
    """The radius (input pixels) of the square around an output pixel that holds ``mass`` of its input gradient, on a
    seeded random input: how far a tile's edge must stay from the pixels it is trusted for."""
    scale = getattr(generator, "scale", 1)
    pixels = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pixels = pixels.to(next(generator.parameters()).device).requires_grad_(True)
    centre = size // 2
    with torch.inference_mode(False), torch.enable_grad():
        generator(pixels)[0, :, centre * scale, centre * scale].sum().backward()
    influence = pixels.grad[0].abs().sum(0)
    total = influence.sum()
    for radius in range(centre):
        window = np.s_[centre - radius : centre + radius + 1, centre - radius : centre + radius + 1]
        if influence[window].sum() >= mass * total:
            return radius
    return centre


def tile_overlap(radius: int) -> int:
    """Overlap of neighbouring tiles for a receptive radius: twice the radius, in whole 8-px blocks (at least 16).
    The blend window trusts neither tile in the outer quarter of the overlap and ramps across its middle half."""
    return max(16, -(-2 * radius // 8) * 8)


def overlap_for(generator: nn.Module) -> int:
    """The tile overlap a generator needs: ``tile_overlap`` of its ``receptive_radius``."""
    return tile_overlap(receptive_radius(generator))


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis; with ``length``, ``tile`` and ``stride`` multiples of 8, all are 8-aligned."""
    return sorted(set(range(0, max(length - tile, 0), stride)) | {max(length - tile, 0)})


def blend_window(height: int, width: int, overlap: int) -> torch.Tensor:
    """Blending weights for one tile: near 0 in the outer quarter of the overlap (where the zero padding at the
    tile's edge still reaches), rising to 1 across the middle half, 1 inside. Never exactly 0, so image borders,
    covered by one tile only, keep their value."""

    def ramp(size: int) -> torch.Tensor:
        distance = torch.arange(size, dtype=torch.float32)
        distance = torch.minimum(distance, size - 1 - distance)
        margin, width = overlap // 4, max(overlap // 2, 1)
        return ((distance + 1 - margin) / width).clamp(1e-3, 1.0)

    return ramp(height)[:, None] * ramp(width)[None, :]

"""Judging detail, for perceptual (GAN-trained) models: how much fine detail an image keeps, how close its features
are to the original's in a network no model here is trained against, and comparison strips of the most detailed crop.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dequantizer.files import atomic_write
from dequantizer.losses import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD, efficientnet_lite
from dequantizer.metrics import to_unit_tensor

CROP = 128  # side of the comparison crops, in pixels of the photo


def detail(rgb: np.ndarray) -> float:
    """The mean gradient magnitude of an image's luma (finite differences, 8x8 block edges included); the *detail
    ratio* is an image's detail over its original's."""
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return float(np.abs(np.diff(luma, axis=0)).mean() + np.abs(np.diff(luma, axis=1)).mean())


class FeatureDistance:
    """LPIPS without its learned weights, on a frozen EfficientNet-Lite (Lite1 unless ``network`` is given): at the
    end of each of its first five stages (1/2 to 1/16 resolution) every position's channel vector is unit-normalised,
    and the squared differences are averaged over positions and summed over stages. Lower is closer."""

    def __init__(self, network: torch.nn.Module | None = None):
        self.network = network if network is not None else efficientnet_lite(1)
        blocks = self.network._blocks
        widths = [block._block_args.output_filters for block in blocks]
        # The last block of each stage (where the width changes next), the first five stages only: the 1/32 ones
        # are a few positions wide on small photos.
        self.stage_ends = [i for i in range(len(blocks) - 1) if widths[i + 1] != widths[i]][:5]
        normalisation = (EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
        self.mean, self.std = (torch.tensor(value).view(1, 3, 1, 1) for value in normalisation)

    @torch.inference_mode()
    def features(self, rgb: np.ndarray) -> list[torch.Tensor]:
        network = self.network
        x = (to_unit_tensor(rgb) - self.mean) / self.std
        x = network._swish(network._bn0(network._conv_stem(x)))
        stages = []
        for index, block in enumerate(network._blocks[: self.stage_ends[-1] + 1]):
            x = block(x)
            if index in self.stage_ends:
                stages.append(torch.nn.functional.normalize(x, dim=1, eps=1e-10))
        return stages

    def __call__(self, image: np.ndarray, reference: np.ndarray) -> float:
        pairs = zip(self.features(image), self.features(reference), strict=True)
        return float(sum(((a - b) ** 2).sum(dim=1).mean() for a, b in pairs))


def detailed_crop(rgb: np.ndarray) -> tuple[int, int]:
    """Top-left corner of the CROP x CROP window with the most fine detail (on an 8-px grid), so crops show texture."""
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    energy = np.abs(np.diff(luma, axis=0))[:, :-1] + np.abs(np.diff(luma, axis=1))[:-1, :]
    best, corner = -1.0, (0, 0)
    for top in range(0, energy.shape[0] - CROP + 1, 8):
        for left in range(0, energy.shape[1] - CROP + 1, 8):
            score = energy[top : top + CROP, left : left + CROP].mean()
            if score > best:
                best, corner = score, (top, left)
    return corner


def save_strip(images: dict[str, np.ndarray], corner: tuple[int, int], path: Path) -> None:
    """The CROP x CROP crops at ``corner`` of each image, 2x enlarged, side by side, as a PNG at ``path``."""
    top, left = corner
    tiles = [Image.fromarray(image[top : top + CROP, left : left + CROP]).resize((2 * CROP, 2 * CROP), Image.NEAREST)
             for image in images.values()]
    strip = Image.new("RGB", (len(tiles) * (2 * CROP + 4) - 4, 2 * CROP), "white")
    for index, tile in enumerate(tiles):
        strip.paste(tile, (index * (2 * CROP + 4), 0))
    buffer = io.BytesIO()
    strip.save(buffer, "PNG")
    atomic_write(path, buffer.getvalue())


def block_periodic_energy(rgb: np.ndarray) -> float:
    """The 8x8-periodic energy of an image's luma, the blockiness a viewer sees: along each axis, the mean absolute
    luma step between neighbours is taken at each of the 8 positions within the JPEG block grid (from the image's
    origin); the spread of these 8 means around their mean, squared and relative to it, summed over both axes. Steps
    that are larger at block edges (or any texture repeating every 8 pixels) raise it; a photo that never was a JPEG
    has next to none."""
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) if rgb.ndim == 3 else rgb.astype(np.float64)
    energy = 0.0
    for steps in (np.abs(np.diff(luma, axis=1)), np.abs(np.diff(luma, axis=0)).T):
        positions = np.array([steps[:, phase::8].mean() for phase in range(8)])  # phase 7: across block edges
        energy += float(((positions - positions.mean()) ** 2).mean() / max(positions.mean(), 1e-12) ** 2)
    return energy

"""The paper's networks: an SRResNet-style generator and an SRGAN-style discriminator.

Plain ``nn.Module``s that know nothing of Lightning. Both work on images in [-1, 1] (the paper's tanh range).
Activations are factories (``functools.partial`` or a class) so that every use gets its own module: the paper's code
shared one PReLU between all residual blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ActivationFactory = Callable[[], nn.Module]


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], channels_last (what the convolutions run fastest on)."""
    return (images.float() / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] network output -> [0, 1]."""
    return (images.float() + 1.0) / 2.0


def _prelu() -> nn.Module:
    return nn.PReLU()


def _leaky_relu() -> nn.Module:
    return nn.LeakyReLU(0.2)


class ResidualBlock(nn.Module):
    """conv -> BN -> activation -> conv -> BN, plus the block's input."""

    def __init__(self, channels: int, activation: ActivationFactory, batch_norm: bool = True):
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(channels)) if batch_norm else nn.Identity
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm),
            norm(),
            activation(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm),
            norm(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleBlock(nn.Module):
    """conv to 4x channels -> pixel shuffle (2x larger) -> activation."""

    def __init__(self, channels: int, activation: ActivationFactory):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2), activation())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Generator(nn.Module):
    """conv -> R residual blocks -> conv (+ long skip from the first conv) -> U upsample blocks -> conv to RGB.

    ``output_activation`` (the paper's tanh) is applied to the last conv. With ``image_residual`` the network predicts
    a correction that is added to the (upsampled) input, so an untrained generator starts at the JPEG baseline: the last
    conv is zero-initialised for that reason.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        channels: int = 64,
        num_residual_blocks: int = 5,
        num_upsample_blocks: int = 0,
        first_kernel_size: int = 9,
        last_kernel_size: int = 9,
        batch_norm: bool = True,
        activation: ActivationFactory = _prelu,
        output_activation: ActivationFactory | None = nn.Tanh,
        image_residual: bool = False,
        space_to_depth: int = 1,
    ):
        super().__init__()
        if num_residual_blocks < 0 or num_upsample_blocks < 0:
            raise ValueError("num_residual_blocks and num_upsample_blocks must be >= 0")
        if image_residual and in_channels != out_channels:
            raise ValueError("image_residual needs in_channels == out_channels")
        if space_to_depth < 1:
            raise ValueError("space_to_depth must be >= 1")
        self.scale = 2**num_upsample_blocks
        self.image_residual = image_residual
        # space_to_depth f > 1 folds fxf pixel blocks into channels: the body runs at 1/f^2 of the pixels,
        # with f times the receptive field, for the same cost as a body f times narrower at full resolution.
        self.fold = nn.PixelUnshuffle(space_to_depth) if space_to_depth > 1 else nn.Identity()
        self.unfold = nn.PixelShuffle(space_to_depth) if space_to_depth > 1 else nn.Identity()
        in_channels, out_channels = in_channels * space_to_depth**2, out_channels * space_to_depth**2
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, channels, first_kernel_size, padding=first_kernel_size // 2), activation()
        )
        self.body = nn.Sequential(
            *(ResidualBlock(channels, activation, batch_norm) for _ in range(num_residual_blocks)),
            nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm),
            nn.BatchNorm2d(channels) if batch_norm else nn.Identity(),
        )
        self.upsample = nn.Sequential(*(UpsampleBlock(channels, activation) for _ in range(num_upsample_blocks)))
        self.tail = nn.Conv2d(channels, out_channels, last_kernel_size, padding=last_kernel_size // 2)
        self.output_activation = output_activation() if output_activation is not None else nn.Identity()
        if image_residual:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.fold(x))
        features = features + self.body(features)  # the long skip from the first conv
        out = self.output_activation(self.unfold(self.tail(self.upsample(features))))
        if self.image_residual:
            skip = x if self.scale == 1 else F.interpolate(x, scale_factor=self.scale, mode="bilinear")
            out = out + skip
        return out


class Discriminator(nn.Module):
    """conv/BN/LeakyReLU stack -> global average pool -> dense layers as 1x1 convs -> one real/fake logit per image.

    ``channels`` and ``strides`` list the stack after the first conv (which has no BN), as in SRGAN.
    """

    def __init__(
        self,
        in_channels: int = 3,
        first_channels: int = 64,
        channels: Sequence[int] = (64, 128, 128, 256, 256, 512, 512),
        strides: Sequence[int] = (2, 1, 2, 1, 2, 1, 2),
        hidden_features: int = 1024,
        activation: ActivationFactory = _leaky_relu,
    ):
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError("discriminator channels and strides must have the same length")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, first_channels, 3, padding=1), activation()]
        previous = first_channels
        for width, stride in zip(channels, strides, strict=True):
            layers += [
                nn.Conv2d(previous, width, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width),
                activation(),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(previous, hidden_features, 1),
            activation(),
            nn.Conv2d(hidden_features, 1, 1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N,): positive means "real"."""
        return self.classifier(self.features(x)).squeeze(1)

"""The networks: the paper's SRResNet-style generator, the shipped default's multi-scale quality-aware restorer
(``QualityUNet``), and an SRGAN-style discriminator.

Plain ``nn.Module``s that know nothing of Lightning. All work on images in [-1, 1] (the paper's tanh range).
Generators take ``forward(x, quality=None)``: ``quality`` is the JPEG quality (1-100) per image, used by
quality-aware networks and ignored by blind ones.
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

    def forward(self, x: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        """``quality`` is ignored: the paper's generator does not know how hard its input was compressed."""
        features = self.head(self.fold(x))
        features = features + self.body(features)  # the long skip from the first conv
        out = self.output_activation(self.unfold(self.tail(self.upsample(features))))
        if self.image_residual:
            skip = x if self.scale == 1 else F.interpolate(x, scale_factor=self.scale, mode="bilinear")
            out = out + skip
        return out


QUALITY_EMBEDDING = 128  # width of the quality embedding that every conditioned block reads its scale/shift from


class ConditionedBlock(nn.Module):
    """conv -> per-channel scale and shift from the quality embedding -> ReLU -> conv, plus the block's input.

    The scale/shift layer starts at zero (no modulation) and the second conv small, so a deep stack starts near the
    identity without normalisation layers (none here: a tile must not depend on the other tiles of its batch).
    """

    def __init__(self, channels: int, conditioned: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.activation = nn.ReLU(inplace=True)
        self.modulation = nn.Linear(QUALITY_EMBEDDING, 2 * channels) if conditioned else None
        with torch.no_grad():
            self.conv2.weight.mul_(0.1)
            if self.modulation is not None:
                nn.init.zeros_(self.modulation.weight)
                nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(x)
        if self.modulation is not None:
            scale, shift = self.modulation(embedding)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return x + self.conv2(self.activation(h))


class QualityUNet(nn.Module):
    """A multi-scale, quality-aware blind JPEG restorer (the shipped default's network).

    The image is folded 2x2 into channels, then an encoder runs at 1/2, 1/4 and 1/8 of the resolution: at 1/8 one
    position is one 8x8 JPEG block (tiles and training crops start on the JPEG grid), and its convolutions see the
    neighbouring blocks and 16x16 chroma blocks of 4:2:0. A small head predicts the JPEG quality from the 1/8
    features (used when the caller does not know it); the quality, known or predicted, is embedded and modulates every
    decoder block (per-channel scale and shift). The decoder climbs back with additive skips and the network predicts
    a correction to all three RGB planes (chroma as well as luma), added to the input.

    Args:
        channels: widths of the 1/2, 1/4 and 1/8 levels.
        encoder_blocks, decoder_blocks: residual blocks per level, encoder (unconditioned) and decoder (conditioned).
        quality_aware: False builds the same U-Net blind (no quality head, no modulation): for ablations.
        quality_head_input: what the quality head reads: ``"bottleneck"``, the mean of the 1/8 features (one value
            per channel); or ``"pyramid"``, the mean and the standard deviation over positions of each level's
            encoder features (1/2, 1/4 and 1/8), so that it also sees how much fine detail is left, which is what
            tells quality 95 from 100.
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256),
        encoder_blocks: Sequence[int] = (2, 2, 4),
        decoder_blocks: Sequence[int] = (2, 2, 4),
        quality_aware: bool = True,
        quality_head_input: str = "bottleneck",
    ):
        super().__init__()
        if quality_head_input not in ("bottleneck", "pyramid"):
            raise ValueError(f"quality_head_input={quality_head_input!r}: choose 'bottleneck' or 'pyramid'")
        self.quality_head_input = quality_head_input
        if not len(channels) == len(encoder_blocks) == len(decoder_blocks) == 3:
            raise ValueError("channels, encoder_blocks and decoder_blocks need one entry per level (1/2, 1/4, 1/8)")
        if min(encoder_blocks) < 0 or min(decoder_blocks) < 0 or min(channels) < 1:
            raise ValueError("block counts must be >= 0 and channels >= 1")
        self.scale = 1
        self.fold, self.unfold = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.head = nn.Conv2d(3 * 4, channels[0], 3, padding=1)
        self.encoder = nn.ModuleList(
            nn.ModuleList(ConditionedBlock(width, conditioned=False) for _ in range(count))
            for width, count in zip(channels, encoder_blocks, strict=True)
        )
        self.down = nn.ModuleList(
            nn.Conv2d(channels[level], channels[level + 1], 2, stride=2) for level in range(2)
        )
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[level + 1], channels[level] * 4, 1), nn.PixelShuffle(2))
            for level in range(2)
        )
        self.decoder = nn.ModuleList(
            nn.ModuleList(ConditionedBlock(width, conditioned=quality_aware) for _ in range(count))
            for width, count in zip(channels, decoder_blocks, strict=True)
        )
        if quality_aware:
            head_inputs = channels[2] if quality_head_input == "bottleneck" else 2 * sum(channels)
            self.quality_head = nn.Sequential(
                nn.Linear(head_inputs, 64), nn.ReLU(inplace=True), nn.Linear(64, 1), nn.Sigmoid()
            )
            self.quality_embedding = nn.Sequential(
                nn.Linear(1, QUALITY_EMBEDDING), nn.SiLU(), nn.Linear(QUALITY_EMBEDDING, QUALITY_EMBEDDING), nn.SiLU()
            )
        self.tail = nn.Conv2d(channels[0], 3 * 4, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # starts at the identity: output = input
        nn.init.zeros_(self.tail.bias)

    def forward(
        self, x: torch.Tensor, quality: torch.Tensor | None = None, return_quality: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Restored image; with ``return_quality`` also the predicted quality (1-100, shape (N,)).

        ``quality`` (1-100 per image, or None to use the predicted one) sets how hard the decoder restores; an image
        whose quality is 0 or less uses its predicted one (so that one exported ONNX graph serves both cases).
        """
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % 8, -width % 8  # whole 8x8 blocks for the 1/8 level: replicate the edge, as JPEG does
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        skips = []
        h = self.head(self.fold(padded))
        for level, blocks in enumerate(self.encoder):
            for block in blocks:
                h = block(h)
            if level < 2:
                skips.append(h)
                h = self.down[level](h)
        predicted = embedding = None
        if hasattr(self, "quality_head"):
            with torch.autocast(x.device.type, enabled=False):
                predicted = self.quality_head(self._quality_features(skips, h)).squeeze(1) * 99 + 1
            if quality is None:
                condition = predicted.detach()
            else:
                quality = quality.to(x.device, torch.float32).reshape(-1)
                condition = torch.where(quality > 0, quality, predicted.detach())
            embedding = self.quality_embedding((condition / 100).expand(x.shape[0])[:, None])
        for level in (2, 1, 0):
            for block in self.decoder[level]:
                h = block(h, embedding)
            if level > 0:
                h = self.up[level - 1](h) + skips[level - 1]
        out = padded + self.unfold(self.tail(h))
        out = out[..., :height, :width]
        return (out, predicted) if return_quality else out

    def _quality_features(self, skips: list[torch.Tensor], bottleneck: torch.Tensor) -> torch.Tensor:
        """The quality head's input, (N, features), in fp32."""
        if self.quality_head_input == "bottleneck":
            return bottleneck.float().mean(dim=(2, 3))
        levels = [level.float() for level in (*skips, bottleneck)]
        means = [level.mean(dim=(2, 3)) for level in levels]
        spreads = [level.std(dim=(2, 3), correction=0) for level in levels]  # 0, not NaN, for a single position
        return torch.cat(means + spreads, dim=1)


class Discriminator(nn.Module):
    """conv/BN/LeakyReLU stack -> global average pool -> dense layers as 1x1 convs -> one real/fake logit per image.

    ``channels`` and ``strides`` list the stack after the first conv (which has no BN), as in SRGAN.

    Train it with ``compare(real, fake)``, one forward over both kinds: each BatchNorm normalizes a batch by that
    batch's own statistics, so a batch of real images and a separate batch of restored ones both come out centred,
    and after the average pool the two are nearly the same by construction (measured in experiments/README.md: on
    JPEG crops vs originals the loss stays near log 4 fed separately, and falls to 0.14 in 200 steps fed together).
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

    def compare(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of ``real`` and ``fake`` from one forward over both, so that BatchNorm sees both kinds at once."""
        logits = self(torch.cat([real, fake]))
        return logits[: len(real)], logits[len(real) :]


class UNetDiscriminator(nn.Module):
    """Real-ESRGAN's discriminator: a U-Net with spectral norm that scores every pixel, so that the generator hears
    where a restoration looks wrong (a texture, a block edge), not one verdict per crop. Three stride-2 convolutions
    down to 1/8, three bilinear steps back up with additive skips, two more convolutions at full resolution, then one
    logit per pixel. Spectral norm (no BatchNorm) keeps D's gradients tame without coupling the images of a batch.

    ``channels``: the width at full resolution (doubled at each level down).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64):
        super().__init__()
        norm = nn.utils.spectral_norm
        widths = (channels, channels * 2, channels * 4, channels * 8)
        self.first = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList(norm(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1, bias=False))
                                  for i in range(3))
        self.up = nn.ModuleList(norm(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1, bias=False))
                                for i in reversed(range(3)))
        self.refine = nn.Sequential(
            norm(nn.Conv2d(widths[0], widths[0], 3, padding=1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            norm(nn.Conv2d(widths[0], widths[0], 3, padding=1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(widths[0], 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, 1, H, W): positive means "real" there. H and W: multiples of 8."""
        skips = [F.leaky_relu(self.first(x), 0.2)]
        for conv in self.down:
            skips.append(F.leaky_relu(conv(skips[-1]), 0.2))
        h = skips.pop()
        for conv in self.up:
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = F.leaky_relu(conv(h), 0.2) + skips.pop()
        return self.refine(h)

    def compare(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of ``real`` and ``fake``, from one forward over both (as ``Discriminator.compare``)."""
        logits = self(torch.cat([real, fake]))
        return logits[: len(real)], logits[len(real) :]

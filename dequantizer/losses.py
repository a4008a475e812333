"""The paper's losses: pixel, content (VGG19 features), texture (feature correlation), total variation, adversarial.

All image inputs are RGB in [0, 1]. ``GeneratorLoss`` sums the terms with weights from the config; a term whose weight
is 0 is never computed (and the VGG is not even built when neither content nor texture is used).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dequantizer.errors import DequantizerError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

def charbonnier_loss(prediction: torch.Tensor, target: torch.Tensor, epsilon: float = 1e-3) -> torch.Tensor:
    """sqrt((x - y)^2 + eps^2): L1 with a smooth minimum (the restoration literature's usual choice)."""
    return torch.sqrt((prediction - target) ** 2 + epsilon**2).mean()


PIXEL_LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss, "smooth_l1": F.smooth_l1_loss, "charbonnier": charbonnier_loss}


def pixel_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    if kind not in PIXEL_LOSSES:
        raise DequantizerError(f"loss.pixel.kind={kind!r} is not one of {sorted(PIXEL_LOSSES)}")
    return PIXEL_LOSSES[kind](prediction.float(), target.float())


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Feature correlations G_ij = sum_k F_ik F_jk / (C H W), per image (the paper's eq. 3)."""
    n, c, h, w = features.shape
    flat = features.float().reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def texture_loss(prediction_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(gram_matrix(prediction_features), gram_matrix(target_features))


def total_variation_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between vertically and horizontally neighbouring pixels."""
    image = image.float()
    return (image[..., 1:, :] - image[..., :-1, :]).abs().mean() + (image[..., :, 1:] - image[..., :, :-1]).abs().mean()


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """BCE on logits against an all-real or all-fake label."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


class VGGFeatures(nn.Module):
    """VGG19 ``features`` up to and including module ``layer`` (35: the ReLU after conv5_4), frozen, in eval mode.

    Takes [0, 1] RGB and applies ImageNet normalisation itself. ``pretrained=False`` builds random weights: for offline
    smoke tests and benchmarks only, never for a real run.
    """

    def __init__(self, layer: int = 35, pretrained: bool = True):
        super().__init__()
        from torchvision.models import VGG19_Weights, vgg19

        weights = VGG19_Weights.IMAGENET1K_V1 if pretrained else None
        try:
            vgg = vgg19(weights=weights)
        except Exception as error:  # network down, proxy, partial download...
            raise DequantizerError(
                f"cannot get the pretrained VGG19 weights for the content loss ({type(error).__name__}: {error}). "
                f"Place {weights.url.rsplit('/', 1)[-1]} in $TORCH_HOME/hub/checkpoints/ "
                "(default ~/.cache/torch), or train without VGG terms: loss=pixel"
            ) from None
        self.features = vgg.features[: layer + 1].eval()
        self.features.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # always eval: no dropout/BN in features, and Lightning must not flip it

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features((image - self.mean) / self.std)


class GeneratorLoss(nn.Module):
    """Weighted sum of the generator's loss terms. Each argument is a mapping with at least ``weight``.

    ``pixel``: ``kind`` in l1/l2/smooth_l1; ``content``: ``layer`` and ``pretrained`` for the VGG19 (MSE of features);
    ``texture``: Gram-matrix MSE on the same VGG features; ``total_variation``; ``adversarial``: BCE of D's logits on
    the restored image against "real".
    """

    def __init__(
        self,
        pixel: Mapping[str, Any] | None = None,
        content: Mapping[str, Any] | None = None,
        texture: Mapping[str, Any] | None = None,
        total_variation: Mapping[str, Any] | None = None,
        adversarial: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        pixel, content = dict(pixel or {}), dict(content or {})
        self.weights = {
            "pixel": float(pixel.get("weight", 0.0)),
            "content": float(content.get("weight", 0.0)),
            "texture": float((texture or {}).get("weight", 0.0)),
            "total_variation": float((total_variation or {}).get("weight", 0.0)),
            "adversarial": float((adversarial or {}).get("weight", 0.0)),
        }
        for name, weight in self.weights.items():
            if weight < 0:
                raise DequantizerError(f"loss.{name}.weight={weight} must be >= 0")
        if not any(self.weights.values()):
            raise DequantizerError("every loss weight is 0: set at least one of loss.*.weight above 0")
        self.pixel_kind = pixel.get("kind", "l1")
        if self.pixel_kind not in PIXEL_LOSSES:
            raise DequantizerError(f"loss.pixel.kind={self.pixel_kind!r} is not one of {sorted(PIXEL_LOSSES)}")
        needs_vgg = self.weights["content"] > 0 or self.weights["texture"] > 0
        self.vgg = (
            VGGFeatures(int(content.get("layer", 35)), bool(content.get("pretrained", True))) if needs_vgg else None
        )

    @property
    def uses_discriminator(self) -> bool:
        return self.weights["adversarial"] > 0

    def forward(
        self, restored: torch.Tensor, target: torch.Tensor, discriminator_logits: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Returns each active term (unweighted) and ``total`` (weighted sum)."""
        terms: dict[str, torch.Tensor] = {}
        if self.weights["pixel"]:
            terms["pixel"] = pixel_loss(restored, target, self.pixel_kind)
        if self.vgg is not None:
            restored_features = self.vgg(restored)
            with torch.no_grad():
                target_features = self.vgg(target)
            if self.weights["content"]:
                terms["content"] = F.mse_loss(restored_features.float(), target_features.float())
            if self.weights["texture"]:
                terms["texture"] = texture_loss(restored_features, target_features)
        if self.weights["total_variation"]:
            terms["total_variation"] = total_variation_loss(restored)
        if self.weights["adversarial"]:
            if discriminator_logits is None:
                raise ValueError("the adversarial term needs the discriminator's logits on the restored images")
            terms["adversarial"] = adversarial_loss(discriminator_logits, real=True)
        terms["total"] = sum(self.weights[name] * value for name, value in terms.items())
        return terms


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Standard GAN discriminator loss: real images labelled 1, restored ones 0."""
    return adversarial_loss(real_logits, real=True) + adversarial_loss(fake_logits, real=False)

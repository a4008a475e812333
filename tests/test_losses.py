import math

import pytest
import torch

from dequantizer.errors import DequantizerError
from dequantizer.losses import (
    GeneratorLoss,
    VGGFeatures,
    adversarial_loss,
    discriminator_loss,
    gram_matrix,
    pixel_loss,
    texture_loss,
    total_variation_loss,
)


def test_pixel_losses_known_values():
    prediction, target = torch.zeros(1, 1, 2, 2), torch.tensor([[[[0.5, 0.5], [2.0, 2.0]]]])
    assert pixel_loss(prediction, target, "l1").item() == pytest.approx(1.25)
    assert pixel_loss(prediction, target, "l2").item() == pytest.approx((0.25 * 2 + 4 * 2) / 4)
    # smooth L1 (beta 1): 0.5 x^2 below 1, |x| - 0.5 above
    assert pixel_loss(prediction, target, "smooth_l1").item() == pytest.approx((0.125 * 2 + 1.5 * 2) / 4)


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
    assert loss.vgg is None and not loss.uses_discriminator
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

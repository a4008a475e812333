import pytest
import torch
from torch import nn

from dequantizer.models import Discriminator, Generator


def test_generator_keeps_size_and_range():
    generator = Generator(channels=16, num_residual_blocks=2)
    out = generator(torch.rand(2, 3, 24, 40) * 2 - 1)
    assert out.shape == (2, 3, 24, 40)
    assert out.abs().max() <= 1  # tanh


@pytest.mark.parametrize("upsample_blocks", [1, 2])
def test_upsample_blocks_enlarge_by_powers_of_two(upsample_blocks):
    generator = Generator(channels=8, num_residual_blocks=1, num_upsample_blocks=upsample_blocks, image_residual=True)
    scale = 2**upsample_blocks
    assert generator(torch.zeros(1, 3, 16, 12)).shape == (1, 3, 16 * scale, 12 * scale)


def test_every_activation_is_its_own_module():
    generator = Generator(channels=8, num_residual_blocks=3)
    prelus = [module for module in generator.modules() if isinstance(module, nn.PReLU)]
    assert len(prelus) == 1 + 3  # head + one per residual block
    assert len({id(module) for module in prelus}) == len(prelus)


def test_image_residual_starts_at_identity():
    generator = Generator(channels=8, num_residual_blocks=2, output_activation=None, image_residual=True)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(generator(x), x)


def test_discriminator_returns_one_logit_per_image():
    discriminator = Discriminator(first_channels=8, channels=(8, 16), strides=(2, 2), hidden_features=16)
    logits = discriminator(torch.rand(5, 3, 32, 32))
    assert logits.shape == (5,)
    assert not isinstance(discriminator.classifier[-1], nn.Sigmoid)  # logits, for BCEWithLogits


def test_bad_architecture_values_are_refused():
    with pytest.raises(ValueError):
        Generator(num_residual_blocks=-1)
    with pytest.raises(ValueError):
        Discriminator(channels=(8, 16), strides=(2,))

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


def jpeg_crop_pairs(count=256, size=32, seed=0):
    """Textured crops (real) and their JPEG round trips at quality 10-40 (fake), in the networks' range."""
    import numpy as np
    from PIL import Image

    from dequantizer.jpeg import jpeg_roundtrip_array
    from dequantizer.models import to_model_range

    rng = np.random.default_rng(seed)
    real, fake = [], []
    for _ in range(count):
        small = Image.fromarray((rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8))
        smooth = np.asarray(small.resize((size, size), Image.BICUBIC)).astype(int)
        crop = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)  # detail JPEG removes
        real.append(crop)
        fake.append(jpeg_roundtrip_array(crop, int(rng.integers(10, 41))))
    as_batch = lambda crops: to_model_range(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2))  # noqa: E731
    return as_batch(real), as_batch(fake)


@pytest.mark.parametrize("together", [True, False])
def test_discriminator_separates_jpeg_crops_from_originals_only_when_fed_both_at_once(together):
    """The generator frozen at the identity: D must learn to tell JPEG crops from originals in a few steps. Fed as
    two batches (as the module did), BatchNorm normalizes each kind away and D stays at chance."""
    from dequantizer.losses import discriminator_loss

    real, fake = jpeg_crop_pairs()
    torch.manual_seed(0)
    discriminator = Discriminator(first_channels=16, channels=(16, 32, 32, 64), strides=(2, 1, 2, 2),
                                  hidden_features=64)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=5e-4)
    draw = torch.Generator().manual_seed(0)
    separations = []
    for _ in range(60):
        index = torch.randint(0, len(real), (16,), generator=draw)
        if together:
            real_logits, fake_logits = discriminator.compare(real[index], fake[index])
        else:
            real_logits, fake_logits = discriminator(real[index]), discriminator(fake[index])
        loss = discriminator_loss(real_logits, fake_logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        separations.append(float(torch.sigmoid(real_logits).mean() - torch.sigmoid(fake_logits).mean()))
    separation = sum(separations[-5:]) / 5
    if together:
        assert separation > 0.4, f"D(real) - D(fake) = {separation:.3f} after 60 steps"
    else:
        assert abs(separation) < 0.05, f"D(real) - D(fake) = {separation:.3f}: two batches are expected to fail"

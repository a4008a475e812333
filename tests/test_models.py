"""The networks (dequantizer/models.py): the paper's Generator and Discriminator, and the default model's QualityUNet
(sizes, the identity at the start, the quality it is told or reads itself)."""

import pytest
import skimage.data
import torch
from torch import nn

from dequantizer.models import Discriminator, Generator, QualityUNet
from helpers import TINY_DISCRIMINATOR, randomise, tiny_unet


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
    discriminator = Discriminator(**TINY_DISCRIMINATOR)
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


# -- QualityUNet: the default model's network --------------------------------------------------------------------------
@pytest.mark.parametrize("head_input", ["bottleneck", "pyramid"])
@pytest.mark.parametrize("size", [(16, 16), (37, 53), (8, 120), (8, 8)])
def test_unet_keeps_any_size_and_starts_at_the_identity(size, head_input):
    x = torch.rand(2, 3, *size) * 2 - 1
    out, predicted = tiny_unet(quality_head_input=head_input)(x, return_quality=True)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x)  # the zero tail: an untrained model returns its input
    assert predicted.shape == (2,) and ((predicted >= 1) & (predicted <= 100)).all()


def test_quality_changes_the_output_and_a_blind_unet_ignores_it():
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    model = randomise(tiny_unet())
    low, high = model(x, torch.tensor([5.0])), model(x, torch.tensor([95.0]))
    assert (low - high).abs().max() > 1e-3
    # Without a quality, the model uses its own prediction.
    _, predicted = model(x, return_quality=True)
    torch.testing.assert_close(model(x), model(x, predicted))

    blind = randomise(tiny_unet(quality_aware=False))
    assert not hasattr(blind, "quality_head")
    torch.testing.assert_close(blind(x, torch.tensor([5.0])), blind(x, torch.tensor([95.0])))


def test_each_image_is_restored_independently_of_its_batch():
    model = randomise(tiny_unet())
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    quality = torch.tensor([10.0, 50.0, 90.0])
    batch = model(x, quality)
    for index in range(3):
        torch.testing.assert_close(batch[index : index + 1], model(x[index : index + 1], quality[index : index + 1]))


def test_the_paper_generator_accepts_and_ignores_a_quality():
    generator = Generator(channels=8, num_residual_blocks=1).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(generator(x, torch.tensor([10.0])), generator(x))


def test_bad_unet_shapes_are_refused():
    with pytest.raises(ValueError, match="one entry per level"):
        QualityUNet(channels=(8, 16))
    with pytest.raises(ValueError, match="choose 'bottleneck' or 'pyramid'"):
        QualityUNet(quality_head_input="everything")


def test_the_pyramid_head_reads_the_mean_and_spread_of_every_level():
    model = tiny_unet(quality_head_input="pyramid")
    assert model.quality_head[0].in_features == 2 * (8 + 16 + 24)
    levels = [torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8), torch.randn(2, 24, 4, 4) + 3]
    features = model._quality_features(levels[:2], levels[2])
    means = torch.cat([level.mean(dim=(2, 3)) for level in levels], 1)
    spreads = torch.cat([level.std(dim=(2, 3), unbiased=False) for level in levels], 1)
    torch.testing.assert_close(features, torch.cat([means, spreads], 1))
    # The bottleneck head reads the 1/8 means alone.
    torch.testing.assert_close(tiny_unet()._quality_features(levels[:2], levels[2]), levels[2].mean(dim=(2, 3)))


def test_the_unet_discriminator_scores_every_pixel_and_learns_where_the_damage_is():
    """Real-ESRGAN's design: a logit per pixel, spectral norm (no batch coupling). Trained for a few steps on crops
    whose left half is JPEG-damaged, it scores the damaged half below the clean one."""
    from dequantizer.models import UNetDiscriminator

    torch.manual_seed(0)
    discriminator = UNetDiscriminator(channels=8)
    photo = skimage.data.astronaut()
    clean = torch.from_numpy(photo[:256, :256].copy()).permute(2, 0, 1).float() / 127.5 - 1
    damaged = clean.clone()
    blocky = torch.nn.functional.avg_pool2d(clean[None], 8).repeat_interleave(8, -1).repeat_interleave(8, -2)[0]
    damaged[:, :, :128] = blocky[:, :, :128]  # the left half flattened to 8x8 blocks
    crops = lambda image: image.unfold(1, 64, 64).unfold(2, 64, 64).permute(1, 2, 0, 3, 4).reshape(-1, 3, 64, 64)  # noqa: E731
    real, fake = crops(clean), crops(damaged)
    assert discriminator(real).shape == (16, 1, 64, 64)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    for _ in range(40):
        real_logits, fake_logits = discriminator.compare(real, fake)
        loss = (torch.nn.functional.softplus(-real_logits).mean() + torch.nn.functional.softplus(fake_logits).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scores = discriminator(fake).reshape(4, 4, 64, 64)
    left, right = scores[:, :2].mean(), scores[:, 2:].mean()  # the damaged half against the untouched one
    assert left < right - 1, (left, right)

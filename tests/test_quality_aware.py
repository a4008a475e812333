"""The quality-aware restorer (QualityUNet), the training pairs it is trained on, and the quality knob of the tool."""

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from dequantizer.data import FolderPhotos, JpegDataModule
from dequantizer.data.datamodule import draw_quality
from dequantizer.errors import DequantizerError
from dequantizer.jpeg import jpeg_roundtrip_array
from dequantizer.models import Generator, QualityUNet

TINY = dict(channels=(8, 16, 24), encoder_blocks=(1, 1, 1), decoder_blocks=(1, 1, 1))


def tiny_unet(seed=0, **kwargs):
    torch.manual_seed(seed)
    return QualityUNet(**{**TINY, **kwargs}).eval()


def randomise(model):
    """Trained-like weights: the zero-initialised tail and modulations made non-zero."""
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.05)
    return model


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


def test_a_decoded_jpeg_shows_its_quality_in_its_dct_coefficients(samples_dir):
    from dequantizer.jpeg import jpeg_history, jpeg_roundtrip

    photo = Image.open(samples_dir / "coffee.png").convert("RGB")
    qualities = (5, 10, 30, 50, 75, 85, 90, 95, 97, 98, 99)
    read = {q: jpeg_history(np.asarray(jpeg_roundtrip(photo, q).convert("RGB"))) for q in (*qualities, 100)}
    assert [read[q][0] for q in qualities] == list(qualities)  # exact, the last compression's quality
    assert all(read[q][2] == (0, 0) and read[q][1] > 0.5 for q in qualities)
    # Quality 100 (every step 1), a never-compressed photo, a tiny or a flat image: nothing to read.
    assert read[100] is None and jpeg_history(np.asarray(photo)) is None
    assert jpeg_history(np.asarray(jpeg_roundtrip(photo, 90).convert("RGB"))[:12, :12]) is None
    assert jpeg_history(np.full((64, 64, 3), 128, np.uint8)) is None
    assert jpeg_history(np.asarray(jpeg_roundtrip(photo.convert("L"), 90)))[0] == 90  # an HxW grey array
    # A q75 JPEG re-saved at q95: the q75 lattice fits best, and its artefacts are what is left to restore.
    resaved = jpeg_roundtrip(jpeg_roundtrip(photo, 75).convert("RGB"), 95)
    assert jpeg_history(np.asarray(resaved.convert("RGB")))[0] == 75


def test_another_encoders_steps_are_read_and_named_by_the_nearest_ijg_quality_as_its_file_would_be(samples_dir):
    from dequantizer.jpeg import (
        dct_coefficients,
        estimate_jpeg_quality,
        ijg_luminance_table,
        jpeg_history,
        luma,
        quantization_steps,
    )

    photo = Image.open(samples_dir / "coffee.png").convert("RGB")
    # A camera-like luminance table: IJG's q90 steps, each scaled by 0.8-1.2 at random. A finer IJG table whose steps
    # divide some of these fits them too (weakly): the steps themselves decide.
    steps = np.clip(ijg_luminance_table(90) * np.random.default_rng(0).uniform(0.8, 1.2, 64), 1, 255).round()
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", qtables=[steps.astype(int).tolist()] * 2)
    jpeg = Image.open(buffer)
    decoded = np.asarray(jpeg.convert("RGB"))
    read, _ = quantization_steps(dct_coefficients(luma(decoded[:256, :256])))
    known = ~np.isnan(read)
    assert known.sum() >= 20 and np.array_equal(read[known], steps[known])  # every step read is exact (this seed)
    history = jpeg_history(decoded)
    assert history is not None and 0 <= history[0] - estimate_jpeg_quality(jpeg) <= 2  # what its tables say, or
    # a little above (named from the steps read, not all 64): a gentler restoration, never a harsher one
    # A never-compressed photo: no step anywhere.
    assert np.isnan(quantization_steps(dct_coefficients(luma(np.asarray(photo)[:256, :256])))[0]).all()


def test_decoded_pixels_are_restored_for_the_quality_their_coefficients_show(samples_dir):
    from dequantizer import dequantize
    from dequantizer.jpeg import jpeg_roundtrip

    photo = Image.open(samples_dir / "chelsea.png").convert("RGB").crop((100, 48, 228, 176))
    decoded = np.asarray(jpeg_roundtrip(photo, 90).convert("RGB"))  # no tables: an array
    assert np.array_equal(dequantize(decoded), dequantize(decoded, quality=90))
    decoded = np.asarray(jpeg_roundtrip(photo, 2).convert("RGB"))  # too few coefficients survive: the head decides
    assert not np.array_equal(dequantize(decoded), dequantize(decoded, quality=2))


def test_pixels_without_a_lattice_that_the_head_reads_as_nearly_lossless_are_restored_as_quality_100(samples_dir):
    from dequantizer.jpeg import jpeg_roundtrip
    from dequantizer.restore import get_restorer, quality_from_pixels

    blind = get_restorer("blind")
    moon = Image.open(samples_dir / "moon.png").convert("L")  # the head reads 98 here, where a q98 restoration hurts
    assert quality_from_pixels(np.asarray(jpeg_roundtrip(moon, 100).convert("RGB")), blind) == 100
    assert quality_from_pixels(np.asarray(jpeg_roundtrip(moon, 98).convert("RGB")), blind) == 98
    assert quality_from_pixels(np.asarray(jpeg_roundtrip(moon, 2).convert("RGB")), blind) is None  # head: far below


def test_a_grey_jpeg_of_quality_100_is_kept_as_it_is_and_a_colour_one_restored(samples_dir, tmp_path):
    from dequantizer import dequantize

    camera = Image.open(samples_dir / "camera.png").convert("L").crop((0, 0, 128, 128))
    camera.save(tmp_path / "grey.jpg", quality=100)
    grey = Image.open(tmp_path / "grey.jpg")
    assert np.array_equal(np.asarray(dequantize(grey)), np.asarray(grey))  # its tables say 100
    assert np.array_equal(dequantize(np.asarray(grey)), np.asarray(grey))  # no tables: no lattice, the head reads 100
    assert not np.array_equal(np.asarray(dequantize(grey, quality=90)), np.asarray(grey))  # told otherwise
    coffee = Image.open(samples_dir / "coffee.png").convert("RGB").crop((0, 0, 128, 128))
    coffee.save(tmp_path / "colour.jpg", quality=100)
    colour = Image.open(tmp_path / "colour.jpg")
    assert not np.array_equal(np.asarray(dequantize(colour)), np.asarray(colour))  # 4:2:0 chroma to restore


# -- training pairs ----------------------------------------------------------------------------------------------------
def test_quality_draws_follow_the_focus():
    random.seed(0)
    focused = [draw_quality((1, 100), [((10, 60), 0.75)]) for _ in range(4000)]
    share = np.mean([10 <= q <= 60 for q in focused])
    assert 0.75 + 0.25 * 51 / 100 - 0.03 < share < 0.75 + 0.25 * 51 / 100 + 0.03  # focus + its share of the rest
    assert min(focused) == 1 and max(focused) == 100  # the whole range is still covered
    assert all(10 <= draw_quality((1, 100), [((10, 60), 1.0)]) <= 60 for _ in range(200))
    # two ranges: the low qualities and the top, the rest uniform
    mixed = [draw_quality((1, 100), [((1, 60), 0.5), ((90, 100), 0.2)]) for _ in range(4000)]
    assert 0.2 + 0.3 * 11 / 100 - 0.03 < np.mean([q >= 90 for q in mixed]) < 0.2 + 0.3 * 11 / 100 + 0.03
    assert 0.5 + 0.3 * 60 / 100 - 0.03 < np.mean([q <= 60 for q in mixed]) < 0.5 + 0.3 * 60 / 100 + 0.03


def make_photos(folder, count=6, size=(96, 80)):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = rng.random((size[1] // 4, size[0] // 4, 3)) * 255
        Image.fromarray(pixels.astype(np.uint8)).resize(size, Image.BICUBIC).save(folder / f"p{index}.png")
    return folder


def pairs(tmp_path, count=40, **kwargs):
    data = JpegDataModule(FolderPhotos(make_photos(tmp_path / "photos")), quality=20, crop_size=32, num_workers=0,
                          samples_per_epoch=count, **kwargs)
    data.setup()
    random.seed(1)
    return [data.train_set[index] for index in range(count)]


def on_grid(jpeg, target):
    """Whether the JPEG crop is the crop's own JPEG (its blocks on the crop's grid), away from the crop's edges."""
    again = jpeg_roundtrip_array(target.permute(1, 2, 0).numpy(), 20)
    return np.array_equal(jpeg.permute(1, 2, 0).numpy()[:16, :16], again[:16, :16])


def test_crops_sit_on_the_jpeg_grid_unless_shifted(tmp_path):
    assert all(on_grid(jpeg, target) for jpeg, target, _ in pairs(tmp_path / "a", grid_shift_fraction=0.0))
    shifted = [on_grid(jpeg, target) for jpeg, target, _ in pairs(tmp_path / "b", grid_shift_fraction=1.0)]
    assert np.mean(shifted) < 0.2  # only the draws with a (0, 0) shift land on the grid


def test_greyscale_crops_are_grey_in_and_out(tmp_path):
    for jpeg, target, _ in pairs(tmp_path, count=8, greyscale_fraction=1.0):
        assert (target[0] == target[1]).all() and (target[1] == target[2]).all()
        assert (jpeg[0].int() - jpeg[1].int()).abs().max() <= 1  # a grey JPEG decodes (almost) grey


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(quality=[10, 50], focus_quality=[5, 40]), "inside data.quality"),
        (dict(quality=[10, 50], focus_quality=[20, 30], focus_fraction=1.5), "between 0 and 1"),
        (dict(quality=[1, 100], focus_quality=[[1, 60], [90, 100]], focus_fraction=[0.6, 0.6]), "at most 1 in all"),
        (dict(quality=[1, 100], focus_quality=[[1, 60], [90, 100]], focus_fraction=0.5), "one share per range"),
        (dict(quality=[10, 50], focus_quality=[[10, 20], [40, 60]], focus_fraction=[0.2, 0.2]), "inside data.quality"),
        (dict(greyscale_fraction=-0.1), "between 0 and 1"),
    ],
)
def test_bad_sampling_values_are_clear_errors(tmp_path, kwargs, match):
    with pytest.raises(DequantizerError, match=match):
        JpegDataModule(FolderPhotos(tmp_path), **kwargs)


# -- the quality knob --------------------------------------------------------------------------------------------------
def test_dequantize_takes_a_quality_and_refuses_a_bad_one(samples_dir):
    from dequantizer import dequantize, quantize

    photo = Image.open(samples_dir / "chelsea.png").convert("RGB").crop((100, 50, 196, 146))
    jpeg = quantize(photo, quality=30)
    hard, gentle, told, told_30, before = (
        np.asarray(image).astype(int)  # signed: uint8 differences would wrap around
        for image in (dequantize(jpeg, quality=5), dequantize(jpeg, quality=95), dequantize(jpeg),
                      dequantize(jpeg, quality=30), jpeg)
    )
    assert np.array_equal(told, told_30)  # the file's tables say 30
    # Told a lower quality, the model restores harder: it moves further from its input.
    assert np.abs(hard - before).mean() > 2 * np.abs(gentle - before).mean()
    with pytest.raises(DequantizerError, match="quality"):
        dequantize(jpeg, quality=0)


# -- training ----------------------------------------------------------------------------------------------------------
def test_the_quality_head_trains_alongside_and_is_scored(tmp_path):
    from hydra.utils import instantiate
    from test_module import fit

    from conftest import compose_config

    cfg = compose_config(
        ["experiment=blind", "model.generator.channels=[8,16,24]", "model.generator.encoder_blocks=[1,1,1]",
         "model.generator.decoder_blocks=[1,1,1]", "model.ema_decay=null"],
        tmp_path,
    )
    model = instantiate(cfg.model, loss=cfg.loss)
    head = [p.detach().clone() for p in model.generator.quality_head.parameters()]
    trainer = fit(model, max_epochs=1)
    logged = trainer.callback_metrics
    assert "train/loss_quality" in logged and "val/quality_error" in logged and "val/quality_loss" in logged
    assert 0 <= float(logged["val/quality_error"]) <= 99
    assert any(not torch.equal(a, b) for a, b in zip(head, model.generator.quality_head.parameters(), strict=True))


def test_trainable_trains_only_the_named_parts(tmp_path):
    from hydra.utils import instantiate
    from test_module import fit

    from conftest import compose_config

    cfg = compose_config(
        ["experiment=blind", "model.generator.channels=[8,16,24]", "model.generator.encoder_blocks=[1,1,1]",
         "model.generator.decoder_blocks=[1,1,1]", "model.ema_decay=null", "model.trainable=[quality_head]"],
        tmp_path,
    )
    model = instantiate(cfg.model, loss=cfg.loss)
    before = {name: p.detach().clone() for name, p in model.generator.named_parameters()}
    trainer = fit(model, max_epochs=1)
    path = tmp_path / "head.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["trainable"] == ["quality_head"]
    changed = {name for name, p in model.generator.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith("quality_head.") for name in changed)

    cfg.model.trainable = ["quality_head", "no_such_part"]
    with pytest.raises(DequantizerError, match="model.trainable names \\['no_such_part'\\]"):
        instantiate(cfg.model, loss=cfg.loss).configure_optimizers()
    cfg.model.trainable = "quality_head"  # one name on the command line is a list of one
    assert instantiate(cfg.model, loss=cfg.loss).hparams.trainable == ["quality_head"]


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_training_batches_can_be_restored_with_the_predicted_quality(tmp_path, fraction):
    from hydra.utils import instantiate
    from test_module import fit

    from conftest import compose_config

    cfg = compose_config(
        ["experiment=blind", "model.generator.channels=[8,16,24]", "model.generator.encoder_blocks=[1,1,1]",
         "model.generator.decoder_blocks=[1,1,1]", "model.ema_decay=null",
         f"model.predicted_quality_fraction={fraction}"],
        tmp_path,
    )
    model = instantiate(cfg.model, loss=cfg.loss)
    told = []  # the quality each training forward was given (None: the head's prediction is used)
    forward = model.generator.forward

    def spy(x, quality=None, return_quality=False):
        if torch.is_grad_enabled():
            told.append(quality)
        return forward(x, quality, return_quality)

    model.generator.forward = spy
    fit(model, max_epochs=1)
    assert told
    if fraction == 1.0:
        assert all(quality is None for quality in told)
    else:
        assert all(quality is not None and 1 <= quality.min() <= quality.max() <= 100 for quality in told)


def test_a_predicted_quality_fraction_outside_0_1_is_refused():
    from dequantizer.module import DequantizerGAN

    with pytest.raises(DequantizerError, match="predicted_quality_fraction=1.5 must lie between 0 and 1"):
        DequantizerGAN(generator={}, discriminator={}, loss={}, optimizer_g={}, optimizer_d={},
                       predicted_quality_fraction=1.5)
    with pytest.raises(DequantizerError, match="quality_quantile=1 must lie strictly between 0 and 1"):
        DequantizerGAN(generator={}, discriminator={}, loss={}, optimizer_g={}, optimizer_d={}, quality_quantile=1)

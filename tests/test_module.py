import lightning as L
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from conftest import compose_config
from dequantizer.module import DequantizerGAN


def tiny_model(tmp_path, *overrides):
    cfg = compose_config(
        ["experiment=beta", "loss.content.pretrained=false", "model.generator.channels=8",
         "model.generator.num_residual_blocks=1", "model.discriminator.first_channels=8",
         "model.discriminator.channels=[8,16]", "model.discriminator.strides=[2,2]",
         "model.discriminator.hidden_features=16", *overrides],
        tmp_path,
    )
    return instantiate(cfg.model, loss=cfg.loss)


def batches(count=2, size=16):
    """``count`` batches of 2 noisy/clean uint8 pairs."""
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 256, (count * 2, 3, size, size), dtype=torch.uint8, generator=generator)
    jpeg = (target.int() + torch.randint(-8, 9, target.shape, generator=generator)).clamp(0, 255).to(torch.uint8)
    return DataLoader(TensorDataset(jpeg, target, torch.full((count * 2,), 50)), batch_size=2)


def fit(model, **trainer_args):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **trainer_args)
    trainer.fit(model, train_dataloaders=batches(), val_dataloaders=batches(1))
    return trainer


def test_gan_step_one_generator_forward_and_detached_fake(tmp_path):
    model = tiny_model(tmp_path)
    generator_calls, discriminator_inputs = [], []
    model.generator.register_forward_hook(lambda m, i, o: generator_calls.append(torch.is_grad_enabled()))
    model.discriminator.register_forward_hook(lambda m, i, o: discriminator_inputs.append(i[0].requires_grad))
    before_g = [p.detach().clone() for p in model.generator.parameters()]
    before_d = [p.detach().clone() for p in model.discriminator.parameters()]
    fit(model, max_epochs=1, limit_val_batches=0, precision="32-true")
    assert generator_calls.count(True) == 2  # one training forward per batch
    # per batch: D(real), D(fake.detach()) for the D step, then D(fake) with gradients for the G step
    assert discriminator_inputs == [False, False, True] * 2
    after_g, after_d = list(model.generator.parameters()), list(model.discriminator.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before_g, after_g, strict=True) if a.numel() > 1)
    assert any(not torch.equal(a, b) for a, b in zip(before_d, after_d, strict=True))


def test_pixel_only_training_leaves_the_discriminator_alone(tmp_path):
    model = tiny_model(tmp_path, "loss=pixel")
    calls = []
    model.discriminator.register_forward_hook(lambda *args: calls.append(1))
    fit(model, max_epochs=1, limit_val_batches=0)
    assert not calls


def test_fast_dev_run_logs_losses_and_metrics(tmp_path):
    model = tiny_model(tmp_path, "model.ema_decay=0.9", "model.clip_gradients=1.0")
    trainer = fit(model, fast_dev_run=True)
    logged = trainer.callback_metrics
    for key in ("train/loss_g", "train/loss_d", "train/loss_content", "train/loss_adversarial", "train/d_real_prob",
                "train/d_fake_prob", "val/psnr", "val/ssim", "val/psnr_jpeg", "val/ssim_jpeg", "val/psnr_gain"):
        assert key in logged, key
    assert torch.isclose(logged["val/psnr_gain"], logged["val/psnr"] - logged["val/psnr_jpeg"])
    assert model.ema.n_averaged.item() == 1
    assert model.example_grid.shape[0] == 3  # JPEG | restored | original, RGB


def test_metrics_are_per_image_means_in_fp32():
    from dequantizer.module import image_metrics

    target = torch.zeros(2, 3, 8, 8)
    restored = target.clone()
    restored[0] += 0.1  # PSNR 20 dB
    restored[1] += 0.01  # PSNR 40 dB
    with torch.autocast("cpu", torch.bfloat16):
        psnr, ssim = image_metrics(restored, target)
    torch.testing.assert_close(psnr, torch.tensor([20.0, 40.0]))  # the mean (30) differs from pooled-MSE PSNR
    assert psnr.dtype == torch.float32 and ssim.shape == (2,)


def test_init_from_loads_another_runs_weights(tmp_path):
    source = tiny_model(tmp_path)
    trainer = fit(source, max_epochs=1, limit_val_batches=0)
    trainer.save_checkpoint(tmp_path / "other.ckpt")
    model = tiny_model(tmp_path, f"model.init_from={tmp_path / 'other.ckpt'}")
    model.setup("fit")
    for a, b in zip(source.generator.state_dict().values(), model.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(source.discriminator.state_dict().values(), model.discriminator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert isinstance(model, DequantizerGAN)


def test_init_from_takes_the_ema_generator_when_the_run_kept_one(tmp_path):
    source = tiny_model(tmp_path, "model.ema_decay=0.5")
    fit(source, max_epochs=1, limit_val_batches=0).save_checkpoint(tmp_path / "ema.ckpt")
    ema, raw = source.ema.module.state_dict(), source.generator.state_dict()
    assert any(not torch.equal(ema[key], raw[key]) for key in raw)
    model = tiny_model(tmp_path, f"model.init_from={tmp_path / 'ema.ckpt'}")
    model.setup("fit")
    for key, value in model.generator.state_dict().items():
        assert torch.equal(value, ema[key]), key


def test_init_from_errors_are_clear(tmp_path):
    import pytest

    from dequantizer.errors import DequantizerError

    model = tiny_model(tmp_path, f"model.init_from={tmp_path / 'missing.ckpt'}")
    with pytest.raises(DequantizerError, match="does not exist"):
        model.setup("fit")
    other = tiny_model(tmp_path, "model.generator.num_residual_blocks=2")
    fit(other, max_epochs=1, limit_val_batches=0).save_checkpoint(tmp_path / "bigger.ckpt")
    model = tiny_model(tmp_path, f"model.init_from={tmp_path / 'bigger.ckpt'}")
    with pytest.raises(DequantizerError, match="different architecture"):
        model.setup("fit")


def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path):
    import pytest

    from dequantizer.errors import DequantizerError

    model = tiny_model(tmp_path, "loss=pixel", "model.max_nonfinite_steps=3")
    model.generator.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    before = [p.detach().clone() for p in model.generator.parameters()]
    with pytest.raises(DequantizerError, match="3 non-finite losses in a row"):
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, max_epochs=5, limit_val_batches=0)
        trainer.fit(model, train_dataloaders=batches())
    assert model.skipped_steps == 3
    assert all(torch.equal(a, b) for a, b in zip(before, model.generator.parameters(), strict=True))

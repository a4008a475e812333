import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from conftest import compose_config
from dequantizer.callbacks import LogValidationImages, RescheduleOnResume


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
    model.discriminator.register_forward_hook(
        lambda m, i, o: discriminator_inputs.append((i[0].requires_grad, len(i[0]))))
    before_g = [p.detach().clone() for p in model.generator.parameters()]
    before_d = [p.detach().clone() for p in model.discriminator.parameters()]
    steps = StepOutputs()
    trainer = fit(model, max_epochs=1, limit_val_batches=0, precision="32-true", callbacks=[steps])
    assert generator_calls.count(True) == 2  # one training forward per batch
    assert all({"g", "d", "d_separation"} <= set(keys) for keys in steps.outputs)
    assert trainer.global_step == 2  # one step per batch, though two optimizers stepped
    # per batch: D(real + fake.detach()) as one batch of 4 for the D step, then D(real + fake) with gradients for the
    # G step: BatchNorm always sees both kinds at once
    assert discriminator_inputs == [(False, 4), (True, 4)] * 2
    after_g, after_d = list(model.generator.parameters()), list(model.discriminator.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before_g, after_g, strict=True) if a.numel() > 1)
    assert any(not torch.equal(a, b) for a, b in zip(before_d, after_d, strict=True))


class StepOutputs(L.Callback):
    """Records what each training step returned (what EpochLog averages into its line)."""

    def __init__(self):
        self.outputs = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.outputs.append(sorted(outputs))


def test_discriminator_warmup_trains_only_the_discriminator(tmp_path):
    model = tiny_model(tmp_path, "model.discriminator_warmup_steps=2")
    before_g = [p.detach().clone() for p in model.generator.parameters()]
    before_d = [p.detach().clone() for p in model.discriminator.parameters()]
    steps = StepOutputs()
    trainer = fit(model, max_epochs=1, limit_val_batches=0, precision="32-true", callbacks=[steps])
    assert steps.outputs == [["d", "d_separation"]] * 2  # the epoch line shows D's loss and separation
    assert trainer.global_step == 2  # a warm-up batch is one step too
    assert all(torch.equal(a, b) for a, b in zip(before_g, model.generator.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, model.discriminator.parameters(), strict=True))
    assert "train/d_separation" in trainer.callback_metrics and "train/loss_g" not in trainer.callback_metrics


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


def test_gan_max_steps_counts_batches(tmp_path):
    model = tiny_model(tmp_path)
    calls = []
    model.generator.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()))
    trainer = fit(model, max_steps=3, limit_val_batches=0)
    assert calls.count(True) == 3 and trainer.global_step == 3


def test_metrics_are_per_image_means_in_fp32_even_under_autocast():
    from dequantizer.metrics import image_metrics

    target = torch.zeros(2, 3, 8, 8)
    restored = target.clone()
    restored[0] += 0.1  # PSNR 20 dB
    restored[1] += 0.01  # PSNR 40 dB
    psnr, _ = image_metrics(restored, target)
    torch.testing.assert_close(psnr, torch.tensor([20.0, 40.0]))  # the mean (30) differs from pooled-MSE PSNR
    # SSIM's Gaussian filter is a convolution, which bf16 autocast would run in bf16: near-identical images then
    # lose the variance terms (E[x^2] - E[x]^2) to rounding. Training validates under autocast.
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 3, 32, 32, generator=generator) * 0.5 + 0.25
    noisy = (clean + 0.01 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    reference_psnr, reference_ssim = image_metrics(noisy, clean)
    with torch.autocast("cpu", torch.bfloat16):
        psnr, ssim = image_metrics(noisy, clean)
    assert psnr.dtype == ssim.dtype == torch.float32
    torch.testing.assert_close(ssim, reference_ssim, rtol=0, atol=1e-6)
    torch.testing.assert_close(psnr, reference_psnr, rtol=0, atol=1e-5)


def test_init_from_loads_another_runs_weights(tmp_path):
    source = tiny_model(tmp_path)
    trainer = fit(source, max_epochs=1, limit_val_batches=0)
    trainer.save_checkpoint(tmp_path / "other.ckpt")
    model = tiny_model(tmp_path, f"model.init_from={tmp_path / 'other.ckpt'}", "model.ema_decay=0.9")
    fit(model, max_steps=0)  # a run starting afresh: it reads init_from, then trains no step
    for a, b in zip(source.generator.state_dict().values(), model.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(source.discriminator.state_dict().values(), model.discriminator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(source.generator.state_dict().values(), model.ema.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the EMA starts from the loaded weights too


def test_init_from_is_not_read_when_resuming(tmp_path):
    fit(tiny_model(tmp_path), max_epochs=1, limit_val_batches=0).save_checkpoint(tmp_path / "other.ckpt")
    overrides = [f"model.init_from={tmp_path / 'other.ckpt'}", "loss=pixel"]
    fit(tiny_model(tmp_path, *overrides), max_epochs=1, limit_val_batches=0).save_checkpoint(tmp_path / "run.ckpt")
    (tmp_path / "other.ckpt").unlink()  # the starting point is gone; the run's own checkpoint holds newer weights
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, max_epochs=2, limit_val_batches=0)
    trainer.fit(tiny_model(tmp_path, *overrides), train_dataloaders=batches(), ckpt_path=tmp_path / "run.ckpt")
    assert trainer.current_epoch == 2


def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path):
    from dequantizer.errors import DequantizerError

    model = tiny_model(tmp_path, "loss=pixel", "model.max_nonfinite_steps=3")
    model.generator.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    before = [p.detach().clone() for p in model.generator.parameters()]
    with pytest.raises(DequantizerError, match="non-finite losses in 3 batches in a row"):
        fit(model, max_epochs=5, limit_val_batches=0)
    assert model.skipped_steps == 3
    assert all(torch.equal(a, b) for a, b in zip(before, model.generator.parameters(), strict=True))


def test_non_finite_discriminator_losses_are_counted_and_stop_the_run(tmp_path):
    from dequantizer.errors import DequantizerError

    model = tiny_model(tmp_path, "model.max_nonfinite_steps=3")
    # D's own step sees detached inputs: poison only those, so D's loss is non-finite and G's is not.
    model.discriminator.register_forward_hook(
        lambda module, inputs, output: output if inputs[0].requires_grad else output * float("nan"))
    before_d = [p.detach().clone() for p in model.discriminator.parameters()]
    before_g = [p.detach().clone() for p in model.generator.parameters()]
    with pytest.raises(DequantizerError, match="non-finite losses in 3 batches in a row"):
        fit(model, max_epochs=5, limit_val_batches=0)
    assert model.skipped_steps_d == 3 and model.skipped_steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before_d, model.discriminator.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(before_g, model.generator.parameters(), strict=True))


class LearningRates(L.Callback):
    """The generator's learning rate in each epoch."""

    def __init__(self):
        self.rates = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rates[trainer.current_epoch] = pl_module.optimizers()[0].param_groups[0]["lr"]


def test_raising_max_epochs_on_resume_stretches_the_cosine_schedule(tmp_path):
    import math

    def cosine(epochs):
        return f"model.scheduler={{_target_:torch.optim.lr_scheduler.CosineAnnealingLR,T_max:{epochs}}}"

    trainer = fit(tiny_model(tmp_path, "loss=pixel", cosine(2)), max_epochs=2, limit_val_batches=0)
    trainer.save_checkpoint(tmp_path / "finished.ckpt")  # a finished run: its cosine has come down to 0

    extended = LearningRates()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, max_epochs=4, limit_val_batches=0,
                        callbacks=[extended, RescheduleOnResume()])
    trainer.fit(tiny_model(tmp_path, "loss=pixel", cosine(4)), train_dataloaders=batches(),
                ckpt_path=tmp_path / "finished.ckpt")
    base = trainer.lightning_module.hparams.optimizer_g["lr"]
    expected = {epoch: base * (1 + math.cos(math.pi * epoch / 4)) / 2 for epoch in (2, 3)}
    assert extended.rates == pytest.approx(expected)  # a 4-epoch cosine from the start, not the old one going up


def test_validation_images_go_to_the_loggers_as_files(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    trainer = L.Trainer(accelerator="cpu", logger=CSVLogger(tmp_path / "csv"), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, max_epochs=1, limit_train_batches=1,
                        callbacks=[LogValidationImages()])
    trainer.fit(tiny_model(tmp_path, "loss=pixel"), train_dataloaders=batches(), val_dataloaders=batches(1))
    assert [path.name for path in tmp_path.glob("csv/*/version_0/images/*.png")] == ["val_epoch000.png"]


"""The LightningModule (dequantizer/module.py), trained by a Trainer on a few random batches: the GAN step (one
generator forward, the discriminator fed real and fake at once), warm-up, pixel-only runs, what is logged, init_from,
non-finite losses, and the quality head of the default model's network (trained and scored, trainable parts,
batches restored with the predicted quality)."""

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from dequantizer.errors import DequantizerError
from helpers import batches, fit, quiet_trainer, tiny_blind_config, tiny_gan


def test_gan_step_one_generator_forward_and_detached_fake(tmp_path):
    model = tiny_gan(tmp_path)
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
    model = tiny_gan(tmp_path, "model.discriminator_warmup_steps=2")
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
    model = tiny_gan(tmp_path, "loss=pixel")
    calls = []
    model.discriminator.register_forward_hook(lambda *args: calls.append(1))
    fit(model, max_epochs=1, limit_val_batches=0)
    assert not calls


def test_fast_dev_run_logs_losses_and_metrics(tmp_path):
    model = tiny_gan(tmp_path, "model.ema_decay=0.9", "model.clip_gradients=1.0")
    trainer = fit(model, fast_dev_run=True)
    logged = trainer.callback_metrics
    for key in ("train/loss_g", "train/loss_d", "train/loss_content", "train/loss_adversarial", "train/d_real_prob",
                "train/d_fake_prob", "val/psnr", "val/ssim", "val/psnr_jpeg", "val/ssim_jpeg", "val/psnr_gain"):
        assert key in logged, key
    assert torch.isclose(logged["val/psnr_gain"], logged["val/psnr"] - logged["val/psnr_jpeg"])
    assert model.ema.n_averaged.item() == 1
    assert model.example_grid.shape[0] == 3  # JPEG | restored | original, RGB


def test_gan_max_steps_counts_batches(tmp_path):
    model = tiny_gan(tmp_path)
    calls = []
    model.generator.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()))
    trainer = fit(model, max_steps=3, limit_val_batches=0)
    assert calls.count(True) == 3 and trainer.global_step == 3


def test_init_from_loads_another_runs_weights(tmp_path):
    source = tiny_gan(tmp_path)
    trainer = fit(source, max_epochs=1, limit_val_batches=0)
    trainer.save_checkpoint(tmp_path / "other.ckpt")
    model = tiny_gan(tmp_path, f"model.init_from={tmp_path / 'other.ckpt'}", "model.ema_decay=0.9")
    fit(model, max_steps=0)  # a run starting afresh: it reads init_from, then trains no step
    for a, b in zip(source.generator.state_dict().values(), model.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(source.discriminator.state_dict().values(), model.discriminator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(source.generator.state_dict().values(), model.ema.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the EMA starts from the loaded weights too


def test_init_from_is_not_read_when_resuming(tmp_path):
    fit(tiny_gan(tmp_path), max_epochs=1, limit_val_batches=0).save_checkpoint(tmp_path / "other.ckpt")
    overrides = [f"model.init_from={tmp_path / 'other.ckpt'}", "loss=pixel"]
    fit(tiny_gan(tmp_path, *overrides), max_epochs=1, limit_val_batches=0).save_checkpoint(tmp_path / "run.ckpt")
    (tmp_path / "other.ckpt").unlink()  # the starting point is gone; the run's own checkpoint holds newer weights
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(tiny_gan(tmp_path, *overrides), train_dataloaders=batches(), ckpt_path=tmp_path / "run.ckpt")
    assert trainer.current_epoch == 2


def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path):
    model = tiny_gan(tmp_path, "loss=pixel", "model.max_nonfinite_steps=3")
    model.generator.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    before = [p.detach().clone() for p in model.generator.parameters()]
    with pytest.raises(DequantizerError, match="non-finite losses in 3 batches in a row"):
        fit(model, max_epochs=5, limit_val_batches=0)
    assert model.skipped_steps == 3
    assert all(torch.equal(a, b) for a, b in zip(before, model.generator.parameters(), strict=True))


def test_non_finite_discriminator_losses_are_counted_and_stop_the_run(tmp_path):
    model = tiny_gan(tmp_path, "model.max_nonfinite_steps=3")
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


# -- the quality head of the default model's network -------------------------------------------------------------------
def test_the_quality_head_trains_alongside_and_is_scored(tmp_path):
    cfg = tiny_blind_config(tmp_path)
    model = instantiate(cfg.model, loss=cfg.loss)
    head = [p.detach().clone() for p in model.generator.quality_head.parameters()]
    trainer = fit(model, max_epochs=1)
    logged = trainer.callback_metrics
    assert "train/loss_quality" in logged and "val/quality_error" in logged and "val/quality_loss" in logged
    assert 0 <= float(logged["val/quality_error"]) <= 99
    assert any(not torch.equal(a, b) for a, b in zip(head, model.generator.quality_head.parameters(), strict=True))


def test_trainable_trains_only_the_named_parts(tmp_path):
    cfg = tiny_blind_config(tmp_path, "model.trainable=[quality_head]")
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
    cfg = tiny_blind_config(tmp_path, f"model.predicted_quality_fraction={fraction}")
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

"""The LightningModule: the paper's GAN training with manual optimization, and the PSNR/SSIM evaluation.

Per training batch: one generator forward; a discriminator step on the real and the detached restored images, fed as
one batch (its BatchNorm must see both kinds); then a generator step with the discriminator frozen (toggled
optimizer), skipped during the discriminator's warm-up. With an adversarial weight of 0 (pixel pre-training), the
discriminator is neither run nor trained. One training step (``global_step``: ``max_steps``, logging, checkpoints) is
one batch, in GAN and pixel-only runs alike: only the generator's optimizer step is counted.

Images travel as uint8 from the DataModule; the networks see [-1, 1] (the paper's tanh range); losses and metrics see
[0, 1] RGB, metrics after clamping.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MeanMetric

from dequantizer.errors import DequantizerError
from dequantizer.losses import GeneratorLoss, discriminator_loss, quantile_loss
from dequantizer.metrics import image_metrics
from dequantizer.models import to_model_range, to_unit_range
from dequantizer.surgery import freeze_all_but, initialise_from

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "psnr_jpeg", "ssim_jpeg")


def plain(config: Any) -> Any:
    """OmegaConf -> plain Python containers, so checkpoints load with ``torch.load(weights_only=True)``."""
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig | ListConfig) else config


class DequantizerGAN(L.LightningModule):
    """GAN training of the generator against the discriminator. The configs are Hydra ``_target_`` mappings, kept
    (as plain containers) in the checkpoint's hyper-parameters, so that a checkpoint records how to rebuild the
    networks. Weight surgery (``init_from``, ``trainable``, ``grow``) is ``dequantizer.surgery``'s; what a resumed run
    restores besides this module's state (the random stream, a changed schedule) is ``dequantizer.callbacks``'."""

    def __init__(
        self,
        generator: Mapping,  # the networks (dequantizer.models)
        discriminator: Mapping,
        loss: Mapping,  # the generator's loss (dequantizer.losses.GeneratorLoss)
        optimizer_g: Mapping,  # optimizers, instantiated with params=
        optimizer_d: Mapping,
        scheduler: Mapping | None = None,  # LR scheduler of both optimizers, stepped once per epoch
        clip_gradients: float | None = None,  # max gradient norm of both networks
        ema_decay: float | None = None,  # keep an EMA of the generator, which validation and export then use
        init_from: str | None = None,  # a .ckpt or generator .safetensors to start from (not read when resuming)
        compile: bool = False,  # torch.compile the generator and discriminator
        num_logged_images: int = 4,  # rows of the validation grid (JPEG | restored | original)
        max_nonfinite_steps: int = 20,  # a non-finite loss skips its step; this many batches in a row stop the run
        quality_weight: float = 0.1,  # weight of the quality head's loss, for generators that predict the quality
        discriminator_warmup_steps: int = 0,  # GAN runs: the first steps train only the discriminator
        predicted_quality_fraction: float = 0.0,  # share of batches restored with the head's predicted quality
        quality_quantile: float = 0.5,  # the quantile of the JPEG quality that the quality head learns to predict
        trainable: Sequence[str] | None = None,  # the generator's parts to train, the rest frozen; None: all
        grow: bool = False,  # init_from may have fewer residual blocks per level: the others start as the identity
    ):
        super().__init__()
        if not 0 <= predicted_quality_fraction <= 1:
            raise DequantizerError(
                f"model.predicted_quality_fraction={predicted_quality_fraction} must lie between 0 and 1"
            )
        if not 0 < quality_quantile < 1:
            raise DequantizerError(f"model.quality_quantile={quality_quantile} must lie strictly between 0 and 1")
        if isinstance(trainable, str):  # model.trainable=quality_head on the command line
            trainable = [trainable]
        self.save_hyperparameters(logger=False)  # the arguments, as they are now
        # Plain containers, not OmegaConf's: checkpoints then load with torch.load(weights_only=True).
        self.hparams.update({name: plain(value) for name, value in self.hparams.items()})
        self.automatic_optimization = False
        self.generator: nn.Module = instantiate(self.hparams.generator)
        self.discriminator: nn.Module = instantiate(self.hparams.discriminator)
        self.loss: GeneratorLoss = instantiate(self.hparams.loss)
        self.ema = None  # an exponential moving average of the generator: what validation and export use
        if ema_decay:
            self.ema = AveragedModel(self.generator, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        self.predicts_quality = hasattr(self.generator, "quality_head")
        # For generators that predict the quality: quality_error, the mean absolute error of the predicted JPEG
        # quality, and quality_loss, the head's own training loss (what a run that trains only the head improves).
        metrics = METRICS + ("quality_error", "quality_loss") if self.predicts_quality else METRICS
        self.metrics = nn.ModuleDict({name: MeanMetric() for name in metrics})
        self.example_grid: torch.Tensor | None = None  # JPEG | restored | original, from the last evaluation
        self.test_results: dict[str, float] = {}
        self.skipped_steps = 0  # generator steps skipped in this run (non-finite loss)
        self.skipped_steps_d = 0  # discriminator steps skipped
        self.nonfinite_streak = 0  # batches in a row with a skipped step

    # -- setup ---------------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            self.generator.compile()
            self.discriminator.compile()

    def on_fit_start(self) -> None:
        # Lightning has restored a resumed checkpoint by now (trainer.ckpt_path): its weights are newer than
        # init_from's, whose file may be gone since, so init_from is read only by a run that starts afresh.
        if self.hparams.init_from and self.trainer.ckpt_path is None:
            initialise_from(self.hparams.init_from, self.generator, self.discriminator, self.hparams.trainable,
                            self.hparams.grow)
            if self.ema is not None:
                self.ema.module.load_state_dict(self.generator.state_dict())

    def configure_optimizers(self):
        opt_g = instantiate(self.hparams.optimizer_g, params=freeze_all_but(self.generator, self.hparams.trainable))
        opt_d = instantiate(self.hparams.optimizer_d, params=self.discriminator.parameters())
        if not self.hparams.scheduler:
            return [opt_g, opt_d]
        schedulers = [instantiate(self.hparams.scheduler, optimizer=opt) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def _quality_loss(self, predicted: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        # Pinball loss on quality / 100 (quantile 0.5: the median, an L1 loss). Above 0.5 the head errs high: restoring
        # an image as if it were worse than it is costs far more than restoring it too gently.
        return quantile_loss(predicted.float() / 100, quality.float() / 100, self.hparams.quality_quantile)

    # -- training ------------------------------------------------------------------------------------------------------
    def _step(self, optimizer, loss: torch.Tensor, counted: bool = True) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.hparams.clip_gradients:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.clip_gradients,
                                gradient_clip_algorithm="norm")
        if counted:
            optimizer.step()
        else:
            # The same step through the strategy (precision plugin included) but past Lightning's step counter, which
            # counts every optimizer's steps: global_step stays one per batch.
            self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None)

    def _finite_everywhere(self, loss: torch.Tensor) -> bool:
        """Whether ``loss`` is finite on every process. The skip decision must be the same on all ranks: a rank that
        skips its backward while the others all-reduce their gradients would leave them waiting forever."""
        return self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True)

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        jpeg, target, quality = batch
        inputs, real = to_model_range(jpeg), to_model_range(target)
        opt_g, opt_d = self.optimizers()
        logs: dict[str, torch.Tensor] = {}
        skipped: list[str] = []  # the networks whose step this batch skipped (non-finite loss)
        # The one generator forward of this batch. A quality-aware generator is told the true quality (so its body
        # learns what each quality needs) and its head learns to predict it, for inputs whose quality is unknown;
        # a share of batches is restored with the head's own estimate, as a decoded image without tables is.
        # While the discriminator warms up, only it learns: the generator's output is data, not a graph.
        warming_up = self.loss.uses_discriminator and self.global_step < self.hparams.discriminator_warmup_steps
        with torch.set_grad_enabled(not warming_up):
            if self.predicts_quality:
                told = None if random.random() < self.hparams.predicted_quality_fraction else quality
                restored, predicted = self.generator(inputs, told, return_quality=True)
                quality_loss = self._quality_loss(predicted, quality)
                logs["train/loss_quality"] = quality_loss
            else:
                restored, quality_loss = self.generator(inputs), None

        fake_logits = None
        if self.loss.uses_discriminator:
            with self.toggled_optimizer(opt_d):
                # Real and restored through D as one batch: its BatchNorm must see both kinds (see Discriminator).
                real_logits, detached_logits = self.discriminator.compare(real, restored.detach())
                loss_d = discriminator_loss(real_logits, detached_logits)
                if self._finite_everywhere(loss_d):
                    self._step(opt_d, loss_d, counted=warming_up)  # counted when it is the batch's only step
                else:
                    self.skipped_steps_d += 1
                    skipped.append("discriminator")
            d_real, d_fake = torch.sigmoid(real_logits.float()).mean(), torch.sigmoid(detached_logits.float()).mean()
            logs |= {"train/loss_d": loss_d, "train/d_real_prob": d_real, "train/d_fake_prob": d_fake,
                     "train/d_separation": d_real - d_fake}
        if warming_up:
            self.log_dict({name: value.detach().float() for name, value in logs.items()})
            self._count_nonfinite(skipped, batch_idx)
            return {"d": loss_d.detach().float(), "d_separation": logs["train/d_separation"].detach().float()}

        with self.toggled_optimizer(opt_g):
            if self.loss.uses_discriminator:
                fake_logits = self.discriminator.compare(real, restored)[1]
            terms = self.loss(to_unit_range(restored), to_unit_range(real), fake_logits)
            if quality_loss is not None:
                terms["total"] = terms["total"] + self.hparams.quality_weight * quality_loss
            if self._finite_everywhere(terms["total"]):
                self._step(opt_g, terms["total"])
            else:
                self.skipped_steps += 1
                skipped.append("generator")
        if self.ema is not None:
            self.ema.update_parameters(self.generator)
        logs |= {f"train/loss_{name}" if name != "total" else "train/loss_g": value for name, value in terms.items()}
        self.log_dict({name: value.detach().float() for name, value in logs.items()}, prog_bar=False)
        self.log("train/loss", terms["total"].detach().float(), prog_bar=True)
        self.log("train/skipped_steps", float(self.skipped_steps))
        if self.loss.uses_discriminator:
            self.log("train/skipped_steps_d", float(self.skipped_steps_d))
        self._count_nonfinite(skipped, batch_idx)
        # The step's losses, detached, for callbacks (EpochLog): the generator's total first, then D's separation.
        losses = {"g": terms["total"]} | {name.removeprefix("train/loss_"): value for name, value in logs.items()
                                          if name.startswith("train/loss_") and name != "train/loss_g"}
        if "train/d_separation" in logs:
            losses["d_separation"] = logs["train/d_separation"]
        return {name: value.detach().float() for name, value in losses.items()}

    def _count_nonfinite(self, skipped: list[str], batch_idx: int) -> None:
        # Every rank takes the same decisions (_finite_everywhere), so all ranks stop at the same batch.
        self.nonfinite_streak = self.nonfinite_streak + 1 if skipped else 0
        if not skipped:
            return
        if self.trainer.is_global_zero:
            log.warning("non-finite %s loss at epoch %d, batch %d: step skipped", " and ".join(skipped),
                        self.current_epoch, batch_idx)
        if self.nonfinite_streak >= self.hparams.max_nonfinite_steps:
            raise DequantizerError(
                f"non-finite losses in {self.nonfinite_streak} batches in a row: training stopped, the last good "
                "checkpoint is left as it was; lower the learning rate or set model.clip_gradients, then rerun to "
                "resume"
            )

    def on_train_epoch_start(self) -> None:
        # Bring the per-epoch schedulers to this epoch. Stepping here rather than at epoch end keeps a resumed run on
        # schedule: last.ckpt is written at validation end, before the epoch-end hooks would have stepped them.
        schedulers = self.lr_schedulers()
        if schedulers:
            scheduler_g, scheduler_d = schedulers
            while scheduler_g.last_epoch < self.current_epoch:
                scheduler_g.step()
            while self.loss.uses_discriminator and scheduler_d.last_epoch < self.current_epoch:
                scheduler_d.step()  # D is neither trained nor scheduled in pixel-only runs
        opt_g, opt_d = self.optimizers()
        self.log_dict({"train/lr_g": opt_g.param_groups[0]["lr"], "train/lr_d": opt_d.param_groups[0]["lr"]})

    # -- evaluation ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _evaluate(self, batch, batch_idx: int) -> None:
        jpeg, target, quality = batch
        inputs = to_model_range(jpeg)
        generator = self.ema.module if self.ema is not None else self.generator  # the one export takes too
        # Told the true quality, as a JPEG file's tables tell it; the head's own estimate is scored beside.
        if self.predicts_quality:
            out, predicted = generator(inputs, quality, return_quality=True)
            self.metrics["quality_error"].update((predicted.float() - quality.float()).abs())
            self.metrics["quality_loss"].update(self._quality_loss(predicted, quality))
        else:
            out = generator(inputs)
        restored = to_unit_range(out).clamp(0, 1)
        jpeg01, target01 = jpeg.float() / 255, target.float() / 255
        psnr, ssim = image_metrics(restored, target01)
        psnr_jpeg, ssim_jpeg = image_metrics(jpeg01, target01)
        for name, values in zip(METRICS, (psnr, ssim, psnr_jpeg, ssim_jpeg), strict=True):
            self.metrics[name].update(values)
        if batch_idx == 0:
            count = self.hparams.num_logged_images
            rows = torch.stack([jpeg01[:count], restored[:count], target01[:count]], dim=1).flatten(0, 1)
            self.example_grid = torchvision.utils.make_grid(rows.cpu(), nrow=3, padding=2, pad_value=1.0)

    def _log_evaluation(self, stage: str) -> dict[str, float]:
        values = {name: float(metric.compute()) for name, metric in self.metrics.items()}
        for metric in self.metrics.values():
            metric.reset()
        values["psnr_gain"] = values["psnr"] - values["psnr_jpeg"]
        self.log_dict({f"{stage}/{name}": value for name, value in values.items() if name != "psnr"})
        self.log(f"{stage}/psnr", values["psnr"], prog_bar=True)
        return values

    validation_step = test_step = _evaluate  # the same metrics on either split

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")  # the grid goes to the loggers through callbacks.LogValidationImages

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_evaluation("test")


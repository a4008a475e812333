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
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
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

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "psnr_jpeg", "ssim_jpeg")


def plain(config: Any) -> Any:
    """OmegaConf -> plain Python containers, so checkpoints load with ``torch.load(weights_only=True)``."""
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig | ListConfig) else config


def _block_of(key: str) -> str:
    """The residual block a generator weight belongs to: ``decoder.2.4.conv1.weight`` -> ``decoder.2.4``."""
    return ".".join(key.split(".")[:3])


class DequantizerGAN(L.LightningModule):
    """GAN training of the generator against the discriminator.

    Args are Hydra configs (``_target_`` mappings) so that checkpoints record how to rebuild the networks:
        generator, discriminator: the networks (``dequantizer.models``).
        loss: the generator's loss (``dequantizer.losses.GeneratorLoss``).
        optimizer_g, optimizer_d: optimizers, instantiated with ``params=``.
        scheduler: optional LR scheduler for both optimizers, stepped by hand once per epoch.
        clip_gradients: max gradient norm for both networks, or None.
        ema_decay: keep an exponential moving average of the generator (used for validation and export), or None.
        init_from: a checkpoint (.ckpt) or generator weights (.safetensors) to start from, e.g. the paper's Phi
            starting from Gimel. Ignored when resuming, since the resumed checkpoint holds newer weights.
        compile: ``torch.compile`` the generator and discriminator.
        max_nonfinite_steps: a non-finite loss skips its step (with a warning; on every rank when any rank has one);
            this many batches in a row with one stop the run.
        quality_weight: weight of the quality head's loss (JPEG quality / 100; see ``quality_quantile``), for
            generators that predict the quality of their input (``QualityUNet``); such generators are told the true
            quality while training.
        quality_quantile: the quantile of the JPEG quality that the head learns to predict (pinball loss; 0.5 is the
            median, an L1 loss). Above 0.5 it errs towards the higher quality: restoring an image as if it were
            worse than it is costs far more than restoring it too gently (a quality-100 photo taken for 78 lost 9 dB;
            the other way round loses part of the gain).
        trainable: names of the generator's submodules to train (e.g. ``[quality_head]``); the rest is frozen (its
            weights; BatchNorm statistics, which ``QualityUNet`` has none of, would still update). None trains all of
            it. Parts that a run trains may start afresh where ``init_from`` lacks their weights.
        grow: ``init_from`` may hold fewer residual blocks per level (a ``QualityUNet`` with fewer
            ``encoder_blocks``/``decoder_blocks``): the blocks it lacks start as the identity (their second
            convolution at zero), so the deeper network starts out restoring exactly as the one it grew from.
        discriminator_warmup_steps: in GAN runs, the first steps train the discriminator only (the generator is not
            stepped), so that the adversarial signal starts from a discriminator that already tells restored images
            from real ones (BasicSR's ``net_d_init_iters``).
    """

    def __init__(
        self,
        generator: Mapping,
        discriminator: Mapping,
        loss: Mapping,
        optimizer_g: Mapping,
        optimizer_d: Mapping,
        scheduler: Mapping | None = None,
        clip_gradients: float | None = None,
        ema_decay: float | None = None,
        init_from: str | None = None,
        compile: bool = False,
        num_logged_images: int = 4,
        max_nonfinite_steps: int = 20,
        quality_weight: float = 0.1,
        discriminator_warmup_steps: int = 0,
        predicted_quality_fraction: float = 0.0,
        quality_quantile: float = 0.5,
        trainable: Sequence[str] | None = None,
        grow: bool = False,
    ):
        super().__init__()
        if not 0 <= predicted_quality_fraction <= 1:
            raise DequantizerError(
                f"model.predicted_quality_fraction={predicted_quality_fraction} must lie between 0 and 1"
            )
        if isinstance(trainable, str):  # model.trainable=quality_head on the command line
            trainable = [trainable]
        if not 0 < quality_quantile < 1:
            raise DequantizerError(f"model.quality_quantile={quality_quantile} must lie strictly between 0 and 1")
        hparams = dict(
            generator=generator, discriminator=discriminator, loss=loss, optimizer_g=optimizer_g,
            optimizer_d=optimizer_d, scheduler=scheduler, clip_gradients=clip_gradients, ema_decay=ema_decay,
            init_from=init_from, compile=compile, num_logged_images=num_logged_images,
            max_nonfinite_steps=max_nonfinite_steps, quality_weight=quality_weight,
            discriminator_warmup_steps=discriminator_warmup_steps,
            predicted_quality_fraction=predicted_quality_fraction, quality_quantile=quality_quantile,
            trainable=trainable, grow=grow,
        )  # fmt: skip
        self.save_hyperparameters({name: plain(value) for name, value in hparams.items()}, logger=False)
        self.automatic_optimization = False
        self.generator: nn.Module = instantiate(self.hparams.generator)
        self.discriminator: nn.Module = instantiate(self.hparams.discriminator)
        self.loss: GeneratorLoss = instantiate(self.hparams.loss)
        self.ema = (
            AveragedModel(self.generator, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            if ema_decay
            else None
        )
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

    @property
    def restoring_generator(self) -> nn.Module:
        """The generator used for evaluation and export: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.generator

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
            self.load_initial_weights(self.hparams.init_from)

    def load_initial_weights(self, path: str) -> None:
        from dequantizer.weights import generator_state_from_checkpoint, load_generator_state, read_checkpoint

        file = Path(path)
        if not file.is_file():
            raise DequantizerError(
                f"model.init_from={path} does not exist: train that experiment first, or set model.init_from=null"
            )
        try:
            if file.suffix == ".safetensors":
                self._load_generator(load_generator_state(file))
            else:
                # The generator that was validated and exported: the EMA copy when the run kept one.
                checkpoint = read_checkpoint(file)
                self._load_generator(generator_state_from_checkpoint(checkpoint))
                state = checkpoint["state_dict"]
                prefix = "discriminator."
                discriminator = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                if discriminator:
                    self.discriminator.load_state_dict(discriminator)
        except RuntimeError as error:
            raise DequantizerError(
                f"model.init_from={path} holds a different architecture: {str(error).splitlines()[0]}"
            ) from None
        if self.ema is not None:
            self.ema.module.load_state_dict(self.generator.state_dict())
        log.info("initialised weights from %s", path)

    def _quality_loss(self, predicted: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        return quantile_loss(predicted.float() / 100, quality.float() / 100, self.hparams.quality_quantile)

    def _load_generator(self, state: dict[str, torch.Tensor]) -> None:
        """Strictly, except that the parts this run trains (``trainable``) start afresh where ``state`` has none of
        their weights or other shapes (e.g. a quality head that reads other features), and that with ``grow`` the
        residual blocks ``state`` lacks start as the identity."""
        if self.hparams.trainable is None and not self.hparams.grow:
            self.generator.load_state_dict(state)
            return
        own = self.generator.state_dict()
        trained = tuple(f"{name}." for name in self.hparams.trainable or ())
        fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        kept = {k: v for k, v in state.items() if k in fits or not k.startswith(trained)}
        missing, unexpected = self.generator.load_state_dict(kept, strict=False)
        new_blocks = self._new_blocks(missing, state) if self.hparams.grow else set()
        left_missing = [k for k in missing if not k.startswith(trained) and _block_of(k) not in new_blocks]
        if left_missing or unexpected:
            raise RuntimeError(f"missing {left_missing[:3]}, unexpected {unexpected[:3]}")
        frozen_new = sorted(name for name in new_blocks if trained and not f"{name}.".startswith(trained))
        if frozen_new:
            raise DequantizerError(f"model.grow: the new blocks {frozen_new} would stay the identity, frozen by "
                                   f"model.trainable={list(self.hparams.trainable)}: train them too, or grow nothing")
        for name in sorted(new_blocks):
            conv2 = self.generator.get_submodule(name).conv2
            with torch.no_grad():
                conv2.weight.zero_()
                conv2.bias.zero_()
        if new_blocks:
            log.info("init_from: %d new residual blocks start as the identity: %s", len(new_blocks), sorted(new_blocks))
        fresh = sorted({k.split(".")[0] for k in missing if k.startswith(trained) and _block_of(k) not in new_blocks})
        if fresh:
            log.info("init_from: %s start afresh (not in the file, or of other shapes)", fresh)

    def _new_blocks(self, missing: Sequence[str], state: dict[str, torch.Tensor]) -> set[str]:
        """The residual blocks (``encoder.L.i``/``decoder.L.i``) of which ``state`` holds no weight at all."""
        held = {_block_of(k) for k in state}
        candidates = {_block_of(k) for k in missing if k.startswith(("encoder.", "decoder."))}
        return {name for name in candidates
                if name not in held and hasattr(self.generator.get_submodule(name), "conv2")}

    def _trainable_generator_parameters(self) -> list[nn.Parameter]:
        """The generator's parameters that ``trainable`` names (all of them without it); the others are frozen."""
        if self.hparams.trainable is None:
            return list(self.generator.parameters())
        children = dict(self.generator.named_children())
        unknown = [name for name in self.hparams.trainable if name not in children]
        if unknown:
            raise DequantizerError(
                f"model.trainable names {unknown}, which this generator lacks: choose from {sorted(children)}"
            )
        for name, child in children.items():
            child.requires_grad_(name in self.hparams.trainable)
        return [p for name in self.hparams.trainable for p in children[name].parameters()]

    def configure_optimizers(self):
        opt_g = instantiate(self.hparams.optimizer_g, params=self._trainable_generator_parameters())
        opt_d = instantiate(self.hparams.optimizer_d, params=self.discriminator.parameters())
        if not self.hparams.scheduler:
            return [opt_g, opt_d]
        schedulers = [instantiate(self.hparams.scheduler, optimizer=opt) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    # -- random state: a resumed run continues the random stream instead of replaying it from the seed -------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        _, keys, position, *_ = np.random.get_state()
        version, python_state, gauss = random.getstate()
        checkpoint["rng_states"] = {
            "python": torch.tensor(python_state, dtype=torch.int64),
            "python_gauss": gauss,
            "numpy": torch.from_numpy(keys.astype(np.int64)),
            "numpy_position": int(position),
            "torch": torch.get_rng_state(),
        }  # plain tensors and numbers: loadable with weights_only=True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Called before Lightning loads the optimizer and scheduler states from this same dict.
        saved_scheduler = checkpoint.get("hyper_parameters", {}).get("scheduler")
        if "optimizer_states" in checkpoint and saved_scheduler != self.hparams.scheduler:
            self._follow_new_schedule(checkpoint, saved_scheduler)
        states = checkpoint.get("rng_states")
        if not states:
            return
        random.setstate((3, tuple(states["python"].tolist()), states["python_gauss"]))
        np.random.set_state(("MT19937", states["numpy"].numpy().astype(np.uint32), states["numpy_position"], 0, 0.0))
        torch.set_rng_state(states["torch"])

    def _follow_new_schedule(self, checkpoint: dict[str, Any], saved_scheduler: Mapping | None) -> None:
        """The resumed run's schedule differs from the config (``trainer.max_epochs`` raised, so a cosine's ``T_max``
        with it): set the learning rates and scheduler states to what a run started with this config would have now.
        Restoring the old ones would keep the old length, and past its end a cosine climbs back up."""
        saved_states = checkpoint.get("lr_schedulers") or []
        rebuilt = []
        for index, optimizer_config in enumerate((self.hparams.optimizer_g, self.hparams.optimizer_d)):
            # A stand-in optimizer: schedules only read and write its learning rates.
            stand_in = instantiate(optimizer_config, params=[torch.zeros(1, requires_grad=True)])
            if self.hparams.scheduler:
                scheduler = instantiate(self.hparams.scheduler, optimizer=stand_in)
                position = saved_states[index]["last_epoch"] if index < len(saved_states) else 0
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": intended here
                    for _ in range(position):
                        scheduler.step()
                rebuilt.append(scheduler.state_dict())
            for group, new_group in zip(checkpoint["optimizer_states"][index]["param_groups"], stand_in.param_groups,
                                        strict=True):
                group["lr"] = new_group["lr"]
                if "initial_lr" in new_group:
                    group["initial_lr"] = new_group["initial_lr"]
        checkpoint["lr_schedulers"] = rebuilt
        before, after = saved_scheduler or {}, self.hparams.scheduler or {}
        changes = [f"{key} {before.get(key)} -> {after.get(key)}" for key in sorted(set(before) | set(after))
                   if before.get(key) != after.get(key)]
        if self.trainer.is_global_zero:
            log.warning("model.scheduler changed since the run started (%s): the learning rates follow the new "
                        "schedule, as if the run had started with it", ", ".join(changes))

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
        # Told the true quality, as a JPEG file's tables tell it; the head's own estimate is scored beside.
        if self.predicts_quality:
            out, predicted = self.restoring_generator(inputs, quality, return_quality=True)
            self.metrics["quality_error"].update((predicted.float() - quality.float()).abs())
            self.metrics["quality_loss"].update(self._quality_loss(predicted, quality))
        else:
            out = self.restoring_generator(inputs)
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

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")
        if self.example_grid is not None and not self.trainer.sanity_checking:
            log_image_grid(self.trainer, self.example_grid, "val/examples", self.current_epoch)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_evaluation("test")


def log_image_grid(trainer: L.Trainer, grid: torch.Tensor, key: str, epoch: int) -> None:
    """Send the JPEG | restored | original grid to every logger: W&B and TensorBoard natively, others as PNG files.

    Sent as 8-bit pixels: W&B (0.31) reads a float array as 0-255, so a [0, 1] grid would be stored black."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if trainer.global_rank != 0:
        return
    pixels = grid.clamp(0, 1).mul(255).round().to(torch.uint8)
    image = torchvision.transforms.functional.to_pil_image(pixels)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], caption=["JPEG | restored | original"], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, pixels, trainer.global_step)
        elif logger.log_dir:
            from dequantizer.images import save_image_atomic

            save_image_atomic(image, Path(logger.log_dir) / "images" / f"val_epoch{epoch:03d}.png")

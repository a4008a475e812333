"""The LightningModule: the paper's GAN training with manual optimization, and the PSNR/SSIM evaluation.

Per training batch: one generator forward; a discriminator step on the detached restored images; then a generator step
with the discriminator frozen (toggled optimizer). With an adversarial weight of 0 (pixel pre-training), the
discriminator is neither run nor trained.

Images travel as uint8 from the DataModule; the networks see [-1, 1] (the paper's tanh range); losses and metrics see
[0, 1] RGB, metrics after clamping.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from hydra.utils import instantiate
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MeanMetric
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from dequantizer.errors import DequantizerError
from dequantizer.files import atomic_write
from dequantizer.losses import GeneratorLoss, discriminator_loss
from dequantizer.models import to_model_range, to_unit_range

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "psnr_jpeg", "ssim_jpeg")


def plain(config: Any) -> Any:
    """OmegaConf -> plain Python containers, so checkpoints load with ``torch.load(weights_only=True)``."""
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config


def image_metrics(restored: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR and SSIM on clamped [0, 1] RGB (shape (N,) each), always in fp32.

    SSIM's variance terms (E[x^2] - E[x]^2) fall apart in bf16, so autocast is switched off here.
    """
    with torch.autocast(restored.device.type, enabled=False):
        restored, target = restored.float().clamp(0, 1), target.float().clamp(0, 1)
        psnr = peak_signal_noise_ratio(restored, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
        ssim = structural_similarity_index_measure(restored, target, data_range=1.0, reduction="none")
    return psnr, ssim


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
        max_nonfinite_steps: a non-finite loss skips its step (with a warning); this many in a row stop the run.
        quality_weight: weight of the quality head's L1 loss (JPEG quality / 100), for generators that predict the
            quality of their input (``QualityUNet``); such generators are told the true quality while training.
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
    ):
        super().__init__()
        hparams = dict(
            generator=generator, discriminator=discriminator, loss=loss, optimizer_g=optimizer_g,
            optimizer_d=optimizer_d, scheduler=scheduler, clip_gradients=clip_gradients, ema_decay=ema_decay,
            init_from=init_from, compile=compile, num_logged_images=num_logged_images,
            max_nonfinite_steps=max_nonfinite_steps, quality_weight=quality_weight,
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
        # quality_error: mean absolute error of the predicted JPEG quality, for generators that predict it.
        metrics = METRICS + ("quality_error",) if self.predicts_quality else METRICS
        self.metrics = nn.ModuleDict({name: MeanMetric() for name in metrics})
        self.example_grid: torch.Tensor | None = None  # JPEG | restored | original, from the last evaluation
        self.test_results: dict[str, float] = {}
        self.skipped_steps = 0  # non-finite steps skipped in this run
        self.nonfinite_streak = 0

    @property
    def restoring_generator(self) -> nn.Module:
        """The generator used for evaluation and export: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.generator

    # -- setup ---------------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Runs before Lightning restores a resumed checkpoint, so init_from never overrides resumed weights.
        if stage == "fit" and self.hparams.init_from:
            self.load_initial_weights(self.hparams.init_from)
        self.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            self.generator.compile()
            self.discriminator.compile()

    def load_initial_weights(self, path: str) -> None:
        from dequantizer.weights import generator_state_from_checkpoint, load_generator_state, read_checkpoint

        file = Path(path)
        if not file.is_file():
            raise DequantizerError(
                f"model.init_from={path} does not exist: train that experiment first, or set model.init_from=null"
            )
        try:
            if file.suffix == ".safetensors":
                self.generator.load_state_dict(load_generator_state(file))
            else:
                # The generator that was validated and exported: the EMA copy when the run kept one.
                checkpoint = read_checkpoint(file)
                self.generator.load_state_dict(generator_state_from_checkpoint(checkpoint))
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

    def configure_optimizers(self):
        opt_g = instantiate(self.hparams.optimizer_g, params=self.generator.parameters())
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
        states = checkpoint.get("rng_states")
        if not states:
            return
        random.setstate((3, tuple(states["python"].tolist()), states["python_gauss"]))
        np.random.set_state(("MT19937", states["numpy"].numpy().astype(np.uint32), states["numpy_position"], 0, 0.0))
        torch.set_rng_state(states["torch"])

    # -- training ------------------------------------------------------------------------------------------------------
    def _step(self, optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.hparams.clip_gradients:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.clip_gradients,
                                gradient_clip_algorithm="norm")
        optimizer.step()

    def training_step(self, batch, batch_idx: int) -> None:
        jpeg, target, quality = batch
        inputs, real = to_model_range(jpeg), to_model_range(target)
        opt_g, opt_d = self.optimizers()
        logs: dict[str, torch.Tensor] = {}
        # The one generator forward of this batch. A quality-aware generator is told the true quality (so its body
        # learns what each quality needs) and its head learns to predict it, for inputs whose quality is unknown.
        if self.predicts_quality:
            restored, predicted = self.generator(inputs, quality, return_quality=True)
            quality_loss = F.l1_loss(predicted.float(), quality.float()) / 100
            logs["train/loss_quality"] = quality_loss
        else:
            restored, quality_loss = self.generator(inputs), None

        fake_logits = None
        if self.loss.uses_discriminator:
            with self.toggled_optimizer(opt_d):
                real_logits = self.discriminator(real)
                detached_logits = self.discriminator(restored.detach())
                loss_d = discriminator_loss(real_logits, detached_logits)
                if torch.isfinite(loss_d):
                    self._step(opt_d, loss_d)
            logs |= {
                "train/loss_d": loss_d,
                "train/d_real_prob": torch.sigmoid(real_logits.float()).mean(),
                "train/d_fake_prob": torch.sigmoid(detached_logits.float()).mean(),
            }

        with self.toggled_optimizer(opt_g):
            if self.loss.uses_discriminator:
                fake_logits = self.discriminator(restored)
            terms = self.loss(to_unit_range(restored), to_unit_range(real), fake_logits)
            if quality_loss is not None:
                terms["total"] = terms["total"] + self.hparams.quality_weight * quality_loss
            if torch.isfinite(terms["total"]):
                self._step(opt_g, terms["total"])
                self.nonfinite_streak = 0
            else:
                self._skip_nonfinite_step()
        if self.ema is not None:
            self.ema.update_parameters(self.generator)
        logs |= {f"train/loss_{name}" if name != "total" else "train/loss_g": value for name, value in terms.items()}
        self.log_dict({name: value.detach().float() for name, value in logs.items()}, prog_bar=False)
        self.log("train/loss", terms["total"].detach().float(), prog_bar=True)
        self.log("train/skipped_steps", float(self.skipped_steps))

    def _skip_nonfinite_step(self) -> None:
        self.skipped_steps += 1
        self.nonfinite_streak += 1
        log.warning("non-finite generator loss at step %d: step skipped", self.global_step)
        if self.nonfinite_streak >= self.hparams.max_nonfinite_steps:
            raise DequantizerError(
                f"{self.nonfinite_streak} non-finite losses in a row: training stopped, the last good checkpoint is "
                "left as it was; lower the learning rate or set model.clip_gradients, then rerun to resume"
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
    """Send the JPEG | restored | original grid to every logger: W&B and TensorBoard natively, others as PNG files."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if trainer.global_rank != 0:
        return
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[grid], caption=["JPEG | restored | original"], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, trainer.global_step)
        elif logger.log_dir:
            from dequantizer.data.images import save_image_atomic

            image = torchvision.transforms.functional.to_pil_image(grid)
            save_image_atomic(image, Path(logger.log_dir) / "images" / f"val_epoch{epoch:03d}.png")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a process killed mid-write leaves the previous
    last.ckpt intact (Lightning's own writer truncates the file first)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(path, buffer.getvalue())


class SaveOnPreemption(L.Callback):
    """On SIGTERM (SLURM pre-emption, `kill`), Lightning stops after the current batch; this saves last.ckpt first,
    so the rerun resumes mid-epoch instead of losing the epoch."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException):
            return
        trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            log.warning("SIGTERM: saved %s at step %d; run the same command again to resume", self.path,
                        trainer.global_step)

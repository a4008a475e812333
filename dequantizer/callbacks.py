"""Lightning callbacks and plugins of a training run: atomic checkpoints, a checkpoint on pre-emption, what a resumed
run restores besides the module's own state (the random stream, a changed LR schedule), a line per epoch, the
validation images sent to the loggers."""

from __future__ import annotations

import io
import logging
import random
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torchvision
from hydra.utils import instantiate
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dequantizer.files import atomic_write
from dequantizer.images import save_image_atomic

log = logging.getLogger(__name__)


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


class EpochLog(L.Callback):
    """One line per epoch through the ``dequantizer`` log (under train.py: the run's train.log and stdout), so a run
    nobody watches on a terminal (nohup, SLURM, CI) shows it is alive and how it goes:

    epoch 3/6, step 300: loss g 0.02395, pixel 0.02395 | val PSNR 33.76 dB, JPEG 33.37 (+0.39) | 289.4 s, 5.5 images/s

    Losses are the epoch's means on rank 0; images/s counts every rank's images, validation time included.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.images, self.batches = time.perf_counter(), 0, 0
        self.loss_sums: dict[str, torch.Tensor] = {}
        self.validated = False

    # A run resumed mid-epoch starts without on_train_epoch_start: count from here.
    on_train_start = on_train_epoch_start

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.images += len(batch[0])
        self.batches += 1
        for name, value in (outputs or {}).items():  # the step's detached losses (DequantizerGAN.training_step)
            self.loss_sums[name] = self.loss_sums.get(name, 0) + value  # summed where they are: no sync per step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.batches:
            return
        seconds = time.perf_counter() - self.start
        losses = ", ".join(f"{name} {float(total) / self.batches:.4g}" for name, total in self.loss_sums.items())
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        line = f"epoch {trainer.current_epoch + 1}{of}, step {trainer.global_step}: loss {losses}"
        metrics = trainer.callback_metrics
        if self.validated and "val/psnr" in metrics:
            psnr, jpeg = float(metrics["val/psnr"]), float(metrics["val/psnr_jpeg"])
            line += f" | val PSNR {psnr:.2f} dB, JPEG {jpeg:.2f} ({psnr - jpeg:+.2f})"
        line += f" | {seconds:.1f} s, {self.images * trainer.world_size / seconds:.1f} images/s"
        log.info(line)


class RandomStateCheckpoint(L.Callback):
    """Python's, NumPy's and torch's random states saved in each checkpoint (its ``rng_states``) and restored from it,
    so that a resumed run continues the random stream instead of replaying it from the seed."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        _, keys, position, *_ = np.random.get_state()
        _, python_state, gauss = random.getstate()
        checkpoint["rng_states"] = {
            "python": torch.tensor(python_state, dtype=torch.int64),
            "python_gauss": gauss,
            "numpy": torch.from_numpy(keys.astype(np.int64)),
            "numpy_position": int(position),
            "torch": torch.get_rng_state(),
        }  # plain tensors and numbers: loadable with weights_only=True

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        random.setstate((3, tuple(states["python"].tolist()), states["python_gauss"]))
        np.random.set_state(("MT19937", states["numpy"].numpy().astype(np.uint32), states["numpy_position"], 0, 0.0))
        torch.set_rng_state(states["torch"])


class RescheduleOnResume(L.Callback):
    """A run resumed with another ``model.scheduler`` than the one it started with (``trainer.max_epochs`` raised, so a
    cosine's ``T_max`` with it) follows the new schedule: the learning rates and scheduler states are set to what a run
    started with this config would have now. Restoring the saved ones would keep the old length, and past its end a
    cosine climbs back up.

    For ``DequantizerGAN``, whose two optimizers (``optimizer_g``, ``optimizer_d``) share one ``scheduler``."""

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called before Lightning loads the optimizer and scheduler states from this same dict.
        hparams = pl_module.hparams
        saved_scheduler = checkpoint.get("hyper_parameters", {}).get("scheduler")
        if "optimizer_states" not in checkpoint or saved_scheduler == hparams.scheduler:
            return
        saved_states = checkpoint.get("lr_schedulers") or []
        rebuilt = []
        for index, optimizer_config in enumerate((hparams.optimizer_g, hparams.optimizer_d)):
            # A stand-in optimizer: schedules only read and write its learning rates.
            stand_in = instantiate(optimizer_config, params=[torch.zeros(1, requires_grad=True)])
            if hparams.scheduler:
                scheduler = instantiate(hparams.scheduler, optimizer=stand_in)
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
        before, after = saved_scheduler or {}, hparams.scheduler or {}
        changes = [f"{key} {before.get(key)} -> {after.get(key)}" for key in sorted(set(before) | set(after))
                   if before.get(key) != after.get(key)]
        if trainer.is_global_zero:
            log.warning("model.scheduler changed since the run started (%s): the learning rates follow the new "
                        "schedule, as if the run had started with it", ", ".join(changes))


class LogValidationImages(L.Callback):
    """After each validation, its JPEG | restored | original grid (``DequantizerGAN.example_grid``) to every logger: W&B
    and TensorBoard natively, others as PNG files (``images/val_epoch000.png`` in the logger's folder).

    Sent as 8-bit pixels: W&B (0.31) reads a float array as 0-255, so a [0, 1] grid would be stored black."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

        grid = pl_module.example_grid
        if grid is None or trainer.sanity_checking or trainer.global_rank != 0:
            return
        key = "val/examples"
        pixels = grid.clamp(0, 1).mul(255).round().to(torch.uint8)
        image = torchvision.transforms.functional.to_pil_image(pixels)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[image], caption=["JPEG | restored | original"],
                                 step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(key, pixels, trainer.global_step)
            elif logger.log_dir:
                save_image_atomic(image, Path(logger.log_dir) / "images" / f"val_epoch{trainer.current_epoch:03d}.png")

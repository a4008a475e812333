"""Lightning callbacks and plugins of a training run: atomic checkpoints, a checkpoint on pre-emption, a line per
epoch."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dequantizer.files import atomic_write

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

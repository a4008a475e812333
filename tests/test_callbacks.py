"""The callbacks (dequantizer/callbacks.py): the random state saved in a checkpoint and restored from it, a cosine
schedule stretched when a resumed run is given more epochs, validation images written to the loggers. SIGTERM
checkpoints and resumes of whole train.py runs are in test_train.py."""

import io
import math
import random

import lightning as L
import numpy as np
import pytest
import torch

from dequantizer.callbacks import LogValidationImages, RandomStateCheckpoint, RescheduleOnResume
from helpers import batches, fit, quiet_trainer, tiny_gan


def test_random_state_is_saved_in_the_checkpoint_and_restored_from_it():
    callback, checkpoint = RandomStateCheckpoint(), {}
    callback.on_save_checkpoint(None, None, checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)  # plain tensors and numbers
    assert set(checkpoint) == {"rng_states"}  # the key that checkpoints of earlier versions hold too

    def draw():
        return random.random(), random.gauss(0, 1), float(np.random.rand()), torch.rand(1).item()

    drawn = draw()
    callback.on_load_checkpoint(None, None, checkpoint)
    assert draw() == drawn
    callback.on_load_checkpoint(None, None, {})  # a checkpoint without them leaves them as they are
    assert draw() != drawn


class LearningRates(L.Callback):
    """The generator's learning rate in each epoch."""

    def __init__(self):
        self.rates = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rates[trainer.current_epoch] = pl_module.optimizers()[0].param_groups[0]["lr"]


def test_raising_max_epochs_on_resume_stretches_the_cosine_schedule(tmp_path):
    def cosine(epochs):
        return f"model.scheduler={{_target_:torch.optim.lr_scheduler.CosineAnnealingLR,T_max:{epochs}}}"

    trainer = fit(tiny_gan(tmp_path, "loss=pixel", cosine(2)), max_epochs=2, limit_val_batches=0)
    trainer.save_checkpoint(tmp_path / "finished.ckpt")  # a finished run: its cosine has come down to 0

    extended = LearningRates()
    trainer = quiet_trainer(max_epochs=4, limit_val_batches=0, callbacks=[extended, RescheduleOnResume()])
    trainer.fit(tiny_gan(tmp_path, "loss=pixel", cosine(4)), train_dataloaders=batches(),
                ckpt_path=tmp_path / "finished.ckpt")
    base = trainer.lightning_module.hparams.optimizer_g["lr"]
    expected = {epoch: base * (1 + math.cos(math.pi * epoch / 4)) / 2 for epoch in (2, 3)}
    assert extended.rates == pytest.approx(expected)  # a 4-epoch cosine from the start, not the old one going up


def test_validation_images_go_to_the_loggers_as_files(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    trainer = quiet_trainer(logger=CSVLogger(tmp_path / "csv"), max_epochs=1, limit_train_batches=1,
                            callbacks=[LogValidationImages()])
    trainer.fit(tiny_gan(tmp_path, "loss=pixel"), train_dataloaders=batches(), val_dataloaders=batches(1))
    assert [path.name for path in tmp_path.glob("csv/*/version_0/images/*.png")] == ["val_epoch000.png"]

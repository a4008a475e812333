"""Callbacks that tests add to train.py runs (``+callbacks.probe._target_=probes.PauseAt``, with ``tests/`` on
PYTHONPATH): events to wait on, and faults to inject, with nothing of the kind in the code users run."""

from __future__ import annotations

import time

import lightning as L


class PauseAt(L.Callback):
    """After batch ``batch`` of epoch ``epoch``: print a line, then wait to be killed or sent SIGTERM. The test acts
    on the line, so nothing depends on how fast the machine is."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            print(f"probe: paused after epoch {self.epoch} batch {self.batch}", flush=True)
            # Not signal.pause(): the signal may reach another thread and never wake it. Lightning's SIGTERM handler
            # runs in this thread between two sleeps and sets the flag.
            while not trainer.received_sigterm:
                time.sleep(0.01)


class PoisonRank(L.Callback):
    """Makes the generator's output NaN on one rank only, as a bad batch on one GPU would."""

    def __init__(self, rank: int):
        self.rank = rank

    def on_fit_start(self, trainer, pl_module):
        if trainer.global_rank == self.rank:
            pl_module.generator.register_forward_hook(lambda module, inputs, output: output * float("nan"))

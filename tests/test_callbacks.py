"""The callbacks' own behaviour, without a Trainer (the ones that need a training run are tested in test_module)."""

import io
import random

import numpy as np
import torch

from dequantizer.callbacks import RandomStateCheckpoint


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

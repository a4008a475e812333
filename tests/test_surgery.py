"""Weight surgery on plain networks, without Lightning: init_from, grow, trainable."""

import pytest
import torch

from dequantizer.errors import DequantizerError
from dequantizer.models import Discriminator, Generator
from dequantizer.surgery import freeze_all_but, initialise_from, load_generator_weights
from dequantizer.weights import save_generator
from helpers import TINY_DISCRIMINATOR, TINY_SRRESNET, randomise, tiny_unet


def generator(seed=0, blocks=1):
    torch.manual_seed(seed)
    return Generator(**{**TINY_SRRESNET, "num_residual_blocks": blocks})


def discriminator(seed=0):
    torch.manual_seed(seed)
    return Discriminator(**TINY_DISCRIMINATOR)


def unet(seed=0, **kwargs):
    """A tiny QualityUNet with trained-like weights: its zero-initialised tail and modulations made non-zero."""
    return randomise(tiny_unet(seed, **kwargs))


def assert_same_weights(a, b):
    for (key, value), other in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(value, other), key


def save_checkpoint(path, **networks):
    """A training checkpoint as DequantizerGAN's would hold them: each network's weights under its attribute name."""
    state = {f"{name}.{key}": value for name, network in networks.items()
             for key, value in network.state_dict().items()}
    torch.save({"state_dict": state}, path)


def test_init_from_a_checkpoint_loads_both_networks(tmp_path):
    source_g, source_d = generator(seed=1), discriminator(seed=1)
    save_checkpoint(tmp_path / "other.ckpt", generator=source_g, discriminator=source_d)
    g, d = generator(), discriminator()
    initialise_from(tmp_path / "other.ckpt", g, d)
    assert_same_weights(g, source_g)
    assert_same_weights(d, source_d)


def test_init_from_takes_the_ema_generator_when_the_run_kept_one(tmp_path):
    raw, ema = generator(seed=1), generator(seed=2)
    save_checkpoint(tmp_path / "ema.ckpt", generator=raw, **{"ema.module": ema})
    g, d = generator(), discriminator()
    before_d = discriminator()
    initialise_from(tmp_path / "ema.ckpt", g, d)
    assert_same_weights(g, ema)
    assert_same_weights(d, before_d)  # the checkpoint had none: left as it was


def test_init_from_generator_weights(tmp_path):
    source = generator(seed=1)
    save_generator(source.state_dict(), tmp_path / "g.safetensors", {"generator": {}})
    g = generator()
    initialise_from(tmp_path / "g.safetensors", g, discriminator())
    assert_same_weights(g, source)


def test_init_from_errors_are_clear(tmp_path):
    with pytest.raises(DequantizerError, match="does not exist"):
        initialise_from(tmp_path / "missing.ckpt", generator(), discriminator())
    save_checkpoint(tmp_path / "bigger.ckpt", generator=generator(blocks=2))
    with pytest.raises(DequantizerError, match="different architecture"):
        initialise_from(tmp_path / "bigger.ckpt", generator(), discriminator())


def test_a_trained_part_may_start_afresh_from_init_from_but_a_frozen_one_may_not(tmp_path):
    source = unet()  # a bottleneck head
    save_generator(source.state_dict(), tmp_path / "old.safetensors", {"generator": {}})
    old = tmp_path / "old.safetensors"

    model = unet(seed=1, quality_head_input="pyramid")
    initialise_from(old, model, discriminator(), trainable=["quality_head"])
    state = model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in source.state_dict().items()
               if not key.startswith("quality_head."))
    assert state["quality_head.0.weight"].shape[1] == 2 * (8 + 16 + 24)  # the new head, fresh

    with pytest.raises(DequantizerError, match="holds a different architecture"):  # it trains, so must load, all
        initialise_from(old, unet(quality_head_input="pyramid"), discriminator())

    # A frozen part must come from the file as it is: another body is refused even when only the head trains.
    save_generator(unet(channels=(8, 16, 32)).state_dict(), tmp_path / "wider.safetensors", {"generator": {}})
    with pytest.raises(DequantizerError, match="holds a different architecture"):
        initialise_from(tmp_path / "wider.safetensors", unet(), discriminator(), trainable=["quality_head"])


def test_a_network_grown_deeper_starts_out_restoring_as_the_one_it_grew_from():
    source = unet()  # 1 block per level each way
    deeper = {"encoder_blocks": (1, 1, 3), "decoder_blocks": (2, 1, 3)}

    model = unet(seed=1, **deeper)
    load_generator_weights(model, source.state_dict(), grow=True)
    images, quality = torch.rand(2, 3, 40, 48), torch.tensor([20.0, 70.0])
    with torch.no_grad():
        torch.testing.assert_close(model(images, quality), source(images, quality))
    assert not torch.equal(model.decoder[2][2].conv1.weight, torch.zeros(24, 24, 3, 3))
    assert torch.equal(model.decoder[2][2].conv2.weight, torch.zeros(24, 24, 3, 3))

    with pytest.raises(DequantizerError, match="model.grow: the new blocks .* would stay the identity"):
        load_generator_weights(unet(**deeper), source.state_dict(), trainable=["quality_head"], grow=True)
    with pytest.raises(RuntimeError, match="Missing key"):  # without grow: refused
        load_generator_weights(unet(**deeper), source.state_dict())


def test_freeze_all_but_the_named_parts():
    model = unet()
    parameters = freeze_all_but(model, ["quality_head"])
    assert {id(p) for p in parameters} == {id(p) for p in model.quality_head.parameters()}
    assert all(p.requires_grad == name.startswith("quality_head.") for name, p in model.named_parameters())
    assert len(freeze_all_but(unet(), None)) == len(list(model.parameters()))
    with pytest.raises(DequantizerError, match="model.trainable names \\['no_such_part'\\]"):
        freeze_all_but(model, ["quality_head", "no_such_part"])


def test_surgery_imports_without_lightning():
    import subprocess
    import sys

    code = "import sys, dequantizer.surgery\nassert 'lightning' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]

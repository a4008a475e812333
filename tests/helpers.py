"""What the tests share, imported as ``from helpers import ...`` (fixtures live in conftest.py): composing configs and
running train.py as a user would, the tiny networks every test trains or restores with, a Lightning fit on a few
random batches, and the photos, JPEGs and broken files that tests feed in."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# Every selectable experiment, e.g. "beta", "ours/beta" and the stages of a shipped model, "blind/1_gpu".
EXPERIMENTS = sorted(
    path.relative_to(ROOT / "conf" / "experiment").with_suffix("").as_posix()
    for path in (ROOT / "conf" / "experiment").rglob("*.yaml")
)

# -- configs and train.py ----------------------------------------------------------------------------------------------
# Small and fast: random-weight VGG, tiny crops, a few steps, no W&B.
FAST = [
    "loss.content.pretrained=false",
    "data.num_workers=0",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.samples_per_epoch=8",
    "data.val_crops_per_photo=1",
    "logger=none",
]
QUICK = ["experiment=quick", *FAST]


def compose_config(overrides: list[str], root: Path):
    """The config train.py would see, with Hydra's runtime values set (run dirs, override_dirname)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import dequantizer.config  # noqa: F401  (registers resolvers)

    os.environ["DEQUANTIZER_ROOT"] = str(root)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(root / "outputs" / "compose-test")
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_train(root: Path, *overrides: str, samples: Path | None = None, multirun: bool = False, env=None,
              timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run train.py as a user would, with all outputs under ``root``. No time limit by default: a busy machine is
    slow, not wrong; ``timeout`` is for tests whose failure is a hang."""
    command = [sys.executable, str(ROOT / "train.py")] + (["-m"] if multirun else []) + list(overrides)
    if samples is not None and not (root / "data" / "samples").exists():
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / "samples").symlink_to(samples)
    return subprocess.run(command, cwd=root, env=train_environment(root, env), capture_output=True, text=True,
                          timeout=timeout)


def train_environment(root: Path, env=None) -> dict[str, str]:
    """train.py's environment in tests: outputs under ``root``, W&B offline, tests/probes.py importable."""
    return {**os.environ, "DEQUANTIZER_ROOT": str(root), "WANDB_MODE": "offline",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")])),
            **(env or {})}


# -- tiny networks -----------------------------------------------------------------------------------------------------
def hydra_overrides(key: str, values: dict) -> list[str]:
    """``{"channels": (8, 16)}`` under ``model.generator`` -> ``["model.generator.channels=[8,16]"]``."""
    def value(item):
        return "[" + ",".join(map(str, item)) + "]" if isinstance(item, tuple | list) else str(item)

    return [f"{key}.{name}={value(item)}" for name, item in values.items()]


# The paper's generator (SRResNet) and discriminator, as small as they go: the GAN the module tests train.
TINY_SRRESNET = {"channels": 8, "num_residual_blocks": 1}
TINY_DISCRIMINATOR = {"first_channels": 8, "channels": (8, 16), "strides": (2, 2), "hidden_features": 16}
TINY_GAN_OVERRIDES = [*hydra_overrides("model.generator", TINY_SRRESNET),
                      *hydra_overrides("model.discriminator", TINY_DISCRIMINATOR)]
# The default model's network (QualityUNet), three levels of one block each.
TINY_UNET = {"channels": (8, 16, 24), "encoder_blocks": (1, 1, 1), "decoder_blocks": (1, 1, 1)}
TINY_UNET_OVERRIDES = hydra_overrides("model.generator", TINY_UNET)
# The weights fixture's generator (conftest.py): image residual, no batch norm, a space-to-depth body.
TINY_GENERATOR = {"_target_": "dequantizer.models.Generator", "channels": 8, "num_residual_blocks": 1,
                  "batch_norm": False, "output_activation": None, "image_residual": True, "space_to_depth": 2}


def tiny_unet(seed=0, **kwargs):
    """A tiny QualityUNet in eval mode, as initialised (its zero tail: the identity)."""
    from dequantizer.models import QualityUNet

    torch.manual_seed(seed)
    return QualityUNet(**{**TINY_UNET, **kwargs}).eval()


def randomise(model):
    """Trained-like weights: the zero-initialised tail and modulations made non-zero."""
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.05)
    return model


def trained_like_generator():
    """A small paper generator with an image residual and a non-identity correction, as a trained one restores."""
    from dequantizer.models import Generator

    torch.manual_seed(0)
    generator = Generator(channels=8, num_residual_blocks=2, batch_norm=False, output_activation=None,
                          image_residual=True)
    torch.nn.init.normal_(generator.tail.weight, std=0.01)  # a non-identity correction
    return generator


def tiny_gan(tmp_path, *overrides):
    """The paper's GAN module (experiment=beta) with the tiny networks and a random-weight VGG."""
    from hydra.utils import instantiate

    cfg = compose_config(["experiment=beta", "loss.content.pretrained=false", *TINY_GAN_OVERRIDES, *overrides],
                         tmp_path)
    return instantiate(cfg.model, loss=cfg.loss)


def tiny_blind_config(tmp_path, *overrides):
    """experiment=blind (the default model's recipe) with the tiny U-Net and no EMA."""
    return compose_config(["experiment=blind", *TINY_UNET_OVERRIDES, "model.ema_decay=null", *overrides], tmp_path)


# -- training without train.py -----------------------------------------------------------------------------------------
def batches(count=2, size=16):
    """``count`` batches of 2 noisy/clean uint8 pairs."""
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 256, (count * 2, 3, size, size), dtype=torch.uint8, generator=generator)
    jpeg = (target.int() + torch.randint(-8, 9, target.shape, generator=generator)).clamp(0, 255).to(torch.uint8)
    return DataLoader(TensorDataset(jpeg, target, torch.full((count * 2,), 50)), batch_size=2)


def quiet_trainer(**trainer_args):
    """A quiet CPU Lightning Trainer: no logger, checkpoints, progress bar or summary unless asked for."""
    import lightning as L

    return L.Trainer(**{"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                        "enable_progress_bar": False, "enable_model_summary": False, **trainer_args})


def fit(model, **trainer_args):
    """``model`` trained on two batches of :func:`batches`, validated on one; the Trainer is returned."""
    fitted = quiet_trainer(**trainer_args)
    fitted.fit(model, train_dataloaders=batches(), val_dataloaders=batches(1))
    return fitted


# -- images ------------------------------------------------------------------------------------------------------------
def noise(height=24, width=32, seed=0) -> Image.Image:
    """An RGB image of seeded uniform noise."""
    return Image.fromarray((np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8))


def blocky(height, width, seed=0) -> np.ndarray:
    """An RGB array of flat 8x8 blocks of seeded colours (JPEG-like structure, whole blocks at the origin)."""
    rng = np.random.default_rng(seed)
    small = rng.random((height // 8 + 1, width // 8 + 1, 3)) * 255
    return np.kron(small, np.ones((8, 8, 1)))[:height, :width].astype(np.uint8)


def jpeg_bytes(image: Image.Image | np.ndarray, **options) -> bytes:
    """The JPEG file Pillow writes for ``image`` with ``options`` (quality, subsampling, exif, ...)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def jpeg_pixels(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``rgb`` through a JPEG of ``quality`` and back, decoded by Pillow."""
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(rgb, quality=quality))).convert("RGB"))


def decoded(data: bytes) -> np.ndarray:
    """A JPEG file's pixels as the tool reads them."""
    from dequantizer.images import read_image

    return np.asarray(read_image(io.BytesIO(data), "jpeg"))


def twice(rgb: np.ndarray, first: int, second: int, shift: tuple[int, int] = (0, 0)) -> bytes:
    """Saved at ``first``, cropped by ``shift`` (rows, columns), saved at ``second``: a real-world JPEG."""
    once = decoded(jpeg_bytes(rgb, quality=first))
    return jpeg_bytes(np.ascontiguousarray(once[shift[0] :, shift[1] :]), quality=second)


def real_world_photos() -> dict[str, np.ndarray]:
    """Two of scikit-image's photos, cropped: what the double-JPEG tests save twice."""
    from skimage import data

    return {"astronaut": data.astronaut()[:256, 128:384], "coffee": data.coffee()[:256, :320]}


# -- bad and odd files -------------------------------------------------------------------------------------------------
def png_claiming(width, height):
    """A tiny PNG whose header claims width x height: opening it must not allocate that."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


# name -> a function making the file's bytes: no image can be read from any of them.
BROKEN = {
    "zero.jpg": lambda: b"",
    "truncated.jpg": lambda: jpeg_bytes(noise(100, 120))[:300],
    "text.png": lambda: b"this is not an image",
    "bomb.png": lambda: png_claiming(30000, 30000),
}


def odd_images():
    """name -> (image bytes, expected restored size, expected mode): images that can be read, but are unusual."""
    rotated = noise(24, 40)
    exif = rotated.getexif()
    exif[0x0112] = 6
    buffers = {}
    for name, image, options in [
        ("one.png", noise(1, 1), {}), ("seven_by_five.png", noise(5, 7), {}),
        ("deep.png", Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100), {}),
        ("cmyk.jpg", noise(20, 30).convert("CMYK"), {}), ("palette.png", noise(20, 30).convert("P"), {}),
        ("la.png", noise(20, 30).convert("LA"), {}), ("rotated.jpg", rotated, {"exif": exif}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, Image.registered_extensions()["." + name.rsplit(".", 1)[1]], **options)
        buffers[name] = buffer.getvalue()
    expected = {"one.png": ((1, 1), "RGB"), "seven_by_five.png": ((7, 5), "RGB"), "deep.png": ((30, 20), "L"),
                "cmyk.jpg": ((30, 20), "RGB"), "palette.png": ((30, 20), "RGB"), "la.png": ((30, 20), "LA"),
                "rotated.jpg": ((24, 40), "RGB")}
    return buffers, expected


# -- the CLI -----------------------------------------------------------------------------------------------------------
def one_line_error(capsys, expected, *, alone=False):
    """What the CLI wrote to stderr: no traceback, and an ``error:`` line holding ``expected`` (``alone``: the only
    error line)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    if alone:
        assert len(lines) == 1 and expected in lines[0], err
    else:
        assert any(expected in line for line in lines), err
    return err

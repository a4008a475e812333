"""The shipped models, on real weights: each must beat the JPEG input on photos it never saw."""

import re

import numpy as np
import pytest

from dequantizer import dequantize, quantize
from dequantizer.metrics import image_metrics, to_unit_tensor
from dequantizer.weights import DEFAULT_MODEL, read_metadata, shipped_models
from helpers import EXPERIMENTS


def named_experiments(command: str) -> list[str]:
    """The experiments a model's "made by" command names (train.py experiment=X, gpu_train.py --experiment X)."""
    return re.findall(r"(?:experiment=|--experiment )([\w/]+)", command)


def test_default_model_is_shipped_with_its_metadata():
    assert DEFAULT_MODEL in shipped_models()
    metadata = read_metadata(shipped_models()[DEFAULT_MODEL])
    assert metadata["qualities"] == [1, 100]
    assert metadata["generator"]["_target_"] == "dequantizer.models.QualityUNet"
    assert "experiments/gpu_train.py --experiment blind/1_gpu" in metadata["command"]
    assert "train.py experiment=blind/3_cpu_finetune" in metadata["command"]
    assert "research" in metadata["training_data"]  # BSDS500, Urban100, T91 terms travel with the weights
    assert "experiment=blind/9_quality_head" in metadata["command"]
    assert set(named_experiments(metadata["command"])) <= set(EXPERIMENTS)  # each stage's recipe is in conf/
    # No gate: told the quality, its mean gain on the unseen photos is > 0 at every quality 1-100 (measured).
    assert metadata["max_quality"] is None


def psnr_gains(samples_dir, quality, model=None):
    """Restored - JPEG PSNR on four 128x128 crops of scikit-image's photos (never in the models' training data)."""
    from PIL import Image

    gains = []
    for name, (top, left) in {"astronaut": (100, 150), "chelsea": (60, 120), "coffee": (150, 200),
                              "rocket": (40, 40)}.items():
        photo = np.asarray(Image.open(samples_dir / f"{name}.png").convert("RGB"))
        crop = photo[top : top + 128, left : left + 128]
        jpeg = np.asarray(quantize(Image.fromarray(crop), quality=quality))
        restored = np.asarray(dequantize(Image.fromarray(jpeg), model=model))
        psnr_jpeg, _ = image_metrics(to_unit_tensor(jpeg), to_unit_tensor(crop))
        psnr, _ = image_metrics(to_unit_tensor(restored), to_unit_tensor(crop))
        gains.append(float(psnr - psnr_jpeg))
    return gains


def test_default_model_beats_jpeg_at_quality_10(samples_dir):
    gains = psnr_gains(samples_dir, 10)
    assert np.mean(gains) > 1.0, gains  # the previous default (blind_v1) gained about 0.8 here
    assert min(gains) > 0, gains


def test_default_model_beats_jpeg_without_tables_at_high_quality(samples_dir):
    """Decoded pixels without JPEG tables: no gate, the model predicts the quality itself."""
    from PIL import Image

    gains = []
    for quality in (60, 80):
        photo = np.asarray(Image.open(samples_dir / "coffee.png").convert("RGB"))[100:228, 150:278]
        jpeg = np.asarray(quantize(Image.fromarray(photo), quality=quality))
        restored = np.asarray(dequantize(Image.fromarray(jpeg)))  # a plain array image: no tables
        psnr_jpeg, _ = image_metrics(to_unit_tensor(jpeg), to_unit_tensor(photo))
        psnr, _ = image_metrics(to_unit_tensor(restored), to_unit_tensor(photo))
        gains.append(float(psnr - psnr_jpeg))
    assert min(gains) > 0.3, gains


@pytest.mark.parametrize("name", sorted(set(shipped_models()) - {DEFAULT_MODEL}))
def test_every_named_model_has_its_record_and_beats_jpeg_at_its_quality(name, samples_dir):
    metadata = read_metadata(shipped_models()[name])
    for key in ("description", "command", "qualities", "training_data", "validation", "generator"):
        assert metadata.get(key), key
    assert "train.py experiment=" in metadata["command"]
    assert set(named_experiments(metadata["command"])) <= set(EXPERIMENTS)
    qualities = metadata["qualities"]
    quality = qualities if isinstance(qualities, int) else 10  # blind models: quality 10
    gains = psnr_gains(samples_dir, quality, model=name)
    assert np.mean(gains) > 0.05, gains


def test_quantized_images_carry_their_quality_and_every_quality_is_restored(samples_dir):
    from PIL import Image

    from dequantizer.jpeg import estimate_jpeg_quality

    photo = Image.open(samples_dir / "coffee.png").convert("RGB").crop((0, 0, 128, 96))
    original = to_unit_tensor(np.asarray(photo))
    for quality in (10, 98):
        jpeg = quantize(photo, quality=quality)
        assert estimate_jpeg_quality(jpeg) == quality
        restored = np.asarray(dequantize(jpeg))  # the default model has no gate: q98 is restored too, and gains
        psnr_jpeg, _ = image_metrics(to_unit_tensor(np.asarray(jpeg)), original)
        psnr, _ = image_metrics(to_unit_tensor(restored), original)
        assert float(psnr - psnr_jpeg) > 0.05, quality

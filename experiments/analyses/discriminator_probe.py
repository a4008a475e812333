"""Can the discriminator tell JPEG crops from their originals? A plain PyTorch loop, the generator frozen at the
identity: D sees original crops (real) and their JPEG round trips at quality 10-40 (fake), Adam 1e-4, BCE.

    python experiments/analyses/discriminator_probe.py data/photos --steps 200 --out experiments/results/discriminator

Variants: the paper's BatchNorm discriminator fed real and fake as two batches (how the module fed it before) or as
one concatenated batch, and the spectral-norm discriminator (two batches: it has no batch statistics to share).
Writes probe.csv (step, variant, loss, D(real), D(fake) on the training batch) and probe.png.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dequantizer.images import image_paths, load_rgb
from dequantizer.jpeg import jpeg_roundtrip_array
from dequantizer.losses import discriminator_loss
from dequantizer.models import Discriminator, to_model_range

VARIANTS = {"batch, two batches": ("batch", False), "batch, one batch": ("batch", True),
            "spectral, two batches": ("spectral", False)}


def spectral_discriminator() -> nn.Module:
    """The same stack with spectral normalization on every conv instead of BatchNorm (convs keep their bias): a
    discriminator without batch statistics. Measured here and not adopted: it learns slower than BatchNorm fed
    both kinds at once."""
    reference = Discriminator()
    wrap = nn.utils.parametrizations.spectral_norm
    layers: list[nn.Module] = []
    for layer in reference.features:
        if isinstance(layer, nn.Conv2d):
            layers.append(wrap(nn.Conv2d(layer.in_channels, layer.out_channels, 3, stride=layer.stride, padding=1)))
        elif not isinstance(layer, nn.BatchNorm2d):
            layers.append(layer)
    head = [wrap(layer) if isinstance(layer, nn.Conv2d) else layer for layer in reference.classifier]
    return nn.Sequential(*layers, *head, nn.Flatten(0))


def crop_pairs(folder: Path, count: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` (original, JPEG q10-40) crop pairs on the JPEG grid, as model-range tensors."""
    rng = random.Random(seed)
    photos = [load_rgb(path) for path in image_paths([folder])[:200]]
    photos = [photo for photo in photos if min(photo.shape[:2]) >= size]
    real, fake = [], []
    for _ in range(count):
        photo = rng.choice(photos)
        top = rng.randrange(0, photo.shape[0] - size + 1) // 8 * 8
        left = rng.randrange(0, photo.shape[1] - size + 1) // 8 * 8
        crop = np.ascontiguousarray(photo[top : top + size, left : left + size])
        real.append(crop)
        fake.append(jpeg_roundtrip_array(crop, rng.randint(10, 40)))
    as_batch = lambda crops: to_model_range(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2))  # noqa: E731
    return as_batch(real), as_batch(fake)


def train_probe(discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, steps: int,
                batch_size: int = 16, concatenate: bool = False, seed: int = 0) -> list[dict[str, float]]:
    """D's learning curve on (real, fake) pairs: per step the loss and the mean sigmoid of real and fake logits."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-4, betas=(0.9, 0.999))
    discriminator.train()
    curve = []
    for step in range(steps):
        index = torch.randint(0, len(real), (batch_size,), generator=generator)
        if concatenate:
            logits = discriminator(torch.cat([real[index], fake[index]]))
            real_logits, fake_logits = logits[:batch_size], logits[batch_size:]
        else:
            real_logits, fake_logits = discriminator(real[index]), discriminator(fake[index])
        loss = discriminator_loss(real_logits, fake_logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            curve.append({"step": step + 1, "loss": loss.item(), "d_real": torch.sigmoid(real_logits).mean().item(),
                          "d_fake": torch.sigmoid(fake_logits).mean().item()})
    return curve


def plot(rows: list[dict], path: Path, window: int = 10) -> None:
    """Loss and separation per variant, as running means over ``window`` steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    smooth = lambda values: np.convolve(values, np.ones(window) / window, mode="valid")  # noqa: E731
    for name in dict.fromkeys(row["variant"] for row in rows):
        curve = [row for row in rows if row["variant"] == name]
        steps = [float(row["step"]) for row in curve][window - 1 :]
        axes[0].plot(steps, smooth([float(row["loss"]) for row in curve]), label=name)
        axes[1].plot(steps, smooth([float(row["d_real"]) - float(row["d_fake"]) for row in curve]), label=name)
    axes[0].axhline(np.log(4), color="grey", linestyle=":", label="chance (log 4)")
    axes[0].set(xlabel="step", ylabel=f"D loss (BCE real + fake, mean of {window})")
    axes[1].set(xlabel="step", ylabel=f"D(real) - D(fake) (mean of {window})")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/discriminator"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    real, fake = crop_pairs(args.photos, 1024, args.crop)
    rows = []
    for name, (norm, concatenate) in VARIANTS.items():
        torch.manual_seed(0)
        started = time.perf_counter()
        discriminator = Discriminator() if norm == "batch" else spectral_discriminator()
        curve = train_probe(discriminator, real, fake, args.steps, concatenate=concatenate)
        rows += [{"variant": name, **point} for point in curve]
        last = curve[-10:]
        print(f"{name:24s} after {args.steps} steps: loss {np.mean([p['loss'] for p in last]):.3f}, "
              f"D(real) - D(fake) {np.mean([p['d_real'] - p['d_fake'] for p in last]):+.3f} "
              f"(mean of the last 10 steps; {time.perf_counter() - started:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "probe.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "probe.png")
    print(f"wrote {args.out / 'probe.csv'} and {args.out / 'probe.png'}")


if __name__ == "__main__":
    main()

"""PSNR against detail: what a GAN-trained model trades. For each model and JPEG quality, on clean photos:

    python experiments/sharpness.py data/samples --models blind outputs/blind-gan.safetensors --quality 10 30

prints PSNR and the *detail ratio*: the mean gradient magnitude (luma, finite differences, 8x8 block edges included)
of the image divided by the original's. 1.0 keeps the original's fine detail; JPEG at low quality and PSNR-trained
restorers, which average over plausible textures, land below it.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from dequantizer.evaluate import image_paths, load_photos, to_unit_tensor
from dequantizer.module import image_metrics
from dequantizer.restore import get_restorer, restore_image


def detail(rgb: np.ndarray) -> float:
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return float(np.abs(np.diff(luma, axis=0)).mean() + np.abs(np.diff(luma, axis=1)).mean())


def psnr(image: np.ndarray, target: np.ndarray) -> float:
    """The same per-image RGB PSNR as training and `dequantizer evaluate`."""
    return float(image_metrics(to_unit_tensor(image), to_unit_tensor(target))[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="clean photos or folders")
    parser.add_argument("--models", nargs="+", default=["blind"], help="shipped names or weights files")
    parser.add_argument("--quality", type=int, nargs="+", default=[10, 30, 50])
    args = parser.parse_args()
    photos, _, _ = load_photos(image_paths(args.inputs))
    print(f"{len(photos)} photos; mean per-image PSNR (dB) and detail ratio (1.0 = the original's)")
    print(f"{'quality':>7} " + " ".join(f"{name:>18}" for name in ["JPEG", *args.models]))
    restorers = {name: get_restorer(name) for name in args.models}
    for quality in args.quality:
        scores: dict[str, list[tuple[float, float]]] = {name: [] for name in ["JPEG", *args.models]}
        for rgb in photos.values():
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
            with Image.open(buffer) as jpeg_file:
                jpeg_file.load()
                outputs = {"JPEG": np.asarray(jpeg_file.convert("RGB"))}
                outputs |= {name: np.asarray(restore_image(jpeg_file, r)) for name, r in restorers.items()}
            for name, image in outputs.items():
                scores[name].append((psnr(image, rgb), detail(image) / detail(rgb)))
        cells = [f"{np.mean([s[0] for s in v]):6.3f} / {np.mean([s[1] for s in v]):.3f}" for v in scores.values()]
        print(f"{quality:>7} " + " ".join(f"{cell:>18}" for cell in cells))


if __name__ == "__main__":
    main()

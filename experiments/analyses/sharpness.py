"""PSNR against detail: what a GAN-trained model trades. For each model and JPEG quality, on clean photos:

    python experiments/analyses/sharpness.py data/samples --models blind sharp --quality 10 30 \
        --crops experiments/results/sharp

prints, per model, the mean per-image PSNR, SSIM, *detail ratio*, *feature distance* and *8x8-periodic energy*:
- detail ratio: the mean gradient magnitude (luma, finite differences, 8x8 block edges included) of the image
  divided by the original's. 1.0 keeps the original's fine detail; JPEG at low quality and PSNR-trained restorers,
  which average over plausible textures, land below it.
- 8x8-periodic energy: how much the luma's steps between neighbours vary with the position in the JPEG block grid
  (``perceptual.block_periodic_energy``): the blockiness a viewer sees; near 0 for a photo that never was a JPEG.
- feature distance (lower is closer to the original): LPIPS without its learned weights, on EfficientNet-Lite1
  (ImageNet), a network that no model here was trained against (`sharp` trains against Lite0): at the end of each of
  Lite1's first five stages (1/2 to 1/16 resolution) every position's channel vector is unit-normalised, and the
  squared differences are averaged over positions and summed over stages.
``--crops DIR`` also writes, per quality, a strip of 128-px crops (JPEG | each model | original), 2x enlarged.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from dequantizer.evaluate import load_photos
from dequantizer.images import image_paths
from dequantizer.metrics import image_metrics, to_unit_tensor
from dequantizer.perceptual import FeatureDistance, block_periodic_energy, detail, detailed_crop, save_strip
from dequantizer.restore import get_restorer, restore_image


def psnr_ssim(image: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """The same per-image RGB PSNR and SSIM as training and `dequantizer evaluate`."""
    psnr, ssim = image_metrics(to_unit_tensor(image), to_unit_tensor(target))
    return float(psnr), float(ssim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="clean photos or folders")
    parser.add_argument("--models", nargs="+", default=["blind"], help="shipped names or weights files")
    parser.add_argument("--quality", type=int, nargs="+", default=[10, 30, 50])
    parser.add_argument("--crops", type=Path, help="folder for comparison strips (JPEG | models | original)")
    parser.add_argument("--crop-photos", nargs="+", default=["astronaut", "chelsea", "coffee"],
                        help="photos (file stems) to cut the strips from")
    args = parser.parse_args()
    photos, _, _ = load_photos(image_paths(args.inputs))
    distance = FeatureDistance()
    names = ["JPEG", *args.models]
    print(f"{len(photos)} photos; mean per image: PSNR (dB) / SSIM / detail ratio (1.0 = the original's) / "
          "feature distance (EfficientNet-Lite1, 0 = the original) / 8x8-periodic energy of the luma (blockiness; "
          "the originals' on the first line)")
    print(f"  {'original':>28}  {np.mean([block_periodic_energy(rgb) for rgb in photos.values()]):.5f}")
    restorers = {name: get_restorer(name) for name in args.models}
    for quality in args.quality:
        scores: dict[str, list[tuple[float, ...]]] = {name: [] for name in names}
        for stem, rgb in photos.items():
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
            with Image.open(buffer) as jpeg_file:
                jpeg_file.load()
                outputs = {"JPEG": np.asarray(jpeg_file.convert("RGB"))}
                outputs |= {name: np.asarray(restore_image(jpeg_file, r)) for name, r in restorers.items()}
            for name, image in outputs.items():
                scores[name].append((*psnr_ssim(image, rgb), detail(image) / detail(rgb), distance(image, rgb),
                                     block_periodic_energy(image)))
            if args.crops and Path(stem).stem in args.crop_photos:
                corner = detailed_crop(rgb)
                save_strip(outputs | {"original": rgb}, corner, args.crops / f"{Path(stem).stem}-q{quality}.png")
        print(f"quality {quality}")
        for name, values in scores.items():
            psnr, ssim, ratio, feature, blockiness = np.mean(values, axis=0)
            print(f"  {name:>28}  {psnr:7.3f}  {ssim:.4f}  {ratio:.3f}  {feature:.4f}  {blockiness:.5f}")


if __name__ == "__main__":
    main()

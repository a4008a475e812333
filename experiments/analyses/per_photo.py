"""Per-photo gains at high JPEG qualities, told the quality and predicting it: where a model's raw output loses.

    python experiments/analyses/per_photo.py data/samples --models blind --quality 90 95 100

For each photo (grey photos as greyscale JPEGs, as `dequantize` sees them), prints the JPEG input's PSNR and each
model's gain over it (RGB, dB): told the quality (as a file's tables tell it); with the quality its head predicts
(shown in brackets); and as `dequantize` restores decoded pixels without tables (`--raw` in `dequantizer evaluate`:
the quality read from the quantization steps in the pixels where there are any, 100 where there are none and the
head reads 97 or more, else the head's), with the quality it used.
No gate: the network's own output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dequantizer.evaluate import load_photos
from dequantizer.images import image_paths
from dequantizer.jpeg import jpeg_roundtrip
from dequantizer.metrics import psnr
from dequantizer.restore import get_restorer, is_grey, quality_from_pixels, restore_image


def to_uint8(restored: torch.Tensor) -> np.ndarray:
    """A restored 3xHxW [0, 1] tile as the HxWx3 uint8 image a user gets."""
    return (restored.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="clean photos or folders")
    parser.add_argument("--models", nargs="+", default=["blind"], help="shipped names or weights files")
    parser.add_argument("--quality", type=int, nargs="+", default=[90, 95, 100])
    args = parser.parse_args()
    photos, _, _ = load_photos(image_paths(args.inputs))
    restorers = {name: get_restorer(name) for name in args.models}
    print("quality, photo, grey (L) or colour (C), JPEG PSNR; per model: gain told the quality | with the head's "
          "quality (its prediction) | as dequantize restores decoded pixels (the quality read from them, - for none)")
    for quality in args.quality:
        for path, rgb in photos.items():
            grey = is_grey(rgb)
            source = Image.fromarray(rgb[..., 0] if grey else rgb)
            decoded = np.asarray(jpeg_roundtrip(source, quality).convert("RGB"))
            before = psnr(decoded, rgb)
            tiles = torch.from_numpy(decoded.copy()).permute(2, 0, 1)[None]
            cells = [f"q{quality:<3} {Path(path).stem:>22} {'L' if grey else 'C'} {before:6.2f}"]
            for name, restorer in restorers.items():
                predicted = restorer.predict_quality(tiles)
                told, guessed = (
                    psnr(to_uint8(restorer.restore_tiles(tiles, told_quality)[0]), rgb) - before
                    for told_quality in (quality, None)
                )
                read = quality_from_pixels(decoded, restorer)
                raw = psnr(np.asarray(restore_image(Image.fromarray(decoded), restorer).convert("RGB")), rgb) - before
                cells.append(f"{Path(name).stem}: {told:+6.2f} | {guessed:+6.2f} ({predicted:.0f}) | "
                             f"{raw:+6.2f} ({read or '-'})")
            print("  ".join(cells), flush=True)


if __name__ == "__main__":
    main()

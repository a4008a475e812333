"""Decoded JPEGs of an encoder other than IJG's: are they restored as well as their files?

    python experiments/analyses/other_tables.py data/samples --quality 80 90 95

Cameras, phones and editors quantize with tables of their own. Here each table is IJG's at the given quality with
every step scaled by a seeded random factor of 0.8-1.2 (luma and chroma; one table per quality). For each photo that
never was a JPEG (`evaluate`'s warnings leave the others out), grey photos as grey JPEGs, it prints the JPEG input's
PSNR and the RGB gain of the default model restoring the file (its tables name the quality) and the decoded pixels
(`dequantize` reads the quality from them), with the quality each was restored for, and then the means.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from dequantizer.data.torch_jpeg import IJG_CHROMINANCE
from dequantizer.evaluate import load_photos
from dequantizer.images import image_paths
from dequantizer.jpeg import IJG_LUMINANCE, estimate_jpeg_quality, ijg_luminance_table
from dequantizer.metrics import psnr
from dequantizer.restore import get_restorer, is_grey, quality_from_pixels, restore_image


def other_tables(quality: int) -> tuple[list[int], list[int]]:
    """Luma and chroma tables near IJG's at ``quality``: every step scaled by U(0.8, 1.2), seeded by the quality."""
    rng = np.random.default_rng(quality)
    return tuple(ijg_luminance_table(quality, np.asarray(base) * rng.uniform(0.8, 1.2, 64)).astype(int).tolist()
                 for base in (IJG_LUMINANCE, IJG_CHROMINANCE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="clean photos or folders")
    parser.add_argument("--quality", type=int, nargs="+", default=[80, 90, 95])
    parser.add_argument("--model", default=None, help="a shipped name or weights file (default: the default model)")
    args = parser.parse_args()
    photos, _, jpeg_born = load_photos(image_paths(args.inputs))
    restorer = get_restorer(args.model)
    print("quality, photo, JPEG PSNR, gain restoring the file (quality its tables name) | the decoded pixels "
          "(quality read from them, - for none)")
    for quality in args.quality:
        luma_table, chroma_table = other_tables(quality)
        gains = []
        for path, rgb in photos.items():
            if path in jpeg_born:
                continue
            grey = is_grey(rgb)
            buffer = io.BytesIO()
            Image.fromarray(rgb[..., 0] if grey else rgb).save(
                buffer, "JPEG", qtables=[luma_table] if grey else [luma_table, chroma_table], subsampling=2)
            with Image.open(buffer) as jpeg_file:
                jpeg_file.load()
                decoded = np.asarray(jpeg_file.convert("RGB"))
                before = psnr(decoded, rgb)
                told = psnr(np.asarray(restore_image(jpeg_file, restorer).convert("RGB")), rgb) - before
                named = estimate_jpeg_quality(jpeg_file)
            raw = psnr(np.asarray(restore_image(Image.fromarray(decoded), restorer).convert("RGB")), rgb) - before
            read = quality_from_pixels(decoded, restorer)
            gains.append((told, raw))
            print(f"q~{quality:<3} {Path(path).stem:>22} {before:6.2f}  file {told:+6.2f} ({named}) | "
                  f"pixels {raw:+6.2f} ({read or '-'})", flush=True)
        told_mean, raw_mean = np.mean(gains, axis=0)
        print(f"q~{quality}: mean gain restoring the file {told_mean:+.3f}, the decoded pixels {raw_mean:+.3f} "
              f"(lowest {min(raw for _, raw in gains):+.2f}), {len(gains)} photos")


if __name__ == "__main__":
    main()

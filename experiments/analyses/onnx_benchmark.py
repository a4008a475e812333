"""Restoration speed of the two engines side by side: torch bf16, torch fp32 and onnxruntime fp32 on one photo.

    python experiments/analyses/onnx_benchmark.py      # ../shared/photos' 1-MP nasa-45068.png, blind, q30
    python experiments/analyses/onnx_benchmark.py --photo p.png --model beta --quality 50 --repeats 5

The photo is JPEG-compressed at --quality and restored whole (default tile size, tiles blended) by each engine in turn,
interleaved, --repeats times after a warm-up; the median is reported, with each engine's PSNR against the photo and
the largest pixel difference between engines. The ONNX file is the one `dequantize(engine="onnx")` uses: exported
once into the user's cache (the first run reports how long that took). See experiments/BENCHMARKS.md for results.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dequantizer.images import load_rgb
from dequantizer.jpeg import jpeg_roundtrip_array
from dequantizer.metrics import psnr
from dequantizer.restore import get_restorer
from dequantizer.weights import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PHOTO = ROOT.parent / "shared" / "photos" / "wallpapers_popos" / "nasa-45068.png"  # 1000x1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help="a clean photo (default: %(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--quality", type=int, default=30, help="JPEG quality of the input (default 30)")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed restorations per engine (median reported)")
    args = parser.parse_args()
    import onnxruntime

    photo = load_rgb(args.photo)
    jpeg = jpeg_roundtrip_array(photo, args.quality)
    height, width = photo.shape[:2]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}), "
          f"onnxruntime {onnxruntime.__version__}")
    start = time.perf_counter()
    engines = {"onnxruntime fp32": get_restorer(args.model, "cpu", None, args.tile_size, engine="onnx")}
    print(f"ONNX model ready in {time.perf_counter() - start:.1f} s (exported once into the cache, then reused)")
    engines |= {f"torch {precision}": get_restorer(args.model, "cpu", precision, args.tile_size)
                for precision in ("bf16", "fp32")}
    for restorer in engines.values():
        restorer.restore_array(jpeg[:512, :512], args.quality)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    restored: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):  # interleaved, so that a change in machine load hits every engine
        for name, restorer in engines.items():
            start = time.perf_counter()
            restored[name] = restorer.restore_array(jpeg, args.quality)
            seconds[name].append(time.perf_counter() - start)
    print(f"{args.photo.name} {width}x{height} ({width * height / 1e6:.2f} MP), {args.model}, JPEG q{args.quality}, "
          f"tile size {args.tile_size}, median of {args.repeats}; JPEG input PSNR {psnr(jpeg, photo):.3f} dB")
    fastest = min(statistics.median(times) for times in seconds.values())
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"  {name:17s} {median:6.2f} s  {width * height / 1e6 / median:5.2f} MP/s  {fastest / median:4.2f}x the "
              f"fastest  PSNR {psnr(restored[name], photo):.3f} dB  (runs: {', '.join(f'{t:.2f}' for t in times)})")
    names = list(engines)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            difference = np.abs(restored[first].astype(int) - restored[second])
            print(f"  {first} vs {second}: max {difference.max()} grey levels; {np.count_nonzero(difference)} of "
                  f"{difference.size} values differ")


if __name__ == "__main__":
    main()

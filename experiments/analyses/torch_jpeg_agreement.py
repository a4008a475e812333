"""How closely the torch JPEG round trip (dequantizer.data.torch_jpeg) matches Pillow's, and how fast each makes pairs.

    python experiments/analyses/torch_jpeg_agreement.py ../shared/photos --crops 4000 \
        --out experiments/results/torch_jpeg

Random crops (8-300 px a side, any offset) of the photos, every quality 1-100 in turn, in colour at 4:2:0, 4:2:2 and
4:4:4 and in grey: the decoded pixels against Pillow's, and the quantised DCT coefficients against those stored in
Pillow's file (read with jpeglib). Then the time to make a training batch (64 crops of 136 px, 4:2:0) with Pillow,
one crop after another as the loader's workers do, and with torch, batched, on this machine's CPU (and on the GPU
where there is one).
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
import tempfile
import time
from pathlib import Path

import jpeglib
import numpy as np
import torch
from PIL import Image

from dequantizer.data.torch_jpeg import jpeg_coefficients, jpeg_roundtrip
from dequantizer.images import IMAGE_EXTENSIONS, load_rgb
from dequantizer.jpeg import SUBSAMPLINGS

ROOT = Path(__file__).resolve().parents[2]

MODES = ["4:2:0", "4:2:2", "4:4:4", "grey"]


def pillow_file(pixels: np.ndarray, quality: int, mode: str) -> bytes:
    buffer = io.BytesIO()
    subsampling = SUBSAMPLINGS["4:2:0" if mode == "grey" else mode]
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


def compare(pixels: np.ndarray, quality: int, mode: str, scratch: Path) -> tuple[int, int, int, int, int]:
    """(pixels, pixels equal, pixels within 1, coefficients, coefficients equal) for one crop."""
    data = pillow_file(pixels, quality, mode)
    with Image.open(io.BytesIO(data)) as decoded:
        expected = np.asarray(decoded).astype(np.int16)
    batch = torch.from_numpy(pixels.copy())
    batch = batch[None, None] if mode == "grey" else batch.permute(2, 0, 1)[None]
    subsampling = "4:2:0" if mode == "grey" else mode
    ours = jpeg_roundtrip(batch, quality, subsampling)[0]
    ours = (ours[0] if mode == "grey" else ours.permute(1, 2, 0)).numpy().astype(np.int16)
    difference = np.abs(ours - expected)
    scratch.write_bytes(data)
    stored = jpeglib.read_dct(str(scratch))
    planes = [stored.Y] if mode == "grey" else [stored.Y, stored.Cb, stored.Cr]
    coefficients = equal = 0
    for mine, theirs in zip(jpeg_coefficients(batch, quality, subsampling), planes, strict=True):
        rows, columns = theirs.shape[:2]
        coefficients += theirs.size
        equal += int((mine[0, :rows, :columns].numpy() == theirs).sum())
    return difference.size, int((difference == 0).sum()), int((difference <= 1).sum()), coefficients, equal


def batch_timings(photos: list[np.ndarray], device: torch.device, batch: int = 64, side: int = 136,
                  repeats: int = 5) -> dict[str, float]:
    """Seconds per batch of ``batch`` crops: Pillow one by one, torch batched on ``device``."""
    rng = random.Random(0)
    usable = [photo for photo in photos if min(photo.shape[:2]) >= side]
    crops = []
    for _ in range(batch):
        photo = rng.choice(usable)
        top, left = rng.randint(0, photo.shape[0] - side), rng.randint(0, photo.shape[1] - side)
        crops.append(np.ascontiguousarray(photo[top : top + side, left : left + side]))
    qualities = [rng.randint(1, 100) for _ in crops]
    pillow = []
    for _ in range(repeats):
        start = time.perf_counter()
        for crop, quality in zip(crops, qualities, strict=True):
            with Image.open(io.BytesIO(pillow_file(crop, quality, "4:2:0"))) as decoded:
                np.asarray(decoded)
        pillow.append(time.perf_counter() - start)
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous().to(device)
    quality = torch.tensor(qualities, device=device)
    ours = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        jpeg_roundtrip(images, quality)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ours.append(time.perf_counter() - start)
    return {"pillow_s": min(pillow), "torch_s": min(ours[1:])}  # the first torch call warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, help="a folder of clean photos (any tree)")
    parser.add_argument("--crops", type=int, default=4000, help="crops compared (qualities 1-100 in turn)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="folder for agreement.csv and speed.csv")
    args = parser.parse_args()
    paths = sorted(path for path in args.photos.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        sys.exit(f"no photos under {args.photos}")
    rng = random.Random(args.seed)
    photos = [load_rgb(path) for path in rng.sample(paths, min(len(paths), 200))]
    totals = {mode: np.zeros(5, dtype=np.int64) for mode in MODES}
    worst = {mode: (1.0, "none: every crop equal") for mode in MODES}
    with tempfile.TemporaryDirectory() as scratch:
        file = Path(scratch) / "crop.jpg"
        for index in range(args.crops):
            photo, quality, mode = rng.choice(photos), index % 100 + 1, MODES[index // 100 % len(MODES)]
            height, width = rng.randint(8, min(300, photo.shape[0])), rng.randint(8, min(300, photo.shape[1]))
            top, left = rng.randint(0, photo.shape[0] - height), rng.randint(0, photo.shape[1] - width)
            crop = np.ascontiguousarray(photo[top : top + height, left : left + width])
            if mode == "grey":
                crop = np.asarray(Image.fromarray(crop).convert("L"))
            counts = compare(crop, quality, mode, file)
            totals[mode] += counts
            share = counts[1] / counts[0]
            if share < worst[mode][0]:
                worst[mode] = (share, f"q{quality} {width}x{height}")
    rows = []
    for mode, (pixels, equal, within_one, coefficients, coefficients_equal) in totals.items():
        rows.append({"mode": mode, "crops": args.crops // len(MODES), "pixels": pixels,
                     "pixels_equal": f"{equal / pixels:.6f}", "pixels_within_1": f"{within_one / pixels:.6f}",
                     "coefficients": coefficients, "coefficients_equal": f"{coefficients_equal / coefficients:.6f}",
                     "worst_crop_pixels_equal": f"{worst[mode][0]:.6f}", "worst_crop": worst[mode][1]})  # fmt: skip
        print(" ".join(f"{key}={value}" for key, value in rows[-1].items()), flush=True)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    speed = []
    for device in devices:
        timing = batch_timings(photos, device)
        name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        speed.append({"device": name, "batch": "64 x 136x136, 4:2:0, random q1-100",
                      "pillow_one_by_one_s": f"{timing['pillow_s']:.4f}", "torch_batched_s": f"{timing['torch_s']:.4f}",
                      "torch_vs_pillow": f"{timing['pillow_s'] / timing['torch_s']:.2f}x"})  # fmt: skip
        print(" ".join(f"{key}={value}" for key, value in speed[-1].items()), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, table in (("agreement.csv", rows), ("speed.csv", speed)):
            with (args.out / name).open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(table[0]))
                writer.writeheader()
                writer.writerows(table)


if __name__ == "__main__":
    main()

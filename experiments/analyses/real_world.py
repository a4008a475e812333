"""Real-world JPEGs: photos compressed twice (aligned and off the 8x8 grid), resized or cropped between, other chroma
subsampling, progressive, another encoder's tables. How much the default model gains on each, beside what it gains on
a single JPEG at the damaging quality.

    python experiments/analyses/real_world.py data/samples --out experiments/results/real_world
    python experiments/analyses/real_world.py ../shared/testsets/LIVE1_color --cases double --out OUT

Each case turns a clean photo into a JPEG file as a user would get it (Pillow at each step; the last step's tables are
the file's) and a reference (the clean photo cropped or resized the same way). The file is restored as `dequantize`
restores it, so the quality it uses is what its tables, its pixels and the model's head say; the quality used and its
source are recorded per photo. Beside each case, the same reference as a single plain JPEG (IJG tables, 4:2:0) at the
case's last quality and, for a double JPEG, at its first (the damage its pixels carry), each restored as a file of
that quality; the target (issue 22): 75% of the first quality's gain for a double JPEG, the last quality's gain for
the others. RGB PSNR on the full image, as `dequantizer evaluate`; photos that were JPEGs before (evaluate's warnings)
are left out.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from other_tables import other_tables  # the sibling script: IJG's tables, each step scaled by a seeded factor
from PIL import Image

from dequantizer.evaluate import load_photos
from dequantizer.images import image_paths, read_image
from dequantizer.metrics import psnr
from dequantizer.restore import choose_quality, get_restorer, restore_image


@dataclass(frozen=True)
class Case:
    """One way a photo becomes the JPEG a user holds. ``first``: the quality of an earlier JPEG (None: none);
    between the two: a crop by ``shift`` (rows, columns) or a resize by ``scale``; ``second``: the file's quality."""

    name: str
    second: int
    first: int | None = None
    shift: tuple[int, int] = (0, 0)
    scale: float = 1.0
    subsampling: int = 2  # Pillow's: 0 4:4:4, 1 4:2:2, 2 4:2:0
    progressive: bool = False
    camera_tables: bool = False
    grey: bool = False

    @property
    def kind(self) -> str:
        return "double" if self.first is not None else "other"


CASES = [
    Case("q20 -> q75", 75, first=20),
    Case("q20 -> crop (3, 5) -> q75", 75, first=20, shift=(3, 5)),
    Case("q10 -> q90", 90, first=10),
    Case("q10 -> crop (1, 0) -> q90", 90, first=10, shift=(1, 0)),
    Case("q30 -> crop (4, 4) -> q60", 60, first=30, shift=(4, 4)),
    Case("q50 -> q70", 70, first=50),
    Case("q75 -> q30", 30, first=75),
    Case("q90 -> crop (2, 6) -> q50", 50, first=90, shift=(2, 6)),
    Case("q30 -> resize 0.75 -> q75", 75, first=30, scale=0.75),
    Case("resize 0.6 -> q30", 30, scale=0.6),
    Case("crop (3, 5) -> q30", 30, shift=(3, 5)),
    Case("q30, 4:4:4", 30, subsampling=0),
    Case("q30, 4:2:2", 30, subsampling=1),
    Case("q30, progressive", 30, progressive=True),
    Case("camera tables q~85", 85, camera_tables=True),
    Case("camera tables q~60", 60, camera_tables=True),
]
# FBCNN's double JPEG protocol (its main_test_fbcnn_gray_doublejpeg.py): grey, the first JPEG at QF1, cropped by (4, 4),
# the second at QF2, QF1 and QF2 each of 10, 30, 50; it reports on LIVE1.
FBCNN_CASES = [Case(f"grey q{first} -> crop (4, 4) -> q{second}", second, first=first, shift=(4, 4), grey=True)
               for first in (10, 30, 50) for second in (10, 30, 50)]  # fmt: skip


def save_jpeg(rgb: np.ndarray, quality: int, subsampling: int = 2, progressive: bool = False,
              tables: list[list[int]] | None = None) -> bytes:
    buffer = io.BytesIO()
    options = {"qtables": tables} if tables else {"quality": quality}
    Image.fromarray(rgb).save(buffer, "JPEG", subsampling=subsampling, progressive=progressive, **options)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(read_image(io.BytesIO(data), "case").convert("RGB"))


def crop_and_resize(rgb: np.ndarray, case: Case) -> np.ndarray:
    rgb = rgb[case.shift[0] :, case.shift[1] :]
    if case.scale != 1:
        height, width = rgb.shape[:2]
        size = (round(width * case.scale), round(height * case.scale))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC))
    return np.ascontiguousarray(rgb)


def degrade(rgb: np.ndarray, case: Case) -> tuple[bytes, np.ndarray]:
    """(the JPEG file, its clean reference)."""
    if case.grey:
        rgb = np.asarray(Image.fromarray(rgb).convert("L"))
    reference = crop_and_resize(rgb, case)
    pixels = crop_and_resize(decoded(save_jpeg(rgb, case.first)), case) if case.first else reference
    tables = list(other_tables(case.second)) if case.camera_tables else None  # a camera's: not IJG's
    return save_jpeg(pixels, case.second, case.subsampling, case.progressive, tables), reference


def gain(data: bytes, reference: np.ndarray, restorer) -> tuple[float, float, int | None, str]:
    """(JPEG PSNR, the restoration's gain, the quality restored for, where that came from)."""
    image = read_image(io.BytesIO(data), "case")
    mode = "L" if reference.ndim == 2 else "RGB"
    before = psnr(np.asarray(image.convert(mode)), reference)
    choice = choose_quality(image, restorer)
    after = psnr(np.asarray(restore_image(image, restorer, choice=choice).convert(mode)), reference)
    source = f"{choice.source}: {choice.detail}" if choice.detail else choice.source
    return before, after - before, choice.quality, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="clean photos or folders")
    parser.add_argument("--model", default=None, help="a shipped name or weights file (default: the default model)")
    parser.add_argument("--cases", choices=["all", "double", "fbcnn"], default="all",
                        help="fbcnn: FBCNN's double JPEG protocol (grey, QF1/QF2 of 10, 30, 50, cropped by 4, 4)")
    parser.add_argument("--out", type=Path, help="folder for cases.csv, photos.csv and cases.json")
    args = parser.parse_args()
    photos, failures, jpeg_born = load_photos(image_paths(args.inputs))
    for failure in failures:
        print(failure)
    photos = {path: rgb for path, rgb in photos.items() if path not in jpeg_born and rgb.ndim == 3}
    restorer = get_restorer(args.model)
    cases = FBCNN_CASES if args.cases == "fbcnn" else [case for case in CASES
                                                         if args.cases == "all" or case.kind == "double"]
    rows, summary = [], []
    singles: dict[tuple[str, int, tuple[int, int], float, bool], float] = {}

    def single_gain(path: str, rgb: np.ndarray, quality: int, case: Case) -> float:
        """The gain on the case's reference as one plain JPEG (IJG tables, 4:2:0) at ``quality``."""
        key = (path, quality, case.shift, case.scale if quality == case.second else 1.0, case.grey)
        if key not in singles:
            clean = crop_and_resize(np.asarray(Image.fromarray(rgb).convert("L")) if case.grey else rgb,
                                    Case("", quality, shift=case.shift, scale=key[3]))
            singles[key] = gain(save_jpeg(clean, quality), clean, restorer)[1]
        return singles[key]

    for case in cases:
        gains, firsts, lasts = [], [], []
        for path, rgb in photos.items():
            data, reference = degrade(rgb, case)
            before, change, quality, source = gain(data, reference, restorer)
            first = single_gain(path, rgb, case.first, case) if case.first else None
            last = single_gain(path, rgb, case.second, case)
            gains.append(change)
            lasts.append(last)
            if first is not None:
                firsts.append(first)
            rows.append({"case": case.name, "photo": Path(path).stem, "jpeg_psnr": round(before, 3),
                         "gain": round(change, 3), "quality_used": quality, "source": source,
                         "single_first_quality_gain": None if first is None else round(first, 3),
                         "single_last_quality_gain": round(last, 3)})  # fmt: skip
        mean = float(np.mean(gains))
        # What the case should reach: a double JPEG, 75% of its first quality's gain; the others, their last one's.
        target = 0.75 * float(np.mean(firsts)) if firsts else float(np.mean(lasts))
        record = {"case": case.name, "photos": len(gains), "gain": round(mean, 3),
                  "lowest": round(float(np.min(gains)), 3),
                  "single_first_quality_gain": round(float(np.mean(firsts)), 3) if firsts else None,
                  "single_last_quality_gain": round(float(np.mean(lasts)), 3),
                  "target": round(target, 3), "met": mean >= target}  # fmt: skip
        summary.append(record)
        print(json.dumps(record), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, table in (("cases.csv", summary), ("photos.csv", rows)):
            with (args.out / name).open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in table for k in row)))
                writer.writeheader()
                writer.writerows(table)


if __name__ == "__main__":
    main()

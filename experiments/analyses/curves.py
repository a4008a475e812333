"""Validation curves of the shipped default model's stages, one after the other, against training images seen.

    python experiments/analyses/curves.py experiments/results/blind/curves.png \
        gpu-stage1:32=experiments/results/blind/stage1_metrics.csv \
        gpu-stage2:32=experiments/results/blind/stage2_metrics.csv \
        cpu-stage3:16=outputs/blind-3_cpu_finetune/runs/<time>/csv/version_0/metrics.csv

Each stage is ``NAME:BATCH_SIZE=PATH`` to a Lightning CSVLogger's metrics.csv. Prints the curve as a table too (the
gain over the JPEG input on the stage's validation crops, and the quality head's mean error).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def validation_rows(path: Path) -> list[dict[str, float]]:
    with path.open() as file:
        return [
            {"step": int(row["step"]) + 1, "gain": float(row["val/psnr_gain"]),
             "quality_error": float(row.get("val/quality_error") or "nan")}
            for row in csv.DictReader(file)
            if row.get("val/psnr_gain")
        ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("stages", nargs="+", help="NAME:BATCH=METRICS_CSV, in training order")
    args = parser.parse_args()
    figure, axis = plt.subplots(figsize=(7, 4))
    seen = 0
    for stage in args.stages:
        label, path = stage.split("=", 1)
        name, batch = label.split(":")
        rows = validation_rows(Path(path))
        images = [seen + row["step"] * int(batch) for row in rows]
        axis.plot([count / 1e3 for count in images], [row["gain"] for row in rows], marker="o", label=name)
        print(f"{name} (batch {batch}):")
        for count, row in zip(images, rows, strict=True):
            print(f"  {count / 1e3:8.0f}k images  gain {row['gain']:+.3f} dB  quality error {row['quality_error']:.2f}")
        seen = images[-1]
    axis.set_xlabel("training crops seen (thousands)")
    axis.set_ylabel("validation PSNR gain over JPEG (dB)")
    axis.grid(alpha=0.3)
    axis.legend()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

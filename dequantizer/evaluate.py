"""Evaluation: JPEG input vs restored PSNR/SSIM per quality on clean photos, with tables, CSV/JSON, plot and grids."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dequantizer.errors import DequantizerError
from dequantizer.files import atomic_write
from dequantizer.images import read_image, rgb_pixels, save_image_atomic, square_resize
from dequantizer.jpeg import SUBSAMPLINGS, estimate_jpeg_quality, jpeg_history
from dequantizer.metrics import photo_metrics, to_unit_tensor, y_psnr
from dequantizer.restore import Restorer, restore_image


@dataclass
class Row:
    """One photo's metrics at one quality (``photo`` its path), or their mean over ``images`` photos (``photo`` "")."""

    quality: int
    images: int
    psnr_jpeg: float
    psnr: float
    ssim_jpeg: float
    ssim: float
    psnr_y_jpeg: float
    psnr_y: float
    photo: str = ""

    @property
    def gain(self) -> float:
        return self.psnr - self.psnr_jpeg


METRICS = ("psnr_jpeg", "psnr", "ssim_jpeg", "ssim", "psnr_y_jpeg", "psnr_y")  # what a Row's mean averages


def evaluate(restorer: Restorer, photos: dict[str, np.ndarray], qualities: list[int], grid_dir: Path | None = None,
             subsampling: str = "4:2:0", raw: bool = False, progress: bool = False) -> list[Row]:
    """Each photo's metrics, of the JPEG input and of the restored image, at each quality (``mean_rows`` averages
    them).

    ``raw``: restore the decoded pixels without the file's quantization tables (as an image that was decoded and
    re-saved losslessly reaches us): no quality gate, and a quality-aware model reads the quality from the pixels.
    ``progress``: a progress bar (images x qualities) on stderr.
    """
    from tqdm import tqdm

    rows = []
    grid_names = unique_names(list(photos))
    bar = tqdm(total=len(qualities) * len(photos), unit="image", disable=not progress)
    for quality in qualities:
        for name, rgb in photos.items():
            # Through a real JPEG file, as users restore them (its quantization tables are part of what it says).
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, "JPEG", quality=quality, subsampling=SUBSAMPLINGS[subsampling])
            with Image.open(buffer) as jpeg_file:
                jpeg_file.load()
                jpeg = np.asarray(jpeg_file.convert("RGB"))
                restored = np.asarray(restore_image(Image.fromarray(jpeg) if raw else jpeg_file, restorer))
            target, jpeg01, restored01 = to_unit_tensor(rgb), to_unit_tensor(jpeg), to_unit_tensor(restored)
            psnr_jpeg, ssim_jpeg = photo_metrics(jpeg01, target)
            psnr, ssim = photo_metrics(restored01, target)
            measured = (psnr_jpeg, psnr, ssim_jpeg, ssim, y_psnr(jpeg01, target), y_psnr(restored01, target))
            rows.append(Row(quality, 1, *(float(value) for value in measured), photo=name))
            if grid_dir is not None:
                labels = (f"JPEG q{quality}: {float(psnr_jpeg):.2f} dB", f"restored: {float(psnr):.2f} dB",
                          "original")
                save_image_atomic(labelled_grid([jpeg, restored, rgb], labels),
                                  grid_dir / f"{grid_names[name]}_q{quality}.png")
            bar.update()
    bar.close()
    return rows


def unique_names(paths: list[str]) -> dict[str, str]:
    """A file name for each photo's grids: its path below the folder all the photos share, "/" as "_", without its
    suffix where that is unique, else with it, else with a counter: no photo's grids overwrite another's."""
    if not paths:
        return {}
    parents = [Path(path).resolve().parent for path in paths]
    common = Path(os.path.commonpath(parents)) if len(paths) > 1 else parents[0]
    relative = {path: Path(path).resolve().relative_to(common) for path in paths}
    stems = Counter(rel.with_suffix("").as_posix().replace("/", "_") for rel in relative.values())
    names, taken = {}, Counter()
    for path, rel in relative.items():
        name = rel.with_suffix("").as_posix().replace("/", "_")
        if stems[name] > 1:
            name = rel.as_posix().replace("/", "_").replace(".", "_")
        taken[name] += 1
        names[path] = name if taken[name] == 1 else f"{name}-{taken[name]}"
    return names


def labelled_grid(images: list[np.ndarray], labels: tuple[str, ...]) -> Image.Image:
    """Images side by side (HxWx3 uint8, equal sizes), each under a strip that names it."""
    from PIL import ImageDraw, ImageFont

    height, width = images[0].shape[:2]
    font = ImageFont.load_default(size=max(12, min(24, width // 20)))
    strip = int(font.size * 1.6)
    grid = Image.new("RGB", (width * len(images), height + strip), "white")
    draw = ImageDraw.Draw(grid)
    for column, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        grid.paste(Image.fromarray(pixels), (column * width, strip))
        draw.text((column * width + 4, strip // 2), label, fill="black", font=font, anchor="lm")
    return grid


def mean_rows(photo_rows: list[Row], leave_out: Collection[str] = ()) -> list[Row]:
    """Per quality, the mean of the photos' rows (each photo counts once, whatever its size), without the photos in
    ``leave_out``."""
    by_quality: dict[int, list[Row]] = {}
    for row in photo_rows:
        if row.photo not in leave_out:
            by_quality.setdefault(row.quality, []).append(row)
    return [Row(quality, len(rows), *(float(np.mean([getattr(row, key) for row in rows])) for key in METRICS))
            for quality, rows in by_quality.items()]


def format_table(rows: list[Row], title: str) -> str:
    lines = [title, f"{'quality':>7} {'JPEG PSNR':>10} {'restored':>9} {'gain':>7} {'JPEG SSIM':>10} {'restored':>9} "
             f"{'Y-PSNR gain':>12}"]
    for row in rows:
        lines.append(
            f"{row.quality:>7} {row.psnr_jpeg:>10.3f} {row.psnr:>9.3f} {row.gain:>+7.3f} {row.ssim_jpeg:>10.4f} "
            f"{row.ssim:>9.4f} {row.psnr_y - row.psnr_y_jpeg:>+12.3f}"
        )
    return "\n".join(lines)


def write_reports(photo_rows: list[Row], output: Path, metadata: dict, jpeg_born: Collection[str] = ()) -> list[Path]:
    """results.csv (the means), photos.csv (each photo), results.json (both, and the means without the ``jpeg_born``
    references when there are any) and gain.png (when matplotlib is installed) under ``output``."""
    rows = mean_rows(photo_rows)
    clean_rows = mean_rows(photo_rows, jpeg_born) if jpeg_born else []
    written = [write_csv(row_dicts(rows, "photo"), output / "results.csv"),
               write_csv(row_dicts(photo_rows, "images"), output / "photos.csv")]
    record = {"model": metadata, "rows": row_dicts(rows, "photo")}
    if clean_rows:
        record |= {"jpeg_born_references": sorted(jpeg_born), "rows_without_jpeg_born": row_dicts(clean_rows, "photo")}
    record["photos"] = row_dicts(photo_rows, "images")
    written.append(atomic_write(output / "results.json", json.dumps(record, indent=1) + "\n"))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    figure = gain_figure(rows, clean_rows, len(jpeg_born))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    written.append(atomic_write(output / "gain.png", buffer.getvalue()))
    return written


def gain_figure(rows: list[Row], clean_rows: list[Row], jpeg_born: int):
    """The PSNR gain over the JPEG input by quality (and without the ``jpeg_born`` references, where there are any):
    lines over several qualities, labelled bars for one."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    series = [(f"all {rows[0].images} photos", rows)]
    if clean_rows:
        series.append((f"without the {jpeg_born} JPEG-born reference{'s' * (jpeg_born > 1)}", clean_rows))
    if len(rows) == 1:  # one quality: bars with their values, not a lone dot on a quality axis
        bars = axis.bar([label for label, _ in series], [part[0].gain for _, part in series], width=0.5)
        axis.bar_label(bars, fmt="%+.2f dB")
        axis.set_xlabel(f"JPEG quality {rows[0].quality}")
    else:
        for (label, part), style in zip(series, ("-", "--"), strict=False):
            axis.plot([r.quality for r in part], [r.gain for r in part], marker="o", linestyle=style, label=label)
        axis.set_xlabel("JPEG quality")
        axis.legend()
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_ylabel("RGB PSNR gain over the JPEG (dB)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def row_dicts(rows: list[Row], leave_out: str) -> list[dict]:
    """Rows as records with their gain, without the field that says nothing there ("photo" of a mean, "images" of a
    photo)."""
    return [{key: value for key, value in {**asdict(row), "gain": row.gain}.items() if key != leave_out}
            for row in rows]


def write_csv(records: list[dict], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return atomic_write(path, buffer.getvalue())


# A JPEG reference below this quality carries artefacts of its own that the restorer is then scored for removing.
CLEAN_JPEG_QUALITY = 90


def jpeg_reference_warning(path: Path, image: Image.Image, rgb: np.ndarray) -> str | None:
    """A warning when a reference photo (``image``, decoded as ``rgb``) is a JPEG file below ``CLEAN_JPEG_QUALITY``,
    or plainly was one once."""
    quality = estimate_jpeg_quality(image)
    if quality is not None and quality < CLEAN_JPEG_QUALITY:
        return (f"{path} is itself a JPEG (quality about {quality}): its own artefacts count against the model, so "
                "the gains are meaningless; evaluate on never-compressed photos (PNG, TIFF)")
    history = jpeg_history(rgb) if quality is None else None
    if history:
        quality, fit, origin = history
        where = "" if origin == (0, 0) else f", cropped: its block grid starts at row {origin[0]}, column {origin[1]}"
        return (f"{path} was a JPEG before (quality about {quality}{where}: its DCT coefficients sit on quantization "
                f"steps of about that quality, fit {fit:.2f}): gains at and above that quality are meaningless")
    return None


def load_photos(paths: list[Path], square: int | None = None
                ) -> tuple[dict[str, np.ndarray], list[str], dict[str, str]]:
    """The readable photos as uint8 arrays, one line per unreadable file, and a warning for each reference that is
    or was a JPEG (by the photo's key)."""
    photos, failures, warnings = {}, [], {}
    for path in paths:
        try:
            image = read_image(path)
        except DequantizerError as error:  # reported, the rest goes on
            failures.append(str(error))
            continue
        rgb = rgb_pixels(image)
        warning = jpeg_reference_warning(path, image, rgb)
        if warning:
            warnings[str(path)] = warning
        if square:
            rgb = square_resize(rgb, square)
        photos[str(path)] = rgb
    return photos, failures, warnings

"""Assemble the default model's training photos: ../shared/photos and the Debian wallpapers, at full size, as
lossless WebP, with the fixed split; and cut them into packs that travel to a GPU machine.

    python experiments/offline_photos.py debian-wallpapers data/wallpapers      # the 57 Debian scenes (see there)
    python experiments/training_photos.py data/photos                          # the training folder + split.json
    python experiments/training_photos.py data/photos --packs gpu_packs   # and packs that travel (5 parts)

``data/photos/shared/<folder>/<name>.webp`` and ``data/photos/debian/<scene>.webp`` are lossless copies (25% smaller
than the PNGs; nothing from ../shared is ever committed). Photos that plainly were JPEGs
(`dequantizer.jpeg.jpeg_history`, on their own block grid or off it, as a crop of a JPEG is) are left out: their
targets would teach the model to keep JPEG artefacts; files in the folder that are no longer photos of it are removed.
The split is ``experiments/training_split.json`` (committed, so every run, wherever it runs, validates on the same
photos): 10% of each source folder, seeded, for validation (checkpoint selection only). The folder's split.json is
that split, less the photos that are not there (no Debian scenes, say); photos missing from it are placed by the
DataModule's seeded hash.
scikit-image's photos are never included: they are the unseen evaluation set.

``--packs`` copies the folder into ``part1/``, ``part2/``, ... of at most ``--pack-mib`` each (by default what fits
beside the tracked files and the wheels of experiments/gpu_wheels.sh), every part a piece of the same tree (part1
holds split.json): a GPU machine receives only the working tree (64 MiB with the tracked files), so the photos travel
one part per call, and each call merges its part into one folder that stays there while the machine is held
(``experiments/gpu_stage.sh``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from PIL import Image

from dequantizer.data.split import make_split
from dequantizer.files import atomic_write
from dequantizer.images import IMAGE_EXTENSIONS, load_rgb
from dequantizer.jpeg import jpeg_history

ROOT = Path(__file__).resolve().parent.parent
SPLIT = ROOT / "experiments" / "training_split.json"
SEED, VAL_FRACTION = 1234, 0.1


def photos_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())


def sources(shared: Path, debian: Path | None) -> dict[str, Path]:
    """Training name (``shared/<folder>/<stem>.webp``, ``debian/<stem>.webp``) -> source file."""
    named = {f"shared/{path.relative_to(shared).with_suffix('.webp').as_posix()}": path
             for path in photos_under(shared)}  # fmt: skip
    if debian is not None:
        named |= {f"debian/{path.stem}.webp": path for path in photos_under(debian)}
    return named


def write_copies(named: dict[str, Path], output: Path) -> list[str]:
    """Lossless WebP copies of the photos that were never JPEGs; the names written (or already there and newer
    than their source)."""
    kept = []
    for name, source in named.items():
        target = output / name
        if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
            kept.append(name)
            continue
        pixels = load_rgb(source)
        history = jpeg_history(pixels)
        if history:
            print(f"left out {name}: it was a JPEG (quality about {history[0]}, block grid at {history[2]})")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix.lower() == ".webp":  # already lossless WebP: the same bytes
            shutil.copyfile(source, target)
        else:
            Image.fromarray(pixels).save(target.with_suffix(".tmp"), "WEBP", lossless=True, quality=100, method=4)
            target.with_suffix(".tmp").replace(target)
        kept.append(name)
    return kept


def pixel_count(path: Path) -> int:
    with Image.open(path) as image:
        return image.width * image.height


def fixed_split(names: list[str]) -> dict[str, list[str]]:
    """The committed split, made once: per source folder, a seeded 10% for validation."""
    if SPLIT.is_file():
        return json.loads(SPLIT.read_text())
    folders: dict[str, list[str]] = {}
    for name in names:
        folders.setdefault(name.rsplit("/", 1)[0], []).append(name)
    split: dict[str, list[str]] = {"train": [], "val": []}
    for members in folders.values():
        val = make_split(members, VAL_FRACTION, 0.0, SEED)["val"] if len(members) >= 2 else set()
        for name in members:
            split["val" if name in val else "train"].append(name)
    record = {"seed": SEED, "val_fraction": VAL_FRACTION, "test_fraction": 0.0,
              **{part: sorted(members) for part, members in split.items()}}  # fmt: skip
    atomic_write(SPLIT, json.dumps(record, indent=1) + "\n")
    return record


def remove_stale(output: Path, names: list[str]) -> None:
    """Photos in ``output`` that are not among ``names`` (left out since, or from an older layout)."""
    keep = set(names)
    for path in photos_under(output):
        if path.relative_to(output).as_posix() not in keep:
            print(f"removed {path}: no longer one of the training photos")
            path.unlink()


def write_packs(folder: Path, names: list[str], packs: Path, pack_mib: float) -> list[tuple[int, float]]:
    """Copies of the photos in parts of at most ``pack_mib`` MiB; (photos, MiB) per part."""
    if folder.resolve().is_relative_to(packs.resolve()):
        raise SystemExit(f"--packs {packs} holds the training folder {folder}: name a folder of its own")
    if packs.exists():
        shutil.rmtree(packs)
    parts: list[list[str]] = [[]]
    sizes = [(folder / "split.json").stat().st_size]
    for name in names:
        size = (folder / name).stat().st_size
        if parts[-1] and sizes[-1] + size > pack_mib * 2**20:
            parts.append([])
            sizes.append(0)
        parts[-1].append(name)
        sizes[-1] += size
    for index, members in enumerate(parts, start=1):
        for name in members:
            (packs / f"part{index}" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, packs / f"part{index}" / name)
    shutil.copyfile(folder / "split.json", packs / "part1" / "split.json")
    return [(len(members), size / 2**20) for members, size in zip(parts, sizes, strict=True)]


def room_beside_the_tree(limit_mib: float = 64, margin_mib: float = 1) -> float:
    """MiB left for one pack part in a GPU call: its limit, less the tracked files and the carried wheels (.whl/)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = [ROOT / name for name in tracked.decode().split("\0") if name]
    used = sum(path.stat().st_size for path in files if path.is_file())
    used += sum(path.stat().st_size for path in (ROOT / ".whl").glob("*.whl"))
    return limit_mib - used / 2**20 - margin_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="the training folder (data/photos)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "photos")
    parser.add_argument("--debian", type=Path, default=ROOT / "data" / "wallpapers",
                        help="the Debian scenes (experiments/offline_photos.py); left out if missing")
    parser.add_argument("--packs", type=Path, help="also cut the folder into parts here, to carry to a GPU machine")
    parser.add_argument("--pack-mib", type=float,
                        help="largest part, MiB (default: what travels beside the tracked tree and the wheels, "
                             "64 MiB in all, less 1 MiB)")
    args = parser.parse_args()
    if not args.shared.is_dir():
        parser.error(f"{args.shared} does not exist: it holds the shared training photos")
    debian = args.debian if args.debian.is_dir() else None
    if debian is None:
        print(f"{args.debian} does not exist: training without the Debian scenes (experiments/offline_photos.py)")
    names = write_copies(sources(args.shared, debian), args.output)
    remove_stale(args.output, names)
    split = fixed_split(names)
    present = set(names)
    split = {key: [name for name in value if name in present] if key in ("train", "val") else value
             for key, value in split.items()}  # fmt: skip
    atomic_write(args.output / "split.json", json.dumps(split, indent=1) + "\n")
    listed = set(split["train"]) | set(split["val"])
    megapixels = sum(pixel_count(args.output / name) for name in names) / 1e6
    mib = sum((args.output / name).stat().st_size for name in names) / 2**20
    print(f"{len(names)} photos ({megapixels:.1f} MP, {mib:.1f} MiB) in {args.output}: "
          f"{sum(name in split['val'] for name in names)} for validation, {len(set(names) - listed)} not in the split")
    if args.packs:
        pack_mib = args.pack_mib or room_beside_the_tree()
        for index, (count, size) in enumerate(write_packs(args.output, names, args.packs, pack_mib), start=1):
            print(f"{args.packs}/part{index}: {count} photos, {size:.1f} MiB")


if __name__ == "__main__":
    main()

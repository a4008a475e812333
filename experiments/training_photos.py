"""Assemble the shipped default model's training photos: ../shared/photos (502 photographs) + the Debian wallpapers.

    python experiments/offline_photos.py debian-wallpapers data/wallpapers      # the 57 Debian scenes (see there)
    python experiments/training_photos.py data/photos                          # links both into one folder + split
    python experiments/training_photos.py data/photos --pack gpu_data/photos --max-side 320   # a copy small enough
                                                                                # to travel to a GPU machine

``data/photos/shared/...`` and ``data/photos/debian/...`` link to the photos (nothing is copied, nothing from
../shared is ever committed). Photos that plainly were JPEGs (`dequantizer.data.images.jpeg_history`, on their own
block grid or off it, as a crop of a JPEG is) are left out: 18 of T91's 81 (9 found in session 6, 9 more in
session 7 by their DCT coefficients, 7 of them with tables other than IJG's; the models trained before saw them).
``split.json`` keeps ../shared/photos' own validation photos and holds out 10% of the Debian scenes (the same seeded
split the first `blind` model used).
scikit-image's photos are never included: they are the unseen evaluation set.

``--pack`` writes a compact copy for a machine that cannot see ../shared: one seeded crop of at most
``--max-side`` x ``--max-side`` from each photo, lossless WebP (no JPEG history is added), with the same split.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

from PIL import Image

from dequantizer.data.images import IMAGE_EXTENSIONS, jpeg_history, load_rgb
from dequantizer.data.split import make_split
from dequantizer.files import atomic_write

ROOT = Path(__file__).resolve().parent.parent


def photos_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())


def link_photos(shared: Path, debian: Path, output: Path, seed: int) -> dict[str, list[str]]:
    """Symlinks under ``output`` and the split, by name relative to ``output``."""
    shared_split = json.loads((shared / "split.json").read_text())
    shared_val = set(shared_split["val"])
    split: dict[str, list[str]] = {"train": [], "val": []}
    for path in photos_under(shared):
        name = path.relative_to(shared).as_posix()
        history = jpeg_history(load_rgb(path))
        if history:  # its target would teach the model to keep JPEG artefacts
            stale = output / "shared" / name
            if stale.is_symlink():
                stale.unlink()
            print(f"left out shared/{name}: it was a JPEG (quality about {history[0]}, block grid at {history[2]})")
            continue
        split["val" if name in shared_val else "train"].append(f"shared/{name}")
    scenes = photos_under(debian)
    debian_val = make_split([path.stem for path in scenes], 0.1, 0.0, seed)["val"]
    for path in scenes:
        split["val" if path.stem in debian_val else "train"].append(f"debian/{path.name}")
    for name in split["train"] + split["val"]:
        prefix, rest = name.split("/", 1)
        source = (shared if prefix == "shared" else debian) / rest
        link = output / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(source.resolve(), link.parent.resolve()))
    return split


def pack(source: Path, split: dict[str, list[str]], output: Path, max_side: int, seed: int) -> None:
    """One seeded crop (at most max_side square) of every photo as lossless WebP, and the split renamed to match."""
    rng = random.Random(seed)
    packed: dict[str, list[str]] = {"train": [], "val": []}
    total_bytes = total_pixels = 0
    for part in ("train", "val"):
        for name in split[part]:
            with Image.open(source / name) as image:
                image = image.convert("RGB")
                width, height = min(image.width, max_side), min(image.height, max_side)
                left, top = rng.randint(0, image.width - width), rng.randint(0, image.height - height)
                crop = image.crop((left, top, left + width, top + height))
            target = Path(name).with_suffix(".webp").as_posix()
            path = output / target
            path.parent.mkdir(parents=True, exist_ok=True)
            crop.save(path, "WEBP", lossless=True, quality=100, method=4)
            packed[part].append(target)
            total_bytes += path.stat().st_size
            total_pixels += width * height
    record = {"seed": seed, "val_fraction": 0.1, **packed}
    atomic_write(output / "split.json", json.dumps(record, indent=1) + "\n")
    print(f"packed {sum(map(len, packed.values()))} crops, {total_pixels / 1e6:.1f} MP, {total_bytes / 2**20:.1f} MiB "
          f"in {output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="where to link the photos (data/photos)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "photos")
    parser.add_argument("--debian", type=Path, default=ROOT / "data" / "wallpapers")
    parser.add_argument("--pack", type=Path, help="also write a compact lossless copy here")
    parser.add_argument("--max-side", type=int, default=320, help="largest crop side in the compact copy")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    for folder in (args.shared, args.debian):
        if not folder.is_dir():
            parser.error(f"{folder} does not exist (see this script's help for how to make it)")
    split = link_photos(args.shared, args.debian, args.output, args.seed)
    record = {"seed": args.seed, "val_fraction": 0.1, **split}
    atomic_write(args.output / "split.json", json.dumps(record, indent=1) + "\n")
    print(f"{len(split['train'])} train + {len(split['val'])} val photos linked in {args.output}")
    if args.pack:
        pack(args.output, split, args.pack, args.max_side, args.seed)


if __name__ == "__main__":
    main()

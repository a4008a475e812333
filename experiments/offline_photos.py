"""Build the offline training set for the shipped models from Debian's wallpaper packages.

    apt-get download mate-backgrounds plasma-workspace-wallpapers
    for f in *.deb; do dpkg-deb -x "$f" debian-wallpapers; done
    python experiments/offline_photos.py debian-wallpapers data/wallpapers

Each wallpaper scene is kept once (its largest file; dark/light variants and screenshots are the same scene) and
area-downscaled 4x, which erases its own JPEG history, then saved as PNG under the scene's name. The split by scene is
made later by the DataModule (data=folder). scikit-image's photos are NOT used here: they are the evaluation set.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from PIL import Image

from dequantizer.images import IMAGE_EXTENSIONS, save_image_atomic

Image.MAX_IMAGE_PIXELS = 200_000_000  # the largest wallpapers are 5640x3172 and the like


def scene_name(path: Path) -> str:
    """Plasma: wallpapers/<Scene>/contents/images*/WxH.ext; MATE: backgrounds/mate/<kind>/<Scene>[_WxH].ext."""
    if "contents" in path.parts:
        return path.parts[path.parts.index("contents") - 1]
    return re.sub(r"_\d+x\d+$", "", path.stem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="folder the .deb packages were extracted into")
    parser.add_argument("output", type=Path)
    parser.add_argument("--factor", type=int, default=4, help="area downscale factor")
    args = parser.parse_args()

    largest: dict[str, tuple[int, Path]] = {}
    for path in sorted(args.source.rglob("*")):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or "screenshot" in path.stem.lower():
            continue
        with Image.open(path) as image:
            pixels = image.width * image.height
        scene = scene_name(path)
        if scene not in largest or pixels > largest[scene][0]:
            largest[scene] = (pixels, path)
    for scene, (_, path) in sorted(largest.items()):
        with Image.open(path) as image:
            image = image.convert("RGB").reduce(args.factor)
        save_image_atomic(image, args.output / f"{scene}.png")
        print(f"{scene:<40} {image.width}x{image.height}  <- {path.relative_to(args.source)}")
    print(f"{len(largest)} scenes in {args.output}")


if __name__ == "__main__":
    main()

"""The `dequantizer` console script. It only parses arguments and calls the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dequantizer.errors import DequantizerError


def _quantize(args: argparse.Namespace) -> int:
    from PIL import Image

    from dequantizer.data.images import IMAGE_EXTENSIONS, jpeg_roundtrip, save_image_atomic

    failures = 0
    for source in args.inputs:
        if source.is_dir():
            paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            paths = [source]
        for path in paths:
            target = args.output / f"{path.stem}.q{args.quality}.png"
            try:
                with Image.open(path) as image:
                    image = image.convert("RGB")
                save_image_atomic(jpeg_roundtrip(image, args.quality, args.subsampling), target)
                print(f"{path} -> {target}")
            except (OSError, ValueError) as error:
                print(f"error: {path}: cannot read it as an image ({error})", file=sys.stderr)
                failures += 1
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dequantizer", description="Restore JPEG-damaged photos.")
    commands = parser.add_subparsers(dest="command", required=True)
    quantize = commands.add_parser("quantize", help="JPEG round trip at a given quality, saved losslessly as PNG")
    quantize.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    quantize.add_argument("-q", "--quality", type=int, default=10, help="JPEG quality 1-100 (default 10)")
    quantize.add_argument("--subsampling", default="4:2:0", choices=["4:4:4", "4:2:2", "4:2:0"])
    quantize.add_argument("-o", "--output", type=Path, default=Path("."), help="output folder")
    quantize.set_defaults(run=_quantize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DequantizerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

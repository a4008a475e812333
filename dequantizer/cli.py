"""The `dequantizer` console script. It only parses arguments and calls the library."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from PIL.PngImagePlugin import PngInfo

from dequantizer.errors import DequantizerError


def _error(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"error: {message}", file=sys.stderr)  # on its own line, even under a progress bar


def _output_folder(folder: Path) -> Path:
    """Create the output folder, or one line saying why it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DequantizerError(f"{folder} is a file: --output takes a folder") from None
    except NotADirectoryError:
        raise DequantizerError(f"{folder}: a part of this path is a file: --output takes a folder") from None
    except OSError as error:
        raise DequantizerError(f"cannot create the output folder {folder}: {error.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DequantizerError(f"cannot write to {folder} (permission denied): choose another --output folder")
    return folder


def _plan(inputs: list[Path], output: Path, name: Callable[[Path, bool], Path]) -> list[tuple[Path, Path]]:
    """(input file, output file) for files and folders (recursive). One folder's tree is mirrored into ``output``;
    with several inputs, each folder's tree goes under the folder's own name. ``name(relative path, keep_suffix)``
    names an output; inputs that would still share an output (photo.jpg beside photo.jpeg) keep their own extension
    in the name (photo.jpg.png, photo.jpeg.png), and what still collides is refused: nothing is silently lost."""
    from dequantizer.images import image_paths

    sources: list[tuple[Path, Path]] = []  # (file, where its output goes relative to the output folder)
    for item in inputs:
        if not item.exists():
            raise DequantizerError(f"{item}: no such file or folder")
        if item.is_dir():
            base = Path() if len(inputs) == 1 else Path(item.resolve().name)
            sources += [(path, base / path.relative_to(item)) for path in image_paths([item])]
        else:
            sources.append((item, Path(item.name)))
    unique = list({path.resolve(): (path, relative) for path, relative in sources}.values())  # given twice: once
    first = Counter(name(relative, False) for _, relative in unique)
    plan = [(path, output / name(relative, first[name(relative, False)] > 1)) for path, relative in unique]
    seen: dict[Path, Path] = {}
    for path, target in plan:
        if target in seen:
            raise DequantizerError(f"{seen[target]} and {path} would both be written to {target}: give them "
                                   "separate --output folders")
        seen[target] = path
    return plan


@contextmanager
def _writing(target: Path) -> Iterator[None]:
    """The OS's refusal to write ``target`` (permissions, a full disk) as one line."""
    try:
        yield
    except OSError as error:
        raise DequantizerError(f"cannot write {target}: {error.strerror or error}") from None


def _check_target(path: Path, target: Path) -> None:
    """Refuse, before any work on ``path``, an output that cannot be written: the input itself, a folder in the way,
    a file where a folder of the mirrored tree goes, a folder that cannot be written to."""
    if target.resolve() == path.resolve():
        raise DequantizerError(f"{path}: refusing to overwrite an input; choose another --output folder")
    if target.is_dir():
        raise DequantizerError(f"cannot write {target}: a folder of that name is in the way")
    # Folders are made when the file is written; here, the nearest one that exists must take them.
    existing = target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise DequantizerError(f"cannot write {target}: {existing} is a file, where a folder goes")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DequantizerError(f"cannot write {target} (permission denied): choose another --output folder")


def _summary(done: int, verb: str, skipped: int, failures: int, output: Path) -> None:
    print(f"{done} {verb}, {skipped} skipped (already there; --overwrite to redo), {failures} failed -> {output}",
          file=sys.stderr)


def _quantize(args: argparse.Namespace) -> int:
    from dequantizer import quantize
    from dequantizer.files import atomic_write
    from dequantizer.images import open_image, save_image_atomic
    from dequantizer.jpeg import QUALITY_TEXT_KEY, check_quality, jpeg_bytes, jpeg_input

    check_quality(args.quality)
    extension = "jpg" if args.format == "jpeg" else "png"
    plan = _plan(args.inputs, args.output,
                 lambda rel, keep: rel.with_name(f"{rel.name if keep else rel.stem}.q{args.quality}.{extension}"))
    _output_folder(args.output)
    failures = skipped = 0
    for path, target in plan:
        try:
            _check_target(path, target)
            if target.exists() and not args.overwrite:
                skipped += 1
                continue
            if args.format == "jpeg":  # the file itself: its tables tell `dequantize` the quality
                pixels, alpha = jpeg_input(open_image(path))
                if alpha is not None:
                    raise DequantizerError(f"{path}: has transparency, which JPEG cannot hold; use --format png")
                data = jpeg_bytes(pixels, args.quality, args.subsampling)
                with _writing(target):
                    atomic_write(target, data)
            else:  # decoded pixels, the quality recorded in a text chunk that `dequantize` reads back
                text = PngInfo()
                text.add_text(QUALITY_TEXT_KEY, str(args.quality))
                image = quantize(path, args.quality, args.subsampling)
                with _writing(target):
                    save_image_atomic(image, target, pnginfo=text)
            print(f"{path} -> {target}")
        except DequantizerError as error:
            _error(str(error))
            failures += 1
    _summary(len(plan) - failures - skipped, "written", skipped, failures, args.output)
    return 1 if failures else 0


def _dequantize(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dequantizer.images import open_image
    from dequantizer.restore import choose_quality, get_restorer, restore_image, save_restored

    if args.quality is not None:
        from dequantizer.jpeg import check_quality

        check_quality(args.quality)
    plan = _plan(args.inputs, args.output,
                 lambda rel, keep: rel.with_name(f"{rel.name if keep else rel.stem}.{args.format}"))
    _output_folder(args.output)
    restorer = get_restorer(args.model, args.device, args.precision, args.tile_size, args.ensemble, args.engine)
    failures = skipped = 0
    for path, target in tqdm(plan, unit="image", disable=len(plan) < 2 or args.quiet):
        try:
            _check_target(path, target)
            if target.exists() and not args.overwrite:
                skipped += 1
                continue
            image = open_image(path)
            choice = choose_quality(image, restorer, args.quality)
            with _tile_progress(path, shown=len(plan) == 1 and not args.quiet) as progress:
                restored = restore_image(image, restorer, choice=choice, progress=progress)
            with _writing(target):
                save_restored(restored, target)
            if not args.quiet:
                tqdm.write(f"{path} -> {target}: {choice}")
        except DequantizerError as error:
            _error(str(error))
            failures += 1
    _summary(len(plan) - failures - skipped, "restored", skipped, failures, args.output)
    return 1 if failures else 0


@contextmanager
def _tile_progress(path: Path, shown: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar over one image's tiles (a large photo takes minutes on a CPU), or None where not shown."""
    if not shown:
        yield None
        return
    from tqdm import tqdm

    with tqdm(desc=path.name, unit="tile", leave=False, mininterval=0) as bar:  # each tile: seconds

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield progress


def _models(args: argparse.Namespace) -> int:
    from dequantizer.weights import DEFAULT_MODEL, read_metadata, shipped_models

    models = shipped_models()
    if not models:
        print("no shipped models in this install")
    for name, path in models.items():
        meta = read_metadata(path)
        default = " (default)" if name == DEFAULT_MODEL else ""
        qualities = meta.get("qualities", "?")
        if isinstance(qualities, list):
            qualities = "-".join(map(str, qualities))
        print(f"{name}{default}: {meta.get('description', '')}")
        print(f"  for JPEG quality {qualities}; trained on {meta.get('training_data', '?')}")
        validation = meta.get("validation", {})
        if "val/psnr_jpeg" in validation:
            print(f"  validation: PSNR {validation['val/psnr']:.3f} dB (JPEG input {validation['val/psnr_jpeg']:.3f}),"
                  f" SSIM {validation['val/ssim']:.4f} (JPEG input {validation['val/ssim_jpeg']:.4f})")
        elif validation:
            print(f"  validation: {validation}")
        if "command" in meta:
            print(f"  made by: {meta['command']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dequantizer.evaluate import evaluate, format_table, load_photos, mean_rows, write_reports
    from dequantizer.images import image_paths
    from dequantizer.restore import get_restorer

    for quality in args.quality:
        from dequantizer.jpeg import check_quality

        check_quality(quality)
    if args.output:
        _output_folder(args.output)
    restorer = get_restorer(args.model, args.device, args.precision, args.tile_size, args.ensemble)
    photos, failures, warnings = load_photos(image_paths(args.inputs), args.square)
    for failure in failures:
        _error(failure)
    for warning in warnings.values():
        print(f"warning: {warning}", file=sys.stderr)
    if not photos:
        raise DequantizerError("no readable images to evaluate")
    photo_rows = evaluate(restorer, photos, args.quality, args.output / "grids" if args.output else None,
                          raw=args.raw, progress=not args.quiet)
    model = args.model or "default"
    print(format_table(mean_rows(photo_rows), f"model {model} on {len(photos)} images"
                       + (f" ({args.square}x{args.square})" if args.square else "")
                       + (" (raw: pixels without JPEG tables)" if args.raw else "")))
    jpeg_born = list(warnings)  # the references that are or were JPEGs
    if jpeg_born and len(jpeg_born) < len(photos):
        print(format_table(mean_rows(photo_rows, jpeg_born), f"the same without the {len(jpeg_born)} "
                           f"reference{'s' * (len(jpeg_born) > 1)} warned about above"))
    elif jpeg_born:
        print("every reference is or was a JPEG (see the warnings): no means without them")
    if args.output:
        with _writing(args.output):
            settings = {"model": str(model), "raw": args.raw, "ensemble": args.ensemble}
            written = write_reports(photo_rows, args.output, settings | restorer.metadata, jpeg_born)
        print("wrote " + ", ".join(str(path) for path in written) + f", grids in {args.output / 'grids'}")
    return 1 if failures else 0


def _app(args: argparse.Namespace) -> int:
    from dequantizer.app import launch

    launch(args.host, args.port, args.model, args.device)
    return 0


def _export(args: argparse.Namespace) -> int:
    from dequantizer.weights import export_checkpoint

    if args.onnx:
        from dequantizer.onnx_engine import export_onnx

        given = [flag for flag, value in (("--description", args.description), ("--command", args.command),
                                          ("--max-quality", args.max_quality), ("--training-data", args.training_data),
                                          ("--half", args.half)) if value]
        if given:  # the ONNX file keeps the source's metadata as it is
            raise DequantizerError(f"{', '.join(given)}: for the safetensors export only; export the checkpoint to "
                                   "safetensors with them first, then that file with --onnx")
        path, (worst, quality_worst) = export_onnx(args.source, args.output)
        print(f"wrote {path} (onnxruntime matches torch on photo crops within {worst:.2g} grey levels"
              + (f", and the quality it reads within {quality_worst:.2g})" if quality_worst else ")"))
        return 0
    path = export_checkpoint(args.source, args.output, description=args.description, command=args.command,
                             max_quality=args.max_quality, half=args.half, training_data=args.training_data)
    print(f"wrote {path}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from dequantizer.data import flickr

    client = flickr.FlickrClient(flickr.api_key_from_environment(), calls_per_hour=args.calls_per_hour)
    categories = flickr.imagenet_categories(args.categories)
    stats = flickr.download_dataset(client, categories, args.out, args.per_category, args.license, args.workers,
                                    progress=not args.quiet)
    skipped = ", ".join(f"{count} {why}" for why, count in stats.skipped.items()) or "none"
    print(f"{stats.downloaded} photos downloaded, {stats.already_done} categories already complete, "
          f"skipped: {skipped} -> {args.out} (manifest.jsonl, ATTRIBUTION.txt)")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from dequantizer.data import flickr

    stats = flickr.prepare_dataset(args.source, args.out, args.size, args.val_fraction, args.seed, args.test_fraction)
    print(f"{stats['photos']} photos of {stats['categories']} categories -> {stats['out']} "
          f"({stats['train']} train / {stats['val']} val / {stats['test']} test, split by owner, split.json)")
    print("photos per category: " + ", ".join(f"{n} photos: {c} categories"
                                             for n, c in sorted(stats["photos_per_category"].items())))
    if stats["skipped"]:
        print("skipped: " + ", ".join(f"{count} {why}" for why, count in stats["skipped"].items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from dequantizer import __version__

    parser = argparse.ArgumentParser(prog="dequantizer", description="Restore JPEG-damaged photos.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def model_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("-m", "--model", help="shipped model name (see `dequantizer models`) or weights path")
        command.add_argument("--device", help="cpu, cuda, ... (default: cuda when present)")
        command.add_argument("--precision", choices=["bf16", "fp32"], help="default: bf16 where native")
        command.add_argument("--tile-size", type=int, default=512,
                             help="tile side for large images (default 512, a multiple of 8). Tiles overlap by a "
                                  "margin taken from the model's receptive field (the default model: 88 px), so a "
                                  "tile must be at least twice that")
        command.add_argument("--ensemble", type=int, default=1, choices=[1, 2, 4, 8],
                             help="self-ensemble: restore this many views of each image (2: mirrored, 4: flipped, "
                                  "8: flipped and transposed) and average them; better, and that many times slower")
        command.add_argument("--quiet", action="store_true", help="no progress bar, no line per restored file")

    dequantize = commands.add_parser("dequantize", help="restore JPEG-damaged images (files or folders)")
    dequantize.add_argument("inputs", nargs="+", type=Path, help="JPEG-damaged image files or folders (recursive)")
    dequantize.add_argument("-o", "--output", type=Path, required=True, help="output folder (tree mirrored)")
    dequantize.add_argument("--format", default="png", choices=["png", "tif", "webp"], help="lossless output format")
    dequantize.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    dequantize.add_argument("-q", "--quality", type=int,
                            help="the JPEG quality to restore for, 1-100 (default: read from each file's tables, else "
                                 "from the pixels, else predicted): lower restores harder, higher keeps more detail; "
                                 "a grey image at 100 is kept as it is")
    model_options(dequantize)
    dequantize.add_argument("--engine", default="torch", choices=["torch", "onnx"],
                            help="onnx: run the network with onnxruntime in fp32 (pip install 'dequantizer[onnx]'; a "
                                 "model that is not an .onnx file is exported once into ~/.cache/dequantizer/onnx)")
    dequantize.set_defaults(run=_dequantize)

    quantize = commands.add_parser("quantize", help="JPEG-compress images at a given quality")
    quantize.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    quantize.add_argument("-q", "--quality", type=int, default=10, help="JPEG quality 1-100 (default 10)")
    quantize.add_argument("--subsampling", default="4:2:0", choices=["4:4:4", "4:2:2", "4:2:0"])
    quantize.add_argument("--format", default="jpeg", choices=["jpeg", "png"],
                          help="jpeg: the JPEG file (default); png: its decoded pixels, losslessly, with the quality "
                               "recorded in a text chunk that `dequantize` reads")
    quantize.add_argument("-o", "--output", type=Path, default=Path("."), help="output folder (tree mirrored)")
    quantize.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    quantize.set_defaults(run=_quantize)

    models = commands.add_parser("models", help="list the shipped models and what they were trained for")
    models.set_defaults(run=_models)

    evaluate = commands.add_parser("evaluate", help="JPEG input vs restored PSNR/SSIM on clean images")
    evaluate.add_argument("inputs", nargs="+", type=Path, help="clean (never JPEG-compressed) images or folders")
    evaluate.add_argument("-q", "--quality", type=int, nargs="+", default=[1, 10, 20, 30, 50],
                          help="JPEG qualities to measure (default 1 10 20 30 50)")
    evaluate.add_argument("--square", type=int, help="the paper's protocol: centre square resized to this size")
    evaluate.add_argument("--raw", action="store_true",
                          help="restore the decoded pixels without the JPEG tables, as dequantize does a decoded "
                               "image: no quality gate, the quality read from the pixels' DCT coefficients or "
                               "predicted")
    evaluate.add_argument("-o", "--output", type=Path,
                          help="folder for results.csv (means), photos.csv (each photo), results.json, gain.png, grids")
    model_options(evaluate)
    evaluate.set_defaults(run=_evaluate)

    download = commands.add_parser("download", help="download the paper's Flickr photos (needs FLICKR_API_KEY)")
    download.add_argument("--per-category", type=int, default=10, help="newest photos per class (default 10)")
    download.add_argument("--out", type=Path, default=Path("data/flickr"))
    download.add_argument("--categories", type=Path, help="one search text a line (default: the 1000 ILSVRC classes)")
    download.add_argument("--license", help="Flickr license ids, comma-separated (e.g. 4,5,9,10)")
    download.add_argument("--calls-per-hour", type=float, default=3000, help="API rate limit (Flickr allows 3600)")
    download.add_argument("--workers", type=int, default=4, help="parallel image downloads")
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    download.set_defaults(run=_download)

    prepare = commands.add_parser("prepare", help="square-crop, resize and split the downloaded photos")
    prepare.add_argument("source", type=Path, help="the download folder")
    prepare.add_argument("--size", type=int, default=96)
    prepare.add_argument("--out", type=Path, help="default: SOURCE/prepared (what data=flickr reads)")
    prepare.add_argument("--val-fraction", type=float, default=0.2, help="share of owners for validation")
    prepare.add_argument("--test-fraction", type=float, default=0.1,
                         help="share of owners held out for the table after training (never trained on or selected by)")
    prepare.add_argument("--seed", type=int, default=1234)
    prepare.set_defaults(run=_prepare)

    app = commands.add_parser("app", help="a local web page: drop photos, compare before and after, download the "
                              "restorations (needs: pip install 'dequantizer[app]')")
    app.add_argument("--host", default="127.0.0.1",
                     help="address to serve on (default 127.0.0.1: this computer only; 0.0.0.0: your network too)")
    app.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    app.add_argument("-m", "--model", help="the model selected first: a shipped name or a weights path")
    app.add_argument("--device", help="cpu, cuda, ... (default: cuda when present)")
    app.set_defaults(run=_app)

    export = commands.add_parser("export", help="export a training checkpoint's generator as safetensors, or a "
                                 "model as ONNX (--onnx)")
    export.add_argument("source", metavar="SOURCE",
                        help="a training checkpoint (.ckpt); with --onnx also a shipped model's name or a .safetensors")
    export.add_argument("output", type=Path, metavar="OUTPUT", help="the file to write: .safetensors, or with --onnx "
                        ".onnx")
    export.add_argument("--onnx", action="store_true",
                        help="write an ONNX model (quality an input, any image size; checked against torch with "
                             "onnxruntime before it is written) for `dequantize --engine onnx`; needs "
                             "pip install 'dequantizer[onnx]'")
    export.add_argument("--description", default="")
    export.add_argument("--command", default="", help="the command that trained it, for the record")
    export.add_argument("--max-quality", type=int, help="pass JPEG files above this quality through unchanged")
    export.add_argument("--training-data", help="what it was trained on and the data's terms, for the record")
    export.add_argument("--half", action="store_true", help="store the weights as fp16 (half the file)")
    export.set_defaults(run=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            # Pillow warns about odd metadata (corrupt EXIF, TIFF tags) and very large images; a file it cannot read
            # is an error line of its own, so these would only be noise around it.
            warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
            return args.run(args)
    except DequantizerError as error:
        _error(str(error))
        return 2
    except BrokenPipeError:  # `dequantizer models | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's advice: no second error at exit
        return 0
    except OSError as error:  # the file system said no somewhere unforeseen: still one line
        _error(f"{error.filename or ''}: {error.strerror or error}".lstrip(": "))
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`dequantizer app`: a local web page that restores photos dropped on it (Gradio, the optional extra ``[app]``).

The page shows the quality each photo will be restored for and where it was read (tables, pixels), takes a strength
control (the quality to restore for) and the self-ensemble, shows each result against its JPEG with a slider and side
by side at 100%, and hands out the restorations as lossless PNG. The work is done by the same calls as the command
line's (``choose_quality``, ``restore_image``, ``save_restored``), so a download equals ``dequantize()`` of the file.
"""

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dequantizer.errors import DequantizerError
from dequantizer.images import open_image
from dequantizer.restore import (
    SELF_ENSEMBLE_SIZES,
    QualityChoice,
    choose_quality,
    decoded_view,
    get_restorer,
    restore_image,
    save_restored,
)
from dequantizer.weights import DEFAULT_MODEL, shipped_models

ZOOM_SIDE = 384  # the side of the 100% views, in image pixels
KEEP_RUNS_SECONDS = 3600  # restorations older than this are deleted when the next one starts
ENSEMBLE_CHOICES = [("1 view", 1), ("2: mirrored", 2), ("4: flipped", 4), ("8: flipped and transposed", 8)]
assert [size for _, size in ENSEMBLE_CHOICES] == list(SELF_ENSEMBLE_SIZES)


@dataclass(frozen=True)
class Restored:
    """One photo the page restored: its name, the JPEG and the restoration as PNG files, what was done."""

    name: str
    before: Path  # the decoded input, EXIF orientation applied: what the restoration is compared with
    after: Path  # the restoration, lossless PNG: the download
    done: str  # e.g. "restored as q30 (from the tables)"


@dataclass(frozen=True)
class Failed:
    name: str
    error: str  # the command line's one-line message


def detect(paths: Sequence[str | Path], model: str | None = None, device: str | None = None) -> list[list[str]]:
    """One row per file: its name, the quality it would be restored for, where that comes from, a note; or its
    error."""
    restorer = get_restorer(model, device)
    rows = []
    for path in paths:
        name = Path(path).name
        try:
            choice = choose_quality(open_image(path), restorer)
        except DequantizerError as error:
            rows.append([name, "", "", f"error: {_named(error, path)}"])
            continue
        rows.append([name, *_described(choice)])
    return rows


def _described(choice: QualityChoice) -> list[str]:
    """[quality, read from, note] for the table of what each photo will be restored for."""
    quality = "" if choice.quality is None else f"q{choice.quality}"
    origin = "" if choice.quality is None else choice.origin
    if choice.kept:
        return [quality, origin, f"kept as it is: {choice.kept}"]
    if not choice.told:
        return [quality, origin, "this model restores without being told a quality"]
    if choice.quality is None:
        return ["each tile's own", "the model reads it", ""]
    return [quality, origin, ""]


def is_quality_aware(model: str | None = None, device: str | None = None) -> bool:
    """Whether a model is told the quality, so that the strength control changes what it does."""
    return hasattr(get_restorer(model, device).generator, "quality_head")


def restore_files(paths: Sequence[str | Path], folder: Path, model: str | None = None, device: str | None = None,
                  quality: int | None = None, ensemble: int = 1,
                  progress: Callable[[float, str], None] | None = None) -> list[Restored | Failed]:
    """Restore each file into ``folder`` (``<index>/<stem>.png``, so equal names never overwrite each other), for
    ``quality`` if given, else for the quality each file names or shows. ``progress(fraction, text)`` follows the
    tiles."""
    restorer = get_restorer(model, device, ensemble=ensemble)
    report = progress or (lambda fraction, text: None)
    results: list[Restored | Failed] = []
    for index, path in enumerate(paths):
        name = Path(path).name

        def tiles(done: int, total: int, index: int = index, name: str = name) -> None:
            report((index + done / total) / len(paths), f"{name} ({index + 1} of {len(paths)}): tile {done} of {total}")

        # <index>/<stem>.png, the download, and <index>/input/<stem>.png, the view of the JPEG: never the same file.
        after = folder / str(index) / f"{Path(name).stem}.png"
        before = after.parent / "input" / after.name
        try:
            image = open_image(path)
            choice = choose_quality(image, restorer, quality)
            restored = restore_image(image, restorer, choice=choice, progress=tiles)
            save_restored(restored, after)
            save_restored(decoded_view(image), before)
        except DequantizerError as error:
            results.append(Failed(name, _named(error, path)))
            continue
        except OSError as error:  # a full disk: this photo fails, the others go on
            results.append(Failed(name, f"cannot write its restoration: {error.strerror or error}"))
            continue
        results.append(Restored(name, before, after, str(choice)))
    report(1.0, "done")
    return results


def _named(error: DequantizerError, path: str | Path) -> str:
    """The command line's message, naming the file as the user knows it rather than by its upload folder."""
    return str(error).replace(f"{path}: ", "").replace(str(path), Path(path).name)


def prune(folder: Path, age: float = KEEP_RUNS_SECONDS) -> None:
    """Delete the runs under ``folder`` older than ``age`` seconds: a page left open does not fill the disk."""
    for run in folder.iterdir():
        if run.is_dir() and time.time() - run.stat().st_mtime > age:
            shutil.rmtree(run, ignore_errors=True)


def zoom(result: Restored, centre: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The JPEG and its restoration at 100%: the same square of ``ZOOM_SIDE`` pixels around ``centre`` (x, y; default
    the middle of the photo), kept inside the photo; and the square's top-left corner (x, y)."""
    before, after = np.asarray(Image.open(result.before)), np.asarray(Image.open(result.after))
    height, width = after.shape[:2]
    x, y = centre or (width // 2, height // 2)
    left = min(max(x - ZOOM_SIDE // 2, 0), max(width - ZOOM_SIDE, 0))
    top = min(max(y - ZOOM_SIDE // 2, 0), max(height - ZOOM_SIDE, 0))
    window = np.s_[top : top + ZOOM_SIDE, left : left + ZOOM_SIDE]
    return before[window], after[window], (left, top)


def build(model: str | None = None, device: str | None = None, folder: Path | None = None):
    """The page, as a ``gradio.Blocks``; restorations are written under ``folder`` (default: a temporary one)."""
    import gradio as gr

    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="dequantizer-app-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    models = list(shipped_models())
    if model is not None and model not in models:
        models.append(model)  # a weights file given on the command line
    chosen = model or DEFAULT_MODEL
    get_restorer(chosen, device)  # a model that cannot be loaded is refused before the page starts

    def on_upload(paths, model_name):
        if not paths:
            return [], gr.Slider()
        rows = detect(paths, model_name, device)
        qualities = [int(row[1][1:]) for row in rows if row[1].startswith("q")]
        return rows, gr.Slider(value=qualities[0]) if qualities else gr.Slider()  # the knob starts where it reads

    def knobs(model_name, detected):
        # A model that is not told the quality (the paper's: one quality each) has no strength to set.
        aware = is_quality_aware(model_name, device)
        info = "" if aware else "this model restores one quality: it has no strength control"
        return gr.Checkbox(interactive=aware), gr.Slider(interactive=aware and not detected, info=info)

    def on_restore(paths, model_name, detected, quality, ensemble, progress=gr.Progress()):  # noqa: B008 (Gradio's way)
        if not paths:
            raise gr.Error("Drop one or more photos first.")
        prune(folder)
        run = Path(tempfile.mkdtemp(dir=folder))
        results = restore_files(paths, run, model_name, device, None if detected else int(quality), int(ensemble),
                                lambda fraction, text: progress(fraction, desc=text))
        for result in results:
            if isinstance(result, Failed):
                gr.Warning(f"{result.name}: {result.error}")
        rows = [[r.name, r.done if isinstance(r, Restored) else f"error: {r.error}"] for r in results]
        done = [result for result in results if isinstance(result, Restored)]
        compare = gr.Dropdown(choices=[(result.name, index) for index, result in enumerate(done)],
                              value=0 if done else None)
        return done, rows, [str(result.after) for result in done], compare, *show(done, 0)

    def show(done, index, centre=None):
        if not done or index is None:
            return None, None, None, None
        result = done[int(index)]
        before, after, corner = zoom(result, centre)
        return (str(result.before), str(result.after)), before, after, corner

    def on_zoom_click(done, index, corner, event: gr.SelectData):
        # A click on either 100% view centres both views on that point.
        x, y = event.index
        return show(done, index, (corner[0] + x, corner[1] + y))[1:] if corner else (None, None, None)

    with gr.Blocks(title="dequantizer", delete_cache=(3600, 3600)) as page:
        done_state = gr.State([])
        corner = gr.State(None)  # the top-left corner of the 100% views in the photo
        gr.Markdown("# dequantizer\nRestore JPEG-damaged photos. Everything runs on this computer.")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Photos", file_count="multiple", type="filepath", elem_id="photos")
                model_box = gr.Dropdown(models, value=chosen, label="Model", elem_id="model")
                detected = gr.Checkbox(True, label="Restore for the quality each photo names or shows",
                                       elem_id="detected")
                quality = gr.Slider(1, 100, value=75, step=1, interactive=False, elem_id="quality",
                                    label="Strength: the JPEG quality to restore for (lower restores harder)")
                ensemble = gr.Radio(ENSEMBLE_CHOICES, value=1, label="Self-ensemble (better, that many times slower)",
                                    elem_id="ensemble")
                button = gr.Button("Restore", variant="primary", elem_id="restore")
            with gr.Column(scale=1):
                found = gr.Dataframe(headers=["photo", "quality", "read from", "note"], interactive=False,
                                     label="What each photo will be restored for", elem_id="detected-table")
                report = gr.Dataframe(headers=["photo", "what was done"], interactive=False,
                                      label="Results", elem_id="results-table")
                downloads = gr.File(label="Restored photos (lossless PNG)", file_count="multiple",
                                    interactive=False, elem_id="downloads")
        compare = gr.Dropdown(label="Compare", choices=[], elem_id="compare")
        slider = gr.ImageSlider(label="JPEG | restored", type="filepath", format="png", interactive=False,
                                max_height=720, elem_id="slider")
        gr.Markdown("At 100%: click either view to centre both on that point.")
        with gr.Row():
            before_zoom = gr.Image(label="JPEG at 100%", format="png", interactive=False, elem_id="before-zoom",
                                   height=ZOOM_SIDE + 16)
            after_zoom = gr.Image(label="Restored at 100%", format="png", interactive=False, elem_id="after-zoom",
                                  height=ZOOM_SIDE + 16)

        # One model, one CPU: reading qualities and restoring take turns (one queue for both).
        files.change(on_upload, [files, model_box], [found, quality], concurrency_id="model")
        model_box.change(on_upload, [files, model_box], [found, quality], concurrency_id="model")
        model_box.change(knobs, [model_box, detected], [detected, quality])
        detected.change(knobs, [model_box, detected], [detected, quality])
        button.click(on_restore, [files, model_box, detected, quality, ensemble],
                     [done_state, report, downloads, compare, slider, before_zoom, after_zoom, corner],
                     concurrency_id="model")
        compare.input(show, [done_state, compare], [slider, before_zoom, after_zoom, corner])
        for view in (before_zoom, after_zoom):
            view.select(on_zoom_click, [done_state, compare, corner], [before_zoom, after_zoom, corner])
    return page


# The 100% views show their pixels one to one: the image at its own size, never scaled to fit (so a click's
# position, which Gradio maps as for a fitted image, is the pixel's).
CSS = ("#before-zoom img, #after-zoom img { width: auto !important; height: auto !important; max-width: none; "
       "max-height: none; object-fit: none; image-rendering: pixelated; }")


def start(host: str = "127.0.0.1", port: int = 7860, model: str | None = None, device: str | None = None):
    """Serve the page in the background on ``host:port`` (on this computer only by default); the running
    ``gradio.Blocks`` (``.local_url``; ``.close()`` stops it)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise DequantizerError("the app needs Gradio: pip install 'dequantizer[app]'") from None
    page = build(model, device)
    try:
        page.queue(default_concurrency_limit=1).launch(server_name=host, server_port=port, theme=_theme(), css=CSS,
                                                       footer_links=[], quiet=True, prevent_thread_lock=True)
    except OSError as error:  # Gradio's "Cannot find empty port", or a host that is not this machine's
        raise DequantizerError(f"cannot serve on {host}:{port} ({error}): check --host, or choose another --port"
                               ) from None
    return page


def launch(host: str = "127.0.0.1", port: int = 7860, model: str | None = None, device: str | None = None) -> None:
    """Serve the page until interrupted."""
    page = start(host, port, model, device)
    where = "this computer only" if host in ("127.0.0.1", "localhost") else f"every machine that reaches {host}"
    print(f"dequantizer app on {page.local_url} (open it in a browser; served to {where}; Ctrl+C stops it)")
    page.block_thread()


def _theme():
    import gradio as gr

    # System fonts: the default theme fetches Google's, and the page must work (and stay private) offline.
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])

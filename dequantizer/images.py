"""Image files: reading any image Pillow can decode (every failure one clear line), its pixels as 8-bit RGB, and
writing images atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from dequantizer.errors import DequantizerError
from dequantizer.files import atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GREYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L")  # restored and quantized as greyscale


def split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """8-bit RGB (16-bit scaled down, palette/CMYK/grey converted) and the alpha channel, if any."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8))
    alpha = None
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        alpha = image.getchannel("A")
    return image.convert("RGB"), alpha


def read_image(source: str | Path | IO[bytes], name: str | None = None) -> Image.Image:
    """The image in a file (a path, or bytes in a file object named ``name``), decoded: pixels loaded and EXIF parsed,
    so that reading the file cannot fail later. Pillow raises many exception types for damaged, truncated or
    hostile files (``OSError``, ``SyntaxError``, ``ValueError``, ``EOFError``, ``struct.error``,
    ``DecompressionBombError``...): every failure becomes one ``DequantizerError`` naming the file and what is wrong,
    so that a batch reports that file in one line and goes on. The cause stays attached (``__cause__``)."""
    label = name or str(source)
    try:
        with Image.open(source) as image:
            image.load()
            image.getexif()
            return image
    except FileNotFoundError:
        raise DequantizerError(f"{label}: no such file") from None
    except MemoryError:  # the machine's problem, not the file's
        raise
    except Exception as error:  # whatever the decoder raised: the file is unreadable, the program is fine
        detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error) or type(error).__name__
        raise DequantizerError(f"{label}: cannot read it as an image ({detail})") from error


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode a photo as an HxWx3 uint8 array (``rgb_pixels``); an unreadable file is a ``DequantizerError``."""
    return rgb_pixels(read_image(path))


def rgb_pixels(image: Image.Image) -> np.ndarray:
    """A photo as an HxWx3 uint8 array: EXIF orientation applied, alpha composited on white, 16-bit scaled."""
    rgb, alpha = split_alpha(ImageOps.exif_transpose(image))
    if alpha is not None:
        white = Image.new("RGB", rgb.size, (255, 255, 255))
        rgb = Image.composite(rgb, white, alpha)
    return np.asarray(rgb)


def save_image_atomic(image: Image.Image, path: str | Path, **save_args) -> Path:
    """Encode ``image`` in the format its suffix names and write it atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format=Image.registered_extensions()[Path(path).suffix.lower()], **save_args)
    return atomic_write(path, buffer.getvalue())


def square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """The paper's protocol: the centre square of the photo, resized (Lanczos) to size x size."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(rgb[top : top + side, left : left + side])
    return np.asarray(square.resize((size, size), Image.LANCZOS, reducing_gap=3.0))


def image_paths(inputs: list[Path]) -> list[Path]:
    """The files given, and the image files under the folders given (recursively, sorted)."""
    paths = []
    for item in inputs:
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        else:
            paths.append(item)
    return paths


def open_image(source: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """A PIL image from a path, a PIL image, or a uint8 array (HxW grey, HxWx3 RGB, HxWx4 RGBA)."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        channels = 1 if source.ndim == 2 else source.shape[-1] if source.ndim == 3 else 0
        if source.dtype != np.uint8 or channels not in (1, 3, 4) or 0 in source.shape:
            raise DequantizerError(f"an array of shape {source.shape} and dtype {source.dtype}: pass HxW, HxWx3 or "
                                   "HxWx4 uint8 pixels")
        return Image.fromarray(source[..., 0] if source.ndim == 3 and channels == 1 else source)
    return read_image(source)

"""Reading photos and making JPEG round trips with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from dequantizer.errors import DequantizerError
from dequantizer.files import atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SUBSAMPLINGS = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
GREYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L")  # restored and quantized as greyscale


def check_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise DequantizerError(f"JPEG quality {quality!r} is out of range: use an integer from 1 to 100")
    return quality


def jpeg_bytes(image: Image.Image, quality: int, subsampling: str = "4:2:0") -> bytes:
    """``image`` (RGB or L) as a JPEG file at ``quality``, in memory."""
    if subsampling not in SUBSAMPLINGS:
        raise DequantizerError(f"JPEG subsampling {subsampling!r} is not one of {', '.join(SUBSAMPLINGS)}")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=check_quality(quality), subsampling=SUBSAMPLINGS[subsampling])
    return buffer.getvalue()


def jpeg_roundtrip(image: Image.Image, quality: int, subsampling: str = "4:2:0") -> Image.Image:
    """Compress ``image`` (RGB or L) as JPEG at ``quality`` in memory and decode it again."""
    with Image.open(io.BytesIO(jpeg_bytes(image, quality, subsampling))) as decoded:
        decoded.load()
    # Kept as the decoded JPEG when possible: its quantization tables tell `dequantize` the quality.
    return decoded if decoded.mode == image.mode else decoded.convert(image.mode)


# The IJG (libjpeg) luminance table that quality scales, in natural order (what Pillow's `quantization` holds).
IJG_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
])  # fmt: skip


def ijg_luminance_table(quality: int) -> np.ndarray:
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip((IJG_LUMINANCE * scale + 50) // 100, 1, 255)


# The PNG text chunk in which `dequantizer quantize --format png` records the JPEG quality the pixels went through.
QUALITY_TEXT_KEY = "jpeg_quality"


def estimate_jpeg_quality(image: Image.Image) -> int | None:
    """The IJG quality whose luminance table is nearest to this JPEG's; for a PNG, the quality recorded in its
    ``jpeg_quality`` text chunk; else None."""
    recorded = str(image.info.get(QUALITY_TEXT_KEY, ""))
    if recorded.isdigit() and 1 <= int(recorded) <= 100:
        return int(recorded)
    tables = getattr(image, "quantization", None)
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    table = np.asarray(tables[0])
    return int(min(range(1, 101), key=lambda q: np.abs(ijg_luminance_table(q) - table).sum()))


def jpeg_roundtrip_array(rgb: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """``jpeg_roundtrip`` for an HxWx3 uint8 array."""
    return np.asarray(jpeg_roundtrip(Image.fromarray(rgb), quality, subsampling))


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (PIL's "L") of an HxWx3 uint8 array, as float64."""
    return np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64)


def resave_psnr(rgb: np.ndarray, qualities: range) -> dict[int, float]:
    """Luma PSNR (dB) between ``rgb`` and ``rgb`` re-saved as a JPEG at each quality. A decoded JPEG re-saved at its
    own quality, on its own block grid, barely changes: far less than at a few qualities either side (the "JPEG
    ghost"), while a never-compressed photo's PSNR only rises with the quality."""
    reference = luma(rgb)
    psnr = {}
    for quality in qualities:
        error = luma(jpeg_roundtrip_array(rgb, quality)) - reference
        psnr[quality] = float(10 * np.log10(255**2 / max(np.mean(error**2), 1e-10)))
    return psnr


def ghost_strength(psnr: dict[int, float], quality: int) -> float:
    """How much less (dB) a re-save at ``quality`` changes the image than one 3 qualities either side does."""
    return psnr[quality] - max(psnr[quality - 3], psnr[quality + 3])


# Where a decoded JPEG's quality is read from its pixels. Ghosts are looked for from 50 (a q75 JPEG also leaves a
# weaker one at 87, so the strongest one counts) but trusted from 80 only: below, neighbouring qualities' tables share
# so many values that spurious ghosts appear. Above 96 every photo barely changes when re-saved at 99-100.
GHOST_SEARCH, GHOST_TRUSTED = (50, 96), 80


def jpeg_quality_from_pixels(rgb: np.ndarray) -> int | None:
    """The IJG quality (80-96) at which these decoded pixels were last saved as a JPEG, read from the pixels alone:
    the quality whose re-save changes the luma most clearly less (by over 3 dB) than 3 qualities either side do, on
    the block grid at the origin, in the more textured of two 256-pixel crops (top left, centre). None when no such
    quality stands out in 80-96: a lower or higher quality, another encoder's tables, a never-compressed or a flat
    image."""
    height, width = rgb.shape[0] // 16 * 16, rgb.shape[1] // 16 * 16
    side = min(256, height, width)
    if side < 16:
        return None
    top, left = (height - side) // 2 // 8 * 8, (width - side) // 2 // 8 * 8  # the centre crop, on the block grid
    crops = [rgb[:side, :side], rgb[top : top + side, left : left + side]]
    crop = max(crops, key=lambda pixels: float(luma(pixels).std()))
    low, high = GHOST_SEARCH
    psnr = resave_psnr(np.ascontiguousarray(crop), range(low - 3, high + 4))
    best = max(range(low, high + 1), key=lambda quality: ghost_strength(psnr, quality))
    return best if best >= GHOST_TRUSTED and ghost_strength(psnr, best) > 3 else None


def split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """8-bit RGB (16-bit scaled down, palette/CMYK/grey converted) and the alpha channel, if any."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8))
    alpha = None
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        alpha = image.getchannel("A")
    return image.convert("RGB"), alpha


def jpeg_input(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """What a JPEG encoder gets from ``image``: its EXIF orientation applied, L for greyscale modes, else RGB; and
    the alpha channel, which JPEG cannot hold."""
    image = ImageOps.exif_transpose(image)
    rgb, alpha = split_alpha(image)
    return (rgb.convert("L") if image.mode in GREYSCALE_MODES else rgb), alpha


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode a photo as an HxWx3 uint8 array: EXIF orientation applied, alpha composited on white, 16-bit scaled."""
    with Image.open(path) as image:
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

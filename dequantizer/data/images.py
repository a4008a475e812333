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


def block_grid_origin(rgb: np.ndarray) -> tuple[int, int]:
    """(row, column) at which the image's strongest 8x8 block grid starts: past a JPEG's block edges, neighbouring
    rows (columns) differ more than inside its blocks. (0, 0) for a JPEG on its own grid; a crop of a JPEG that did
    not start on a block edge has its grid elsewhere. On a clean photo the answer is noise."""
    pixels = luma(rgb)
    rows, columns = np.abs(np.diff(pixels, axis=0)).mean(axis=1), np.abs(np.diff(pixels, axis=1)).mean(axis=0)
    # Difference k is between pixels k and k+1: a peak at offset k puts a block edge before pixel k + 1.
    edge = lambda profile: (int(np.argmax([profile[k::8].mean() for k in range(min(8, len(profile)))])) + 1) % 8  # noqa: E731
    return edge(rows), edge(columns)


BT601 = np.array([0.299, 0.587, 0.114])  # JPEG's luma weights
# The orthonormal 8-point DCT-II, which is JPEG's: the 2-D transform of a block B is DCT @ B @ DCT.T.
DCT = np.array([[np.sqrt((1 if k else 0.5) / 4) * np.cos((2 * n + 1) * k * np.pi / 16) for n in range(8)]
                for k in range(8)])  # fmt: skip
# IJG luminance steps for qualities 1-99 (q100's steps are all 1: every decoded image sits on that lattice). The DC
# step is left out (set to 1): flat or clipped blocks put their DC on any lattice.
LATTICE_QUALITIES = range(1, 100)
LATTICE_STEPS = np.stack([ijg_luminance_table(quality) for quality in LATTICE_QUALITIES]).astype(np.float32)
LATTICE_STEPS[:, 0] = 1
# A decoded IJG JPEG's coefficients sit on its steps with a fit of 0.53-1.0 (lowest at q98-99, whose steps of 2 are
# blurred by the decoder's rounding); never-compressed photos fit no quality above 0.0, tables of other encoders
# that are close to IJG's up to 0.5 (and then at a quality at or above theirs).
LATTICE_FIT = 0.5


def lattice_fit(luma_plane: np.ndarray) -> np.ndarray:
    """For each IJG quality 1-99, how closely the luma's 8x8 DCT coefficients (blocks from the plane's origin) sit on
    multiples of that quality's quantization steps: per AC frequency whose step is above 1, the mean of
    cos(2 pi coefficient / step) over the coefficients that do not round to 0, and then the lower quartile over the
    frequencies with at least 20 such coefficients (so that every frequency must fit, not just most). NaN where fewer
    than 4 frequencies say anything."""
    height, width = luma_plane.shape[0] // 8 * 8, luma_plane.shape[1] // 8 * 8
    blocks = (luma_plane[:height, :width] - 128).reshape(height // 8, 8, width // 8, 8).transpose(0, 2, 1, 3)
    coefficients = np.einsum("kn,bcnm,lm->bckl", DCT, blocks, DCT).reshape(-1, 1, 64).astype(np.float32)
    in_steps = coefficients / LATTICE_STEPS  # blocks x qualities x frequencies
    counted = (np.abs(in_steps) >= 0.5) & (LATTICE_STEPS > 1)
    counts = counted.sum(axis=0)
    fits = np.where(counted, np.cos(2 * np.pi * in_steps), 0).sum(axis=0) / np.maximum(counts, 1)
    fits[counts < 20] = np.nan
    result = np.full(len(LATTICE_QUALITIES), np.nan)
    enough = (counts >= 20).sum(axis=1) >= 4
    result[enough] = np.nanpercentile(fits[enough], 25, axis=1)
    return result


def jpeg_history(rgb: np.ndarray) -> tuple[int, float, tuple[int, int]] | None:
    """(quality, fit, grid origin) of the IJG JPEG (quality 5-99) that these pixels were last decoded from, read
    from the pixels alone: the quality whose quantization steps the luma's DCT coefficients sit on
    (``lattice_fit`` above ``LATTICE_FIT``), in the more textured of two 256-pixel crops (top left, centre). The
    grid is looked for at the image's origin and where its block edges are strongest (a JPEG cropped off its grid).
    None for a never-compressed photo, a JPEG of quality 100 or below 5 (too few coefficients survive), another
    encoder's tables, or a tiny or flat image."""
    for top, left in dict.fromkeys([(0, 0), block_grid_origin(rgb)] if min(rgb.shape[:2]) > 16 else [(0, 0)]):
        plane = rgb[top:, left:].astype(np.float64) @ BT601  # unrounded: PIL's "L" would add rounding noise
        height, width = plane.shape[0] // 8 * 8, plane.shape[1] // 8 * 8
        side = min(256, height, width)
        if side < 16:
            continue
        centre = (height - side) // 2 // 8 * 8, (width - side) // 2 // 8 * 8  # on the block grid
        crops = [plane[:side, :side], plane[centre[0] : centre[0] + side, centre[1] : centre[1] + side]]
        fits = lattice_fit(max(crops, key=lambda crop: float(crop.std())))
        if np.isnan(fits).all():
            continue
        best = float(np.nanmax(fits))
        if best > LATTICE_FIT:
            # Several qualities can fit alike: a coarser table whose steps are multiples of a finer one's (q10 fits
            # q20's steps too), so the coarsest is taken; and next to it neighbours whose steps agree on every
            # frequency the image fills, of which the middle one is taken.
            tied = np.flatnonzero(fits >= best - 0.01)
            run = tied[: next((i for i in range(1, len(tied)) if tied[i] != tied[i - 1] + 1), len(tied))]
            return LATTICE_QUALITIES[run[len(run) // 2]], best, (top, left)
    return None


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

"""What we know about JPEG: qualities and IJG's quantization tables, round trips through Pillow's encoder, the
quality a file's tables name, and the traces JPEG leaves in decoded pixels (the quantization lattice of their DCT
coefficients: the quality of the last JPEG, of an earlier harsher one, the block grid of a cropped one)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from dequantizer.errors import DequantizerError
from dequantizer.images import GREYSCALE_MODES, split_alpha

SUBSAMPLINGS = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


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


def ijg_luminance_table(quality: int, base: np.ndarray = IJG_LUMINANCE) -> np.ndarray:
    """libjpeg's table for ``quality``: ``base`` (its luminance table) scaled as ``jpeg_quality_scaling`` does."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


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
    return nearest_ijg_quality(np.asarray(tables[0], dtype=np.float64))


def nearest_ijg_quality(table: np.ndarray) -> int:
    """The IJG quality whose luminance table is nearest (L1) to ``table``'s known (not NaN) steps; of equals, the
    lowest."""
    known = ~np.isnan(table)
    distance = lambda quality: np.abs(ijg_luminance_table(quality)[known] - table[known]).sum()  # noqa: E731
    return int(min(range(1, 101), key=distance))


def jpeg_roundtrip_array(rgb: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """``jpeg_roundtrip`` for an HxWx3 uint8 array."""
    return np.asarray(jpeg_roundtrip(Image.fromarray(rgb), quality, subsampling))


BT601 = np.array([0.299, 0.587, 0.114])  # JPEG's luma weights


def luma(pixels: np.ndarray) -> np.ndarray:
    """JPEG's (BT.601) luma of HxWx3 uint8 pixels (a fourth, alpha channel ignored), unrounded (PIL's "L" would add
    rounding noise), as float64; an HxW grey array as it is."""
    return pixels.astype(np.float64) if pixels.ndim == 2 else pixels[..., :3].astype(np.float64) @ BT601


def block_grid_origins(pixels: np.ndarray, count: int = 1) -> list[tuple[int, int]]:
    """(row, column) at which the image's strongest 8x8 block grids start, strongest first (the ``count`` strongest
    row phases crossed with the ``count`` strongest column phases): past a JPEG's block edges, neighbouring rows
    (columns) differ more than inside its blocks. (0, 0) first for a JPEG on its own grid; a crop of a JPEG that did
    not start on a block edge has its grid elsewhere. On a clean photo the answer is noise."""
    plane = luma(pixels)
    rows, columns = np.abs(np.diff(plane, axis=0)).mean(axis=1), np.abs(np.diff(plane, axis=1)).mean(axis=0)

    def edges(profile: np.ndarray) -> list[int]:
        # Difference k is between pixels k and k+1: a peak at offset k puts a block edge before pixel k + 1.
        strength = np.array([profile[k::8].mean() for k in range(min(8, len(profile)))])
        return [(int(k) + 1) % 8 for k in np.argsort(-strength, kind="stable")[:count]]  # of equals, the first

    return [(row, column) for row in edges(rows) for column in edges(columns)]


def candidate_origins(pixels: np.ndarray, count: int = 1) -> list[tuple[int, int]]:
    """The image's own grid, (0, 0), then ``block_grid_origins``' strongest (``count`` phases a side), looked for in
    a central window of up to 1024 px on the image's grid; each once."""
    height, width = pixels.shape[:2]
    origins = [(0, 0)]
    if min(height, width) > 16:
        top, left = max(0, (height - 1024) // 2 // 8 * 8), max(0, (width - 1024) // 2 // 8 * 8)
        origins += block_grid_origins(pixels[top : top + 1024, left : left + 1024], count)
    return list(dict.fromkeys(origins))


# The orthonormal 8-point DCT-II, which is JPEG's: the 2-D transform of a block B is DCT @ B @ DCT.T.
DCT = np.array([[np.sqrt((1 if k else 0.5) / 4) * np.cos((2 * n + 1) * k * np.pi / 16) for n in range(8)]
                for k in range(8)])  # fmt: skip
# IJG luminance steps for qualities 1-99 (q100's steps are all 1: every decoded image sits on that lattice). The DC
# step is left out (set to 1): flat or clipped blocks put their DC on any lattice.
LATTICE_QUALITIES = range(1, 100)
LATTICE_STEPS = np.stack([ijg_luminance_table(quality) for quality in LATTICE_QUALITIES]).astype(np.float32)
LATTICE_STEPS[:, 0] = 1
# A decoded IJG JPEG's coefficients sit on its steps (least at q98-99, whose steps of 2 the decoder's rounding blurs,
# and on dark or noisy photos) and never-compressed photos on none: the threshold lies between the two (measured in
# experiments/README.md, reading the quality from the pixels). Another encoder's tables can make a finer IJG table,
# whose steps divide theirs, fit about as well: see jpeg_history.
LATTICE_FIT = 0.5
# An IJG fit below this stands only where the steps read one frequency at a time are its own.
STRONG_LATTICE_FIT = 0.7


def dct_coefficients(plane: np.ndarray) -> np.ndarray:
    """The 8x8 DCT coefficients of a luma plane's blocks (from its origin, JPEG's level shift), blocks x 64."""
    height, width = plane.shape[0] // 8 * 8, plane.shape[1] // 8 * 8
    blocks = (plane[:height, :width] - 128).reshape(height // 8, 8, width // 8, 8).transpose(0, 2, 1, 3)
    return np.einsum("kn,bcnm,lm->bckl", DCT, blocks, DCT).reshape(-1, 64).astype(np.float32)


def frequency_fits(coefficients: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``steps`` (rows x 64) and each frequency whose step is above 1: how closely the coefficients
    sit on multiples of the step, the mean of cos(2 pi coefficient / step) over those that do not round to 0, and
    how many those are. Meant for crops of up to 256x256 (it holds blocks x rows x 64 floats)."""
    phases = coefficients[:, None, :] / steps  # in steps
    counted = (np.abs(phases) >= 0.5) & (steps > 1)
    counts = counted.sum(axis=0)
    np.cos(np.multiply(phases, 2 * np.pi, out=phases), out=phases)  # in place: the array is the large one
    phases[~counted] = 0
    return phases.sum(axis=0) / np.maximum(counts, 1), counts


def lattice_fit(coefficients: np.ndarray) -> np.ndarray:
    """For each IJG quality 1-99, how closely the DCT coefficients sit on that quality's quantization steps: the lower
    quartile, over the frequencies with at least 20 counted coefficients, of ``frequency_fits`` (so that every
    frequency must fit, not just most). NaN where fewer than 4 frequencies say anything."""
    fits, counts = frequency_fits(coefficients, LATTICE_STEPS)
    fits[counts < 20] = np.nan
    result = np.full(len(LATTICE_QUALITIES), np.nan)
    enough = (counts >= 20).sum(axis=1) >= 4
    result[enough] = np.nanpercentile(fits[enough], 25, axis=1)
    return result


# Any encoder's steps, read one frequency at a time (cameras, phones and editors have tables of their own): the step
# of 2-64 that the coefficients fit best, where that fit is at least 0.6 over at least 50 coefficients (on a
# never-compressed photo such a fit is 6 standard deviations of chance). Steps above 64, of tables coarser than
# about IJG's q75, would read as a divisor, so such readings are left to the head (``STEPS_READ_FROM``).
STEP_CANDIDATES = np.arange(2, 65, dtype=np.float32)
STEP_ROWS = np.repeat(STEP_CANDIDATES[:, None], 64, axis=1)
STEP_ROWS[:, 0] = 1  # the DC left out, as above
STEPS_READ_FROM = 75


def quantization_steps(coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frequency, the quantization step (2-64) that the DCT coefficients sit on and its fit; NaN where none fits
    clearly (a step of 1, a frequency too empty to tell, or no quantization)."""
    fits, counts = frequency_fits(coefficients, STEP_ROWS)
    fits[(fits < 0.6) | (counts < 50)] = -np.inf
    best = fits.argmax(axis=0)
    fit = fits[best, np.arange(64)]
    clear = np.isfinite(fit)
    return np.where(clear, STEP_CANDIDATES[best], np.nan), np.where(clear, fit, np.nan)


def tables_agree(table: np.ndarray, steps: np.ndarray) -> bool:
    """Whether a table's steps are, within 10% on the median, the steps read (NaN: unknown), where they can be read
    (up to 64)."""
    known = ~np.isnan(steps) & (table <= STEP_CANDIDATES[-1])
    return not known.any() or bool(np.median(np.abs(table[known] - steps[known]) / steps[known]) <= 0.1)


def best_fitting_quality(fits: np.ndarray) -> tuple[int | None, float]:
    """The quality (``LATTICE_QUALITIES`` from 1) whose lattice ``fits`` best, and the fit (-1 where none is known).
    Qualities within 0.01 of the best (the fit's own noise) fit alike: a coarser table whose steps are multiples of a
    finer one's (q10 fits q20's steps too), so the coarsest is taken; and neighbours of it whose steps agree on every
    frequency the image fills, of which the middle one (of two, the higher: the gentler restoration) is taken."""
    if np.isnan(fits).all():
        return None, -1.0
    best = float(np.nanmax(fits))
    tied = np.flatnonzero(fits >= best - 0.01)
    run = tied[: next((i for i in range(1, len(tied)) if tied[i] != tied[i - 1] + 1), len(tied))]
    return LATTICE_QUALITIES[run[len(run) // 2]], best


def textured_coefficients(pixels: np.ndarray, top: int, left: int, side: int = 256) -> np.ndarray | None:
    """The luma DCT coefficients of the more textured of two crops of up to ``side`` px on the block grid that starts
    at (top, left): the first block and the centre. None where the image holds less than 16 x 16 px there."""
    height, width = pixels.shape[:2]
    blocks_high, blocks_wide = (height - top) // 8 * 8, (width - left) // 8 * 8
    side = min(side, blocks_high, blocks_wide)
    if side < 16:
        return None
    centre = top + (blocks_high - side) // 2 // 8 * 8, left + (blocks_wide - side) // 2 // 8 * 8
    crops = [luma(pixels[row : row + side, column : column + side]) for row, column in ((top, left), centre)]
    return dct_coefficients(max(crops, key=lambda crop: float(crop.std())))


# A JPEG re-saved at a milder quality (and maybe cropped between: FBCNN's double JPEG) keeps the coarser lattice of
# the first in its luma's DCT coefficients, on the first one's block grid: they fit a quality at least
# EARLIER_QUALITY_GAP below the file's own at EARLIER_LATTICE_FIT or more, and better than the file's own quality fits
# there (less EARLIER_OWN_MARGIN). The threshold lies between what single JPEGs and double ones score (lowest when the
# second lattice, on another grid, blurs the first): experiments/README.md, real-world JPEGs.
EARLIER_QUALITY_GAP = 5
EARLIER_LATTICE_FIT = 0.25
EARLIER_OWN_MARGIN = 0.05


def earlier_lattices(pixels: np.ndarray, quality: int) -> list[tuple[int | None, float, float, tuple[int, int]]]:
    """For each grid that the pixels' JPEGs may have used (the image's own, then where its block edges are strongest):
    (the coarser quality that fits best, its fit, the fit of ``quality`` there, the grid's origin)."""
    found = []
    for top, left in candidate_origins(pixels, count=2):
        coefficients = textured_coefficients(pixels, top, left)
        if coefficients is None:
            continue
        fits = lattice_fit(coefficients)
        coarser, best = best_fitting_quality(fits[: max(0, quality - EARLIER_QUALITY_GAP)])
        own = fits[quality - 1] if quality <= len(fits) and not np.isnan(fits[quality - 1]) else -1.0
        found.append((coarser, best, float(own), (top, left)))
    return found


def earlier_jpeg(pixels: np.ndarray, quality: int) -> tuple[int, float, tuple[int, int]] | None:
    """(quality, fit, grid origin) of a coarser JPEG that these HxWx3 (or HxW grey) pixels went through before the
    last one, of ``quality`` (what the file's tables name); None for a single JPEG, or an earlier one too mild to
    leave its lattice."""
    candidates = [(best, coarser, origin) for coarser, best, own, origin in earlier_lattices(pixels, quality)
                  if best >= EARLIER_LATTICE_FIT and best >= own - EARLIER_OWN_MARGIN]  # fmt: skip
    if not candidates:
        return None
    best, coarser, origin = max(candidates)
    return coarser, best, origin


def jpeg_history(pixels: np.ndarray) -> tuple[int, float, tuple[int, int]] | None:
    """(quality, fit, grid origin) of the JPEG that these HxWx3 (or HxW grey) pixels were last decoded from, read
    from the pixels alone, in the more textured of two 256-pixel crops (top left, centre), at the image's origin or
    where its block edges are strongest (a JPEG cropped off its grid):
    - the IJG quality (2-99; q1 reads as 2, their tables clip alike) whose steps the luma's DCT coefficients sit on
      (``lattice_fit`` above ``LATTICE_FIT``), where that fit is strong or the steps read are its own;
    - else the steps read one frequency at a time (``quantization_steps``: any encoder's), named by the nearest IJG
      quality as a file's tables are, from ``STEPS_READ_FROM`` up; the fit is then their mean fit.
    None for a never-compressed photo, a JPEG of quality 100 or one so coarse that too few coefficients survive,
    another encoder's coarser tables, or a tiny or flat image."""
    for top, left in candidate_origins(pixels):
        coefficients = textured_coefficients(pixels, top, left)
        if coefficients is None:
            continue
        quality, best = best_fitting_quality(lattice_fit(coefficients))
        if best >= STRONG_LATTICE_FIT:
            return quality, best, (top, left)
        if best <= LATTICE_FIT:
            quality = None
        steps, step_fits = quantization_steps(coefficients)
        steps_read = (~np.isnan(steps)).sum() >= 6  # enough frequencies to name a table
        if quality is not None and (not steps_read or tables_agree(ijg_luminance_table(quality), steps)):
            return quality, best, (top, left)
        if steps_read and (named := nearest_ijg_quality(steps)) >= STEPS_READ_FROM:
            return named, float(np.nanmean(step_fits)), (top, left)
    return None


def jpeg_input(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """What a JPEG encoder gets from ``image``: its EXIF orientation applied, L for greyscale modes, else RGB; and
    the alpha channel, which JPEG cannot hold."""
    image = ImageOps.exif_transpose(image)
    rgb, alpha = split_alpha(image)
    return (rgb.convert("L") if image.mode in GREYSCALE_MODES else rgb), alpha

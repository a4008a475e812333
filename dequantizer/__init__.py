"""dequantizer: restore JPEG-damaged photos.

    from dequantizer import quantize, dequantize
    jpeg = quantize(img, quality=10)        # PIL image or path in, JPEG round trip out
    restored = dequantize(jpeg)             # the default shipped model, any size, any JPEG quality
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageOps

from dequantizer.errors import DequantizerError

__all__ = ["DequantizerError", "dequantize", "quantize"]
__version__ = "0.1.0"

ImageSource = str | Path | Image.Image


def quantize(image: ImageSource, quality: int = 10, subsampling: str = "4:2:0") -> Image.Image:
    """JPEG-compress ``image`` at ``quality`` (1-100) with Pillow and decode it again: the damage, without a file.

    Colour images come back RGB, greyscale ones L; alpha is passed through untouched.
    """
    from dequantizer.data.images import GREYSCALE_MODES, jpeg_roundtrip, split_alpha
    from dequantizer.restore import open_image

    image = ImageOps.exif_transpose(open_image(image))
    greyscale = image.mode in GREYSCALE_MODES
    rgb, alpha = split_alpha(image)
    out = jpeg_roundtrip(rgb.convert("L") if greyscale else rgb, quality, subsampling)
    if alpha is not None:
        out.putalpha(alpha)
    return out


def dequantize(
    image: ImageSource | Sequence[ImageSource],
    model: str | Path | None = None,
    device: str | None = None,
    precision: str | None = None,
    tile_size: int = 512,
    quality: int | None = None,
) -> Image.Image | list[Image.Image]:
    """Restore a JPEG-damaged image (PIL image or path), or a list of them.

    Args:
        model: a shipped model's name (default: the blind model for any JPEG quality), or a .safetensors/.ckpt path.
        device: "cpu", "cuda", ...; default CUDA when present.
        precision: "bf16" or "fp32"; default bf16 where the hardware runs it natively.
        tile_size: large images are restored in overlapping tiles of this size (a multiple of 8).
        quality: the JPEG quality to restore for (1-100). Default: read from a JPEG file's quantization tables, else
            predicted from the pixels by quality-aware models. A strength knob: lower restores harder (smoother),
            higher keeps more detail.
    """
    from dequantizer.data.images import check_quality
    from dequantizer.restore import get_restorer, open_image, restore_image

    if quality is not None:
        check_quality(quality)

    restorer = get_restorer(model, device, precision, tile_size)
    if isinstance(image, (list, tuple)):
        return [restore_image(open_image(item), restorer, quality) for item in image]
    return restore_image(open_image(image), restorer, quality)

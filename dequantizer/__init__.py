"""dequantizer: restore JPEG-damaged photos.

    from dequantizer import quantize, dequantize
    jpeg = quantize(img, quality=10)        # PIL image, path or HxWxC uint8 array in; the same kind out
    restored = dequantize(jpeg)             # the default shipped model, any size, any JPEG quality
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dequantizer.errors import DequantizerError

__all__ = ["DequantizerError", "dequantize", "quantize"]
__version__ = "0.1.0"

ImageSource = str | Path | Image.Image | np.ndarray


def _as_array(image: Image.Image, like: ImageSource) -> Image.Image | np.ndarray:
    """The result in the kind it came in: an array for an array (HxW grey, HxWx3 RGB, HxWx4 RGBA), else the image."""
    if not isinstance(like, np.ndarray):
        return image
    pixels = np.asarray(image)
    return pixels[..., None] if like.ndim == 3 and pixels.ndim == 2 else pixels  # HxWx1 stays HxWx1


def quantize(image: ImageSource, quality: int = 10, subsampling: str = "4:2:0") -> Image.Image | np.ndarray:
    """JPEG-compress ``image`` at ``quality`` (1-100) with Pillow and decode it again: the damage, without a file.

    Colour images come back RGB, greyscale ones L; alpha is passed through untouched. An array in, an array out.
    """
    from dequantizer.images import open_image
    from dequantizer.jpeg import jpeg_input, jpeg_roundtrip

    pixels, alpha = jpeg_input(open_image(image))
    out = jpeg_roundtrip(pixels, quality, subsampling)
    if alpha is not None:
        out.putalpha(alpha)
    return _as_array(out, image)


def dequantize(
    image: ImageSource | Sequence[ImageSource],
    model: str | Path | None = None,
    device: str | None = None,
    precision: str | None = None,
    tile_size: int = 512,
    quality: int | None = None,
    ensemble: int = 1,
    engine: str = "torch",
) -> Image.Image | np.ndarray | list[Image.Image | np.ndarray]:
    """Restore a JPEG-damaged image (PIL image, path, or HxWxC uint8 array), or a list of them. Each comes back as
    the kind it came in (an array for an array, else a PIL image, with EXIF and ICC profile kept in ``info``).

    Args:
        model: a shipped model's name (default: the blind model for any JPEG quality), or a .safetensors/.ckpt path
            (with engine="onnx" also an .onnx file from ``dequantizer export --onnx``).
        device: "cpu", "cuda", ...; default CUDA when present.
        precision: "bf16" or "fp32"; default bf16 where the hardware runs it natively.
        tile_size: large images are restored in overlapping tiles of this size (a multiple of 8).
        quality: the JPEG quality to restore for (1-100). Default: read from a JPEG file's quantization tables, else
            (quality-aware models) from the pixels: the quantization steps their DCT coefficients still sit on,
            named by the nearest IJG quality as a file's tables are, otherwise the model's prediction. A strength
            knob: lower restores harder (smoother), higher keeps more detail. A grey image of quality 100 is
            returned unchanged (it lost only the rounding of its coefficients).
        ensemble: a self-ensemble: restore 2 (mirrored), 4 (flipped) or 8 (flipped and transposed) views of the
            image and average them: better restorations (experiments/README.md, self-ensemble) at that many times
            the time. 1: one view.
        engine: "torch" (default), or "onnx": the network run by onnxruntime in fp32 (needs
            ``pip install 'dequantizer[onnx]'``); a model that is not an .onnx file is exported once into
            ~/.cache/dequantizer/onnx ($XDG_CACHE_HOME) and reused. Tiles and self-ensemble work as with torch.
    """
    from dequantizer.images import open_image
    from dequantizer.jpeg import check_quality
    from dequantizer.restore import get_restorer, restore_image

    if quality is not None:
        check_quality(quality)
    restorer = get_restorer(model, device, precision, tile_size, ensemble, engine)
    if isinstance(image, (list, tuple)):
        return [_as_array(restore_image(open_image(item), restorer, quality), item) for item in image]
    return _as_array(restore_image(open_image(image), restorer, quality), image)

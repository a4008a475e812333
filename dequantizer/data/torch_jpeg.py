"""The JPEG round trip that Pillow (libjpeg-turbo) performs, in torch, batched on any device: the same integers.

Training pairs made on the GPU instead of by Pillow in CPU workers, so the workers only crop. Each step is
libjpeg-turbo's, as Pillow calls it (``Image.save(format="JPEG", quality=q, subsampling=s)``, then ``Image.open``):

- colour: the fixed-point RGB -> YCbCr of jccolor.c, and back with jdcolor.c's tables;
- chroma: the image's last column replicated out to whole MCUs and its last row to whole sampling groups; 4:2:0
  averages each 2x2 (4:2:2 each 2x1) with jcsample.c's alternating rounding bias; decoding upsamples with jdsample.c's
  "fancy" triangle filter and its bias;
- the accurate integer DCT (jfdctint.c), quantised with the IJG tables scaled by quality as ``jpeg_set_quality``
  does, by jcdctmgr.c's reciprocal multiply; dequantised, the accurate integer inverse DCT (jidctint.c), range limit.

Everything is integer arithmetic, so the coefficients and pixels equal Pillow's, bit for bit
(``tests/test_torch_jpeg.py``; ``experiments/analyses/torch_jpeg_agreement.py`` counts it over many photos and
qualities).
"""

from __future__ import annotations

import torch

from dequantizer.jpeg import IJG_LUMINANCE, SUBSAMPLINGS

# The IJG chrominance table that quality scales, natural order (libjpeg's std_chrominance_quant_tbl).
IJG_CHROMINANCE = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *[99] * 32,
]  # fmt: skip

# (horizontal, vertical) chroma subsampling factors.
CHROMA_FACTORS = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2)}
assert CHROMA_FACTORS.keys() == SUBSAMPLINGS.keys()


_BASE_TABLES: dict[torch.device, torch.Tensor] = {}


def quantization_tables(quality: torch.Tensor) -> torch.Tensor:
    """libjpeg's ``jpeg_set_quality`` (baseline): B x 2 x 8 x 8 luma and chroma steps for B qualities 1-100."""
    quality = quality.to(torch.int64).clamp(1, 100)
    scale = torch.where(quality < 50, 5000 // quality, 200 - 2 * quality)  # integer division, as libjpeg's
    if quality.device not in _BASE_TABLES:  # made once per device: a copy to the GPU would wait for it every batch
        base = torch.tensor([IJG_LUMINANCE.tolist(), IJG_CHROMINANCE], dtype=torch.int64)
        _BASE_TABLES[quality.device] = base.to(quality.device)
    steps = (_BASE_TABLES[quality.device][None] * scale[:, None, None] + 50) // 100
    return steps.clamp(1, 255).reshape(-1, 2, 8, 8)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """libjpeg's RGB -> YCbCr on integer B x 3 x H x W samples (jccolor.c), exactly."""
    r, g, b = rgb.to(torch.int32).unbind(1)
    half, offset = 1 << 15, 128 << 16
    y = (19595 * r + 38470 * g + 7471 * b + half) >> 16
    cb = (-11059 * r - 21709 * g + 32768 * b + offset + half - 1) >> 16
    cr = (32768 * r - 27439 * g - 5329 * b + offset + half - 1) >> 16
    return torch.stack([y, cb, cr], 1)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """libjpeg's YCbCr -> RGB on integer B x 3 x H x W samples (jdcolor.c), clamped to 0-255, exactly."""
    y, cb, cr = ycbcr.to(torch.int32).unbind(1)
    cb, cr, half = cb - 128, cr - 128, 1 << 15
    r = y + ((91881 * cr + half) >> 16)
    g = y + ((-22554 * cb - 46802 * cr + half) >> 16)
    b = y + ((116130 * cb + half) >> 16)
    return torch.stack([r, g, b], 1).clamp(0, 255)


def downsample(plane: torch.Tensor, horizontal: int, vertical: int) -> torch.Tensor:
    """libjpeg's chroma downsampling (jcsample.c) of integer B x H x W samples whose sides are multiples of the
    factors: the mean of each block, rounded with a bias that alternates along the row (1, 2 for 2x2; 0, 1 for 2x1)."""
    if (horizontal, vertical) == (1, 1):
        return plane
    batch, height, width = plane.shape
    sums = plane.reshape(batch, height // vertical, vertical, width // horizontal, horizontal).sum((2, 4))
    columns = torch.arange(width // horizontal, device=plane.device) % 2
    bias = columns + 1 if vertical == 2 else columns
    return (sums + bias) >> (1 if vertical == 1 else 2)


def fancy_upsample(plane: torch.Tensor, horizontal: int, vertical: int) -> torch.Tensor:
    """libjpeg's "fancy" (triangle filter) chroma upsampling (jdsample.c) of integer B x h x w samples: each output
    sample is 3/4 the nearer input sample and 1/4 the next nearer (9/16, 3/16, 3/16, 1/16 for 2x2), the image's
    edge samples repeated, rounded with libjpeg's alternating bias."""
    if (horizontal, vertical) == (1, 1):
        return plane
    width = plane.shape[-1]
    if width <= 2:  # libjpeg falls back to plain replication for such narrow planes
        return plane.repeat_interleave(vertical, -2).repeat_interleave(horizontal, -1)
    if vertical == 2:
        padded = _replicate(plane, dim=1, before=1, after=1)
        above, below = 3 * plane + padded[:, :-2], 3 * plane + padded[:, 2:]
        rows = torch.stack([above, below], 2).flatten(1, 2)  # column sums, x4
        padded = _replicate(rows, dim=2, before=1, after=1)
        left = (3 * rows + padded[..., :-2] + 8) >> 4
        right = (3 * rows + padded[..., 2:] + 7) >> 4
    else:
        padded = _replicate(plane, dim=2, before=1, after=1)
        left = (3 * plane + padded[..., :-2] + 1) >> 2
        right = (3 * plane + padded[..., 2:] + 2) >> 2
    return torch.stack([left, right], -1).flatten(-2)


def _replicate(plane: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """``plane`` with its first and last slices along ``dim`` repeated ``before`` and ``after`` times (integer
    tensors: ``F.pad``'s replicate mode wants floats)."""
    first, last = plane.narrow(dim, 0, 1), plane.narrow(dim, plane.shape[dim] - 1, 1)
    repeats = [1] * plane.dim()
    parts = []
    if before:
        repeats[dim] = before
        parts.append(first.repeat(repeats))
    parts.append(plane)
    if after:
        repeats[dim] = after
        parts.append(last.repeat(repeats))
    return torch.cat(parts, dim)


def _pad_to(plane: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """B x H x W samples replicated out to height x width at the bottom and right, as libjpeg pads an image."""
    plane = _replicate(plane, dim=1, before=0, after=height - plane.shape[1])
    return _replicate(plane, dim=2, before=0, after=width - plane.shape[2])


# libjpeg's accurate integer DCTs (jfdctint.c, jidctint.c: Loeffler, Ligtenberg and Moschytz's, 12 multiplies), in
# 13-bit fixed point with 2 more bits kept between the passes; libjpeg-turbo's SIMD versions give the same integers.
CONST_BITS, PASS1_BITS = 13, 2
FIX_0_298631336, FIX_0_390180644, FIX_0_541196100, FIX_0_765366865 = 2446, 3196, 4433, 6270
FIX_0_899976223, FIX_1_175875602, FIX_1_501321110, FIX_1_847759065 = 7373, 9633, 12299, 15137
FIX_1_961570560, FIX_2_053119869, FIX_2_562915447, FIX_3_072711026 = 16069, 16819, 20995, 25172


def _descale(value: torch.Tensor, bits: int) -> torch.Tensor:
    return (value + (1 << (bits - 1))) >> bits


def _odd_part(d1, d3, d5, d7):
    """The shared odd half of both DCTs: the four rotated sums of the odd inputs (in the IDCT's naming: the outputs
    for rows 0-7, 1-6, 2-5, 3-4 come from d7/d5/d3/d1 ordered as tmp0..tmp3)."""
    z1, z2, z3, z4 = d7 + d1, d5 + d3, d7 + d3, d5 + d1
    z5 = (z3 + z4) * FIX_1_175875602
    z1, z2 = z1 * -FIX_0_899976223, z2 * -FIX_2_562915447
    z3, z4 = z3 * -FIX_1_961570560 + z5, z4 * -FIX_0_390180644 + z5
    return (d7 * FIX_0_298631336 + z1 + z3, d5 * FIX_2_053119869 + z2 + z4,
            d3 * FIX_3_072711026 + z2 + z3, d1 * FIX_1_501321110 + z1 + z4)  # fmt: skip


def _fdct_1d(x: torch.Tensor, first_pass: bool) -> torch.Tensor:
    """jpeg_fdct_islow along the last axis: the first pass scales up by 2**PASS1_BITS, the second takes that off."""
    d = x.unbind(-1)
    tmp0, tmp1, tmp2, tmp3 = d[0] + d[7], d[1] + d[6], d[2] + d[5], d[3] + d[4]
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    shift = CONST_BITS - PASS1_BITS if first_pass else CONST_BITS + PASS1_BITS
    if first_pass:
        out0, out4 = (tmp10 + tmp11) << PASS1_BITS, (tmp10 - tmp11) << PASS1_BITS
    else:
        out0, out4 = _descale(tmp10 + tmp11, PASS1_BITS), _descale(tmp10 - tmp11, PASS1_BITS)
    z1 = (tmp12 + tmp13) * FIX_0_541196100
    out2 = _descale(z1 + tmp13 * FIX_0_765366865, shift)
    out6 = _descale(z1 - tmp12 * FIX_1_847759065, shift)
    # The odd inputs are the differences; in the forward DCT they enter as (tmp4, tmp5, tmp6, tmp7) = d3-d4 .. d0-d7.
    out7, out5, out3, out1 = (_descale(v, shift) for v in _odd_part(d[0] - d[7], d[1] - d[6], d[2] - d[5],
                                                                     d[3] - d[4]))
    return torch.stack([out0, out1, out2, out3, out4, out5, out6, out7], -1)


def _idct_1d(x: torch.Tensor, shift: int) -> torch.Tensor:
    """jpeg_idct_islow along the last axis, descaled by ``shift`` bits."""
    d = x.unbind(-1)
    z1 = (d[2] + d[6]) * FIX_0_541196100
    tmp2, tmp3 = z1 - d[6] * FIX_1_847759065, z1 + d[2] * FIX_0_765366865
    tmp0, tmp1 = (d[0] + d[4]) << CONST_BITS, (d[0] - d[4]) << CONST_BITS
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    odd0, odd1, odd2, odd3 = _odd_part(d[1], d[3], d[5], d[7])
    out = [tmp10 + odd3, tmp11 + odd2, tmp12 + odd1, tmp13 + odd0,
           tmp13 - odd0, tmp12 - odd1, tmp11 - odd2, tmp10 - odd3]  # fmt: skip
    return _descale(torch.stack(out, -1), shift)


def _quantize(coefficients: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """libjpeg-turbo's quantisation of the DCT's output (8x the orthonormal coefficients) by 8 x ``steps``:
    |c| + divisor/2 divided by a 16-bit reciprocal multiply (jcdctmgr.c's compute_reciprocal), sign restored."""
    divisor = steps.to(torch.int64) * 8
    bits = torch.frexp(divisor.double())[1].to(torch.int64) - 1  # floor(log2), exactly
    shift = 16 + bits
    reciprocal, remainder = (1 << shift) // divisor, (1 << shift) % divisor
    correction = divisor // 2
    power_of_two = remainder == 0
    reciprocal = torch.where(power_of_two, reciprocal >> 1, reciprocal + (remainder > divisor // 2).long())
    shift = torch.where(power_of_two, shift - 1, shift)
    correction = torch.where(~power_of_two & (remainder <= divisor // 2), correction + 1, correction)
    magnitude = ((coefficients.abs() + correction) * reciprocal) >> shift
    return torch.where(coefficients < 0, -magnitude, magnitude)


def _quantize_blocks(plane: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """B x H x W samples (sides multiples of 8) -> B x H/8 x W/8 x 8 x 8 quantised DCT coefficients (int64) of the
    level-shifted blocks; ``steps`` is B x 8 x 8."""
    batch, height, width = plane.shape
    blocks = (plane.to(torch.int64) - 128).reshape(batch, height // 8, 8, width // 8, 8).transpose(2, 3)
    rows = _fdct_1d(blocks, first_pass=True)
    coefficients = _fdct_1d(rows.transpose(-1, -2), first_pass=False).transpose(-1, -2)
    return _quantize(coefficients, steps[:, None, None])


def _decode_blocks(levels: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Quantised coefficients -> B x H x W samples: dequantise, inverse DCT (columns, then rows), level shift and
    clamping to 0-255 (libjpeg-turbo's SIMD inverse DCT saturates; its C code would wrap values beyond +-512)."""
    batch, rows, columns = levels.shape[:3]
    dequantized = levels * steps[:, None, None].to(torch.int64)
    columns_done = _idct_1d(dequantized.transpose(-1, -2), CONST_BITS - PASS1_BITS).transpose(-1, -2)
    samples = _idct_1d(columns_done, CONST_BITS + PASS1_BITS + 3)
    samples = (samples + 128).clamp(0, 255).to(torch.int32)
    return samples.transpose(2, 3).reshape(batch, rows * 8, columns * 8)


def jpeg_coefficients(images: torch.Tensor, quality: torch.Tensor, subsampling: str = "4:2:0") -> list[torch.Tensor]:
    """The quantised DCT coefficients of B x C x H x W uint8 images (C = 3: RGB, as YCbCr; C = 1: grey) at per-image
    ``quality``: per component, B x rows x columns x 8 x 8 (natural order; chroma blocks cover the subsampled plane
    padded to whole MCUs)."""
    return _encode(images, quality, subsampling)[0]


def _encode(images: torch.Tensor, quality: torch.Tensor, subsampling: str):
    if subsampling not in CHROMA_FACTORS:
        raise ValueError(f"JPEG subsampling {subsampling!r} is not one of {', '.join(CHROMA_FACTORS)}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected B x 1 x H x W or B x 3 x H x W images, got {tuple(images.shape)}")
    quality = torch.as_tensor(quality, device=images.device).expand(images.shape[0])
    tables = quantization_tables(quality)
    height, width = images.shape[-2:]
    grey = images.shape[1] == 1
    horizontal, vertical = (1, 1) if grey else CHROMA_FACTORS[subsampling]
    # libjpeg replicates the last column out to whole MCUs before downsampling, but the last row only out to whole
    # sampling groups; each downsampled plane's last row is then replicated out to whole blocks.
    padded_width = -(-width // (8 * horizontal)) * 8 * horizontal
    planes = images.to(torch.int32) if grey else rgb_to_ycbcr(images)
    planes = [_pad_to(plane, -(-height // vertical) * vertical, padded_width) for plane in planes.unbind(1)]
    luma = planes[0][..., : -(-width // 8) * 8]  # the file's blocks: the MCU's last column of blocks is a dummy
    planes = [luma] + [downsample(chroma, horizontal, vertical) for chroma in planes[1:]]
    levels = [
        _quantize_blocks(_pad_to(plane, -(-plane.shape[1] // 8) * 8, plane.shape[2]), tables[:, min(index, 1)])
        for index, plane in enumerate(planes)
    ]
    return levels, tables, (height, width, horizontal, vertical)


def jpeg_roundtrip(images: torch.Tensor, quality: torch.Tensor | int, subsampling: str = "4:2:0") -> torch.Tensor:
    """Compress B x C x H x W uint8 images (C = 3: RGB; C = 1: grey) as JPEG at per-image ``quality`` (an int or a
    B-element tensor, 1-100) and decode them again: what Pillow's save and open return, as uint8, on the images'
    device."""
    levels, tables, (height, width, horizontal, vertical) = _encode(images, quality, subsampling)
    luma = _decode_blocks(levels[0], tables[:, 0])[:, :height, :width]
    if len(levels) == 1:
        return luma[:, None].to(torch.uint8)
    chroma_height, chroma_width = -(-height // vertical), -(-width // horizontal)  # libjpeg's downsampled size
    chroma = [
        fancy_upsample(_decode_blocks(plane, tables[:, 1])[:, :chroma_height, :chroma_width], horizontal,
                       vertical)[:, :height, :width]
        for plane in levels[1:]
    ]  # fmt: skip
    return ycbcr_to_rgb(torch.stack([luma, *chroma], 1)).to(torch.uint8)

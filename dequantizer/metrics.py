"""Image quality metrics, one definition for training, `dequantizer evaluate` and the experiment scripts."""

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

SSIM_WINDOW = 11  # the standard Gaussian window (sigma 1.5)


def to_unit_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float in [0, 1], what the metrics take."""
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255


def image_metrics(restored: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR and SSIM on clamped [0, 1] RGB (shape (N,) each), always in fp32.

    SSIM's variance terms (E[x^2] - E[x]^2) fall apart in bf16, so autocast is switched off here.
    """
    with torch.autocast(restored.device.type, enabled=False):
        restored, target = restored.float().clamp(0, 1), target.float().clamp(0, 1)
        psnr = peak_signal_noise_ratio(restored, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
        ssim = structural_similarity_index_measure(restored, target, data_range=1.0, reduction="none")
    return psnr, ssim


def photo_metrics(restored: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``image_metrics`` for photos of any size: images smaller than SSIM's 11-px window get a uniform window of the
    largest odd size that fits (the standard one needs at least 6 px of reflection padding on each side)."""
    side = min(target.shape[-2:])
    if side >= SSIM_WINDOW:
        return image_metrics(restored, target)
    restored, target = restored.float().clamp(0, 1), target.float().clamp(0, 1)
    psnr = peak_signal_noise_ratio(restored, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    window = side if side % 2 else side - 1
    ssim = structural_similarity_index_measure(restored, target, data_range=1.0, reduction="none",
                                               gaussian_kernel=False, kernel_size=window)
    return psnr, ssim


def y_psnr(restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR on the BT.601 luma (the Y of JPEG's YCbCr), per image, on [0, 1] inputs."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    mse = (((restored - target) * weights).sum(1) ** 2).mean(dim=(1, 2)).clamp_min(1e-12)  # Y is linear in RGB
    return -10 * torch.log10(mse)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """The RGB PSNR (dB) of a uint8 image against its reference, as `dequantizer evaluate` computes it per photo (a
    grey HxW image as its three equal channels)."""
    if image.ndim == 2:
        image, reference = (np.repeat(pixels[..., None], 3, axis=2) for pixels in (image, reference))
    return float(photo_metrics(to_unit_tensor(image), to_unit_tensor(reference))[0])

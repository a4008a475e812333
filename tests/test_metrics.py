"""PSNR and SSIM (dequantizer/metrics.py), the same for training, evaluation and the experiments: per-image means, in
fp32 even under autocast."""

import torch


def test_metrics_are_per_image_means_in_fp32_even_under_autocast():
    from dequantizer.metrics import image_metrics

    target = torch.zeros(2, 3, 8, 8)
    restored = target.clone()
    restored[0] += 0.1  # PSNR 20 dB
    restored[1] += 0.01  # PSNR 40 dB
    psnr, _ = image_metrics(restored, target)
    torch.testing.assert_close(psnr, torch.tensor([20.0, 40.0]))  # the mean (30) differs from pooled-MSE PSNR
    # SSIM's Gaussian filter is a convolution, which bf16 autocast would run in bf16: near-identical images then
    # lose the variance terms (E[x^2] - E[x]^2) to rounding. Training validates under autocast.
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 3, 32, 32, generator=generator) * 0.5 + 0.25
    noisy = (clean + 0.01 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    reference_psnr, reference_ssim = image_metrics(noisy, clean)
    with torch.autocast("cpu", torch.bfloat16):
        psnr, ssim = image_metrics(noisy, clean)
    assert psnr.dtype == ssim.dtype == torch.float32
    torch.testing.assert_close(ssim, reference_ssim, rtol=0, atol=1e-6)
    torch.testing.assert_close(psnr, reference_psnr, rtol=0, atol=1e-5)

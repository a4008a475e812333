"""How much of the accelerator the default model's training step uses, and what raises it.

    python experiments/analyses/gpu_step.py --out OUT        # on the GPU machine: every variant, ~3 minutes
    python experiments/analyses/gpu_step.py --device cpu --batch-size 4 --crop-size 32 --variants eager   # a dry run

The step is the shipped model's (``conf/model/generator/unet.yaml``): the quality-aware U-Net's forward on uint8 pairs
in bf16 autocast, an L1 pixel loss plus the quality head's (the recipes' PSNR loss and quantile head cost the same
FLOPs), the backward, Adam and the generator's EMA; with ``-jpeg`` the pairs are made in the step from clean crops by
``torch_jpeg`` (``data.jpeg=torch``), as training does. Each variant reports images/s and its share of the machine:
the FLOPs of one step counted by ``torch.utils.flop_counter`` (the convolutions and matmuls, forward and backward),
per second, against the measured bf16 matmul peak of this device (``experiments/analyses/benchmark.py`` does the same
on the CPU).

Variants (names joined by '-'): ``eager`` or ``compiled`` (``torch.compile``) or ``graphs`` (``torch.compile`` with
CUDA graphs, mode reduce-overhead); ``b<N>`` the batch size; ``fused`` Adam's fused kernel; ``sync`` a host sync each
step, as the non-finite-loss check of ``DequantizerGAN`` does; ``jpeg`` the torch JPEG in the step.
"""

from __future__ import annotations

import argparse
import copy
import csv
import gc
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from dequantizer.data.torch_jpeg import jpeg_roundtrip
from dequantizer.models import to_model_range

ROOT = Path(__file__).resolve().parents[2]

DEFAULT_VARIANTS = [
    "eager-b64-sync-jpeg",  # stage 8's batch and its per-step sync, with the pairs now made on the GPU
    "eager-b64",
    "eager-b256",
    "eager-b256-fused",
    "compiled-b256-fused",
    "compiled-b256-fused-jpeg",
    "graphs-b256-fused",
    "compiled-b512-fused",
]


def matmul_peak(device: torch.device, size: int, repeats: int = 20) -> float:
    """FLOP/s of a square bf16 matmul: this device's practical peak."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_variant(name: str) -> dict:
    mode, *parts = name.split("-")
    if mode not in ("eager", "compiled", "graphs"):
        raise SystemExit(f"variant {name!r}: start with eager, compiled or graphs")
    sizes = [int(part[1:]) for part in parts if part[:1] == "b" and part[1:].isdigit()]
    unknown = [part for part in parts if part not in ("fused", "sync", "jpeg") and not (part[:1] == "b" and
                                                                                        part[1:].isdigit())]
    if unknown or len(sizes) > 1:
        raise SystemExit(f"variant {name!r}: name at most one batch size (b<N>) and only fused, sync, jpeg besides")
    return {"mode": mode, "batch_size": sizes[0] if sizes else None, "fused": "fused" in parts,
            "sync": "sync" in parts, "jpeg": "jpeg" in parts}  # fmt: skip


class Step:
    """One training step of the default generator on a fixed batch, built for one variant."""

    def __init__(self, variant: dict, batch_size: int, crop_size: int, device: torch.device):
        torch.manual_seed(0)
        config = OmegaConf.load(ROOT / "conf/model/generator/unet.yaml")
        self.generator = instantiate(config).to(device).to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False)
        fused = {"fused": True} if variant["fused"] else {}
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=1e-4, **fused)
        self.variant, self.device = variant, device
        clean = torch.randint(0, 256, (batch_size, 3, crop_size, crop_size), dtype=torch.uint8, device=device)
        self.clean = clean
        self.quality = torch.randint(1, 101, (batch_size,), device=device)
        self.jpeg = jpeg_roundtrip(clean, self.quality)
        forward = self.forward
        if variant["mode"] != "eager":
            mode = "reduce-overhead" if variant["mode"] == "graphs" else "default"
            forward = torch.compile(self.forward, mode=mode, dynamic=False)  # each variant its own static graph
        self.compiled_forward = forward

    def forward(self, jpeg: torch.Tensor, clean: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        inputs, target = to_model_range(jpeg), to_model_range(clean)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            restored, predicted = self.generator(inputs, quality, return_quality=True)
        return F.l1_loss(restored.float(), target) + 0.1 * F.l1_loss(predicted.float() / 100, quality.float() / 100)

    def __call__(self) -> None:
        jpeg = jpeg_roundtrip(self.clean, self.quality) if self.variant["jpeg"] else self.jpeg
        loss = self.compiled_forward(jpeg, self.clean, self.quality)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.generator.parameters()), 1 - 0.999)
        if self.variant["sync"]:
            bool(torch.isfinite(loss))  # the host waits for the step, as the non-finite check does

    def flops(self) -> int:
        """FLOPs of one step's forward and backward (convolutions and matmuls)."""
        with FlopCounterMode(display=False) as counter:
            loss = self.forward(self.jpeg, self.clean, self.quality)
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def measure(name: str, batch_size: int, crop_size: int, device: torch.device, seconds: float, peak: float) -> dict:
    variant = parse_variant(name)
    batch_size = variant["batch_size"] or batch_size
    step = Step(variant, batch_size, crop_size, device)
    flops = step.flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(3):  # compiles, autotunes, records graphs
        step()
    synchronize(device)
    warmup = time.perf_counter() - start
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 3:
        step()
        steps += 1
        if steps % 10 == 0:
            synchronize(device)
    synchronize(device)
    elapsed = time.perf_counter() - start
    rate = flops * steps / elapsed
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"variant": name, "batch_size": batch_size, "crop_size": crop_size, "steps": steps,
            "images_per_s": round(batch_size * steps / elapsed, 1), "ms_per_step": round(1000 * elapsed / steps, 2),
            "tflop_per_step": round(flops / 1e12, 4), "tflop_per_s": round(rate / 1e12, 2),
            "share_of_peak": round(rate / peak, 4), "warmup_s": round(warmup, 1),
            "peak_memory_gib": round(memory, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--batch-size", type=int, default=64, help="for variants that name none")
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=10, help="timed per variant, after its warm-up")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="folder for gpu_step.csv and gpu_step.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    peak = matmul_peak(device, 8192 if device.type == "cuda" else 1024)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{name}: bf16 matmul peak {peak / 1e12:.1f} TFLOP/s", flush=True)
    rows = []
    for variant in args.variants:
        try:
            rows.append(measure(variant, args.batch_size, args.crop_size, device, args.seconds, peak))
        except torch.OutOfMemoryError:
            rows.append({"variant": variant, "images_per_s": "out of memory"})
        # The next variant starts clean: no compiled graphs, CUDA graph pools or cached memory of this one.
        torch._dynamo.reset()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        fields = list(dict.fromkeys(key for row in rows for key in row))
        with (args.out / "gpu_step.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        summary = {"device": name, "bf16_matmul_peak_tflop_s": round(peak / 1e12, 1), "variants": rows}
        (args.out / "gpu_step.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Speed benchmark: training step (naive reference vs the project's default), restoration throughput, make train.

    python experiments/analyses/benchmark.py                 # training + restoration, ~3 minutes on 2 CPU cores
    python experiments/analyses/benchmark.py --make-train    # also time `make train` end to end (~5 minutes more)

Everything that is compared runs in this one process, interleaved, so ratios hold on a noisy machine. The restoration
peak RSS is measured in a child process of its own (RSS is per process). See experiments/BENCHMARKS.md for results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import dequantizer.config  # noqa: F401  (registers resolvers)
from dequantizer.losses import discriminator_loss
from dequantizer.models import to_model_range, to_unit_range
from dequantizer.weights import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[2]


def compose_config(overrides: list[str]):
    os.environ.setdefault("DEQUANTIZER_ROOT", str(ROOT))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "/tmp"
    HydraConfig.instance().set_config(cfg)
    return cfg


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a square matmul: the machine's practical peak for this dtype."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def beta_batches(count: int, batch_size: int = 16, size: int = 96) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 256, (count * batch_size, 3, size, size), dtype=torch.uint8, generator=generator)
    jpeg = (target.int() + torch.randint(-12, 13, target.shape, generator=generator)).clamp(0, 255).to(torch.uint8)
    return DataLoader(TensorDataset(jpeg, target, torch.full((count * batch_size,), 50)), batch_size=batch_size)


def beta_model(compile: bool = False):
    cfg = compose_config(["experiment=beta", "loss.content.pretrained=false", f"model.compile={compile}"])
    return instantiate(cfg.model, loss=cfg.loss)


class StepTimer(L.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_batch_start(self, *args):
        self.start = time.perf_counter()

    def on_train_batch_end(self, *args):
        self.times.append(time.perf_counter() - self.start)


def default_steps(steps: int, warmup: int, compile: bool = False) -> list[float]:
    """The project's real training step: DequantizerGAN under Lightning, bf16-mixed, channels_last."""
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[timer])
    trainer.fit(beta_model(compile), train_dataloaders=beta_batches(warmup + steps))
    return timer.times[warmup:]


def naive_steps(steps: int, warmup: int) -> list[float]:
    """The straightforward fp32 loop of the paper's code: G runs twice per batch, D's loss flows back through G."""
    model = beta_model()
    generator, discriminator, loss = model.generator, model.discriminator, model.loss
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-4, betas=(0.9, 0.999))
    times = []
    for jpeg, target, _ in beta_batches(warmup + steps):
        start = time.perf_counter()
        inputs, real = jpeg.float() / 127.5 - 1, target.float() / 127.5 - 1  # contiguous NCHW, fp32
        fake = generator(inputs)
        loss_d = discriminator_loss(discriminator(real), discriminator(fake))  # not detached
        opt_d.zero_grad()
        loss_d.backward()  # also back-propagates through G, for nothing
        opt_d.step()
        fake = generator(inputs)  # second generator forward
        terms = loss(to_unit_range(fake), to_unit_range(real), discriminator(fake))
        opt_g.zero_grad()
        terms["total"].backward()
        opt_g.step()
        times.append(time.perf_counter() - start)
    return times[warmup:]


def training_flops() -> int:
    """FLOPs of one default training step (G forward, D step on the detached fake, G step through D and VGG)."""
    model = beta_model()
    jpeg, target, _ = next(iter(beta_batches(1)))
    inputs, real = to_model_range(jpeg), to_model_range(target)
    with FlopCounterMode(display=False) as counter:
        fake = model.generator(inputs)
        discriminator_loss(model.discriminator(real), model.discriminator(fake.detach())).backward()
        terms = model.loss(to_unit_range(fake), to_unit_range(real), model.discriminator(fake))
        terms["total"].backward()
    return counter.get_total_flops()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent,
    so a child of this (large) benchmark process would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def restoration_child(megapixels: float, precision: str, model: str, ensemble: int) -> None:
    """Runs in a child process: restore a synthetic photo with ``model``, print time and peak RSS."""
    import numpy as np

    from dequantizer.jpeg import jpeg_roundtrip_array
    from dequantizer.restore import Restorer
    from dequantizer.weights import load_generator, resolve_model

    generator, _ = load_generator(resolve_model(model))
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5) // 8 * 8
    height = int(megapixels * 1e6 / width) // 8 * 8
    rng = np.random.default_rng(0)
    small = (rng.random((height // 32, width // 32, 3)) * 255).astype(np.uint8)
    photo = np.kron(small, np.ones((32, 32, 1), dtype=np.uint8))
    photo = jpeg_roundtrip_array(photo, 30)
    restorer = Restorer(generator, device=torch.device("cpu"), precision=precision, ensemble=ensemble)
    restorer.restore_array(photo[:512, :512])  # warm-up
    start = time.perf_counter()
    restorer.restore_array(photo)
    seconds = time.perf_counter() - start
    print(json.dumps({"width": width, "height": height, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def data_memory(root: str) -> None:
    """Peak RSS of a DataModule holding every photo under ``root`` decoded (what a training process carries)."""
    from dequantizer.data import FolderPhotos, JpegDataModule

    before = peak_rss_mb()
    start = time.perf_counter()
    data = JpegDataModule(FolderPhotos(root), quality=[1, 100], crop_size=96, val_fraction=0.1, val_crops_per_photo=4)
    data.setup("fit")
    photos = data.train_set.photos
    pixels = sum(photo.shape[0] * photo.shape[1] for photo in photos)
    print(f"data {root}: {len(photos)} train photos ({pixels / 1e6:.0f} MP, {pixels * 3 / 2**20:.0f} MiB decoded) "
          f"+ {len(data.val_set)} val crops, loaded in {time.perf_counter() - start:.0f} s; "
          f"peak RSS {before:.0f} MB before, {peak_rss_mb():.0f} MB after")


def restoration(megapixels: float, precision: str, model: str, ensemble: int = 1) -> dict:
    command = [sys.executable, __file__, "--restoration-child", str(megapixels), "--precision", precision,
               "--model", model, "--ensemble", str(ensemble)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    record = json.loads(result.stdout.strip().splitlines()[-1])
    record["megapixels_per_second"] = record["width"] * record["height"] / 1e6 / record["seconds"]
    return record


def time_make_train() -> float:
    start = time.perf_counter()
    subprocess.run(["make", "train"], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--make-train", action="store_true", help="also time `make train` end to end")
    parser.add_argument("--compile", action="store_true", help="also time the default with model.compile=true")
    parser.add_argument("--restoration-child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the restoration model (name or weights file)")
    parser.add_argument("--baseline", default="blind_v1",
                        help="restoration speed is also reported as a ratio to this model, timed in the same run")
    parser.add_argument("--restoration-only", action="store_true", help="skip the training-step benchmark")
    parser.add_argument("--ensemble", type=int, default=1, choices=[1, 2, 4, 8],
                        help="restore with --model as a self-ensemble of this many views (the baseline: one view); "
                             "--baseline blind compares a model with itself")
    parser.add_argument("--data", help="only measure the memory of a DataModule over this photo folder")
    args = parser.parse_args()
    if args.restoration_child:
        restoration_child(args.restoration_child, args.precision, args.model, args.ensemble)
        return
    if args.data:
        data_memory(args.data)
        return
    if args.model == args.baseline and args.ensemble == 1:
        parser.error("--baseline is --model: compare it with another model, or with itself as a self-ensemble")

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    peak_fp32, peak_bf16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"matmul peak: fp32 {peak_fp32:.0f} GFLOP/s, bf16 {peak_bf16:.0f} GFLOP/s")

    if not args.restoration_only:
        training_benchmark(args, peak_bf16)
    for precision in ("bf16", "fp32"):
        # Model and baseline alternate, twice each, best of two: a change in machine load hits both.
        contenders = {args.model + (f" (self-ensemble of {args.ensemble})" if args.ensemble > 1 else ""):
                      (args.model, args.ensemble), args.baseline: (args.baseline, 1)}
        runs = {name: [] for name in contenders}
        for _ in range(2):
            for name, (model, ensemble) in contenders.items():
                runs[name].append(restoration(args.megapixels, precision, model, ensemble))
        best = {name: min(records, key=lambda r: r["seconds"]) for name, records in runs.items()}
        for name, record in best.items():
            print(f"restoration {record['width']}x{record['height']} ({args.megapixels:g} MP), {name}, {precision}: "
                  f"{record['seconds']:.1f} s, {record['megapixels_per_second']:.2f} MP/s, "
                  f"peak RSS {max(r['peak_rss_mb'] for r in runs[name]):.0f} MB")
        model_name, baseline_name = best
        ratio = best[model_name]["megapixels_per_second"] / best[baseline_name]["megapixels_per_second"]
        print(f"  {model_name} runs at {ratio:.2f}x the speed of {baseline_name} ({precision}, same run)")
    if args.make_train:
        print(f"make train end to end: {time_make_train():.0f} s")


def training_benchmark(args: argparse.Namespace, peak_bf16: float) -> None:
    # Interleave the two variants so that a change in machine load hits both.
    naive, default = [], []
    for _ in range(2):
        naive += naive_steps(args.steps // 2, args.warmup)
        default += default_steps(args.steps // 2, args.warmup)
    naive_s, default_s = median(naive), median(default)
    flops = training_flops()
    print("training step, Beta recipe (batch 16, 96x96, R=5, random-weight VGG19 content + adversarial):")
    print(f"  naive fp32 reference : {naive_s:6.3f} s/step  {16 / naive_s:6.1f} images/s")
    print(f"  project default      : {default_s:6.3f} s/step  {16 / default_s:6.1f} images/s  "
          f"({flops / 1e9:.0f} GFLOP/step -> {flops / default_s / 1e9:.0f} GFLOP/s, "
          f"{flops / default_s / 1e9 / peak_bf16:.0%} of bf16 matmul peak)")
    print(f"  speed-up             : {naive_s / default_s:6.2f}x")
    if args.compile:
        start = time.perf_counter()
        compiled = median(default_steps(args.steps, args.warmup + 1, compile=True))
        print(f"  default + compile    : {compiled:6.3f} s/step  {16 / compiled:6.1f} images/s  "
              f"speed-up {naive_s / compiled:.2f}x (compiling and timing took {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

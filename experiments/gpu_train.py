"""Train the shipped default model (experiment=blind/continue_gpu, or a GPU stage of its recipe) on one GPU inside a
wall-clock budget.

    python experiments/training_photos.py data/photos --packs gpu_packs   # here: the photos in parts
    bash experiments/gpu_stage.sh              # on the GPU machine, once per part carried (see that script)
    PYTHONPATH=. python experiments/gpu_train.py --budget 400 --out OUT   # then, on the GPU machine (not installed)

First it measures how many training steps per second this machine manages (the generator's forward + backward in
bf16 on the GPU, the batch's JPEG round trips there too with data.jpeg=torch, and the crops, or crops and JPEGs with
data.jpeg=pillow, made by the CPU workers), so that the cosine schedule is sized to end when the budget does; then it
runs `train.py experiment=<--experiment> trainer=gpu ...` with that many epochs (and `trainer.max_time` as a
backstop), and exports the best EMA generator (fp16 safetensors) and the logs to ``--out``. It refuses to start on a
photo folder that holds fewer photos than its split lists (a machine renewed between the calls that staged them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from dequantizer.data.datamodule import JpegDataModule
from dequantizer.data.sources import FolderPhotos
from dequantizer.data.torch_jpeg import jpeg_roundtrip
from dequantizer.images import IMAGE_EXTENSIONS
from dequantizer.models import to_model_range

ROOT = Path(__file__).resolve().parent.parent


def gpu_steps_per_second(model: DictConfig, batch_size: int, crop_size: int, device: torch.device,
                         jpeg_on_device: bool, steps: int = 30) -> float:
    """The recipe's generator (``model.generator``, compiled if ``model.compile``) forward + L1 + backward + its
    optimizer's step (``model.optimizer_g``), bf16 autocast, channels_last, and the batch's JPEG round trips on the
    device with ``jpeg_on_device``: steps per second, after a third of the steps as warm-up (and compilation)."""
    generator = instantiate(model.generator).to(device).to(memory_format=torch.channels_last)
    if model.compile:
        generator.compile()
    optimizer = instantiate(model.optimizer_g, params=generator.parameters())
    images = torch.randint(0, 256, (batch_size, 3, crop_size, crop_size), dtype=torch.uint8, device=device)
    quality = torch.randint(1, 101, (batch_size,), device=device)
    inputs = to_model_range(images)
    timings = []
    for _ in range(steps):
        start = time.perf_counter()
        if jpeg_on_device:
            jpeg_roundtrip(images, quality)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out, predicted = generator(inputs, quality, return_quality=True)
            loss = F.l1_loss(out.float(), inputs.float()) + F.l1_loss(predicted.float(), quality.float()) / 1000
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return 1 / (sum(timings[steps // 3 :]) / len(timings[steps // 3 :]))


def data_samples_per_second(photos: Path, crop_size: int, jpeg: str, count: int = 300) -> float:
    """Training samples (pairs, or crops for data.jpeg=torch) made per second by one worker process."""
    data = JpegDataModule(FolderPhotos(photos), quality=[1, 100], crop_size=crop_size, val_fraction=0.1,
                          samples_per_epoch=count, grid_shift_fraction=0.25, jpeg=jpeg)
    data.setup("fit")
    start = time.perf_counter()
    for index in range(count):
        data.train_set[index]
    return count / (time.perf_counter() - start)


def check_photos(photos: Path) -> None:
    """Exit with one line unless every photo the folder's split lists is there."""
    split_file = photos / "split.json"
    if not split_file.is_file():
        sys.exit(f"{split_file} is missing: stage the photo packs first (experiments/gpu_stage.sh)")
    split = json.loads(split_file.read_text())
    listed = set(split["train"]) | set(split["val"])
    present = {path.relative_to(photos).as_posix() for path in photos.rglob("*")
               if path.suffix.lower() in IMAGE_EXTENSIONS}
    if missing := listed - present:
        sys.exit(f"{len(missing)} of the {len(listed)} photos in {split_file} are missing (e.g. {sorted(missing)[0]}): "
                 "stage every pack part (experiments/gpu_stage.sh)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="blind/continue_gpu", help="the recipe (conf/experiment/) to train")
    parser.add_argument("--budget", type=float, default=420, help="seconds of training (the fit itself)")
    parser.add_argument("--out", type=Path, required=True, help="where the weights, metrics and plan go")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "gpu", help="where the run itself goes")
    parser.add_argument("--photos", type=Path, default=ROOT / "gpu_data" / "photos")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's data.batch_size")
    parser.add_argument("--crop-size", type=int, help="default: the recipe's data.crop_size")
    parser.add_argument("--steps-per-epoch", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--efficiency", type=float, default=0.7,
                        help="share of the measured step rate that the full training loop is expected to reach")
    parser.add_argument("overrides", nargs="*", help="more train.py overrides")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_photos(args.photos)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        recipe = compose("config", overrides=[f"experiment={args.experiment}", *args.overrides])
    jpeg = recipe.data.jpeg
    args.batch_size = args.batch_size or recipe.data.batch_size
    args.crop_size = args.crop_size or recipe.data.crop_size

    gpu_rate = gpu_steps_per_second(recipe.model, args.batch_size, args.crop_size, device, jpeg == "torch")
    data_rate = data_samples_per_second(args.photos, args.crop_size, jpeg) * args.workers / args.batch_size
    rate = min(gpu_rate, data_rate) * args.efficiency
    epochs = max(1, int(args.budget * rate / args.steps_per_epoch))
    plan = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "gpu_steps_per_s": round(gpu_rate, 1), "data_steps_per_s": round(data_rate, 1),
        "planned_steps_per_s": round(rate, 1), "epochs": epochs, "steps": epochs * args.steps_per_epoch,
        "batch_size": args.batch_size, "crop_size": args.crop_size, "workers": args.workers, "jpeg": jpeg,
    }  # fmt: skip
    print("plan:", json.dumps(plan), flush=True)

    run_root = args.work
    run_dir = run_root / recipe.experiment_name  # train.py's run_name below: the next stage's init_from finds it
    backstop = int(args.budget * 1.15)  # if the plan was optimistic, stop anyway (DD:HH:MM:SS)
    max_time = f"00:{backstop // 3600:02d}:{backstop % 3600 // 60:02d}:{backstop % 60:02d}"
    command = [
        sys.executable, str(ROOT / "train.py"), f"experiment={args.experiment}",
        f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}", "logger=csv", "resume=false",
        f"paths.log_dir={run_root}", f"data.source.root={args.photos.resolve()}",
        f"data.batch_size={args.batch_size}", f"data.crop_size={args.crop_size}", f"data.num_workers={args.workers}",
        f"data.samples_per_epoch={args.steps_per_epoch * args.batch_size}", f"data.pin_memory={device.type == 'cuda'}",
        f"trainer.max_epochs={epochs}", f"+trainer.max_time={max_time}",
        "trainer.log_every_n_steps=50", "+trainer.enable_progress_bar=false",  # its refreshes would sync each step
        f"run_name={run_dir.name}", *args.overrides,
    ]  # fmt: skip
    start, started_at = time.perf_counter(), time.time()
    result = subprocess.run(command, cwd=ROOT)
    seconds = time.perf_counter() - start
    best = run_dir / "checkpoints" / "best.ckpt"
    if not best.is_file() or best.stat().st_mtime < started_at:  # none, or an earlier run's
        sys.exit(f"training failed (exit {result.returncode}) before this run wrote a best checkpoint")

    from dequantizer.weights import export_checkpoint, read_checkpoint

    last = run_dir / "checkpoints" / "last.ckpt"
    steps = read_checkpoint(last)["global_step"]
    plan |= {"train_py_seconds": round(seconds, 1), "steps_done": steps,
             "images_per_s_incl_validation": round(steps * args.batch_size / seconds, 1)}  # fmt: skip
    export_checkpoint(best, args.out / f"{recipe.experiment_name}.safetensors",
                      description=f"GPU run of experiment={args.experiment}",
                      command="python experiments/gpu_train.py " + " ".join(sys.argv[1:]), half=True)
    for metrics in sorted(run_dir.glob("runs/*/csv/version_*/metrics.csv")):  # the newest last
        shutil.copy(metrics, args.out / "metrics.csv")
    (args.out / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    print("done:", json.dumps(plan), flush=True)


if __name__ == "__main__":
    main()

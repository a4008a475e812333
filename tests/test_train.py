"""train.py end to end, as a user runs it: overfit, resume, multirun, errors, secrets."""

import csv

import pytest
import torch

from conftest import FAST, run_train

QUICK = ["experiment=quick", *FAST]


def read_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_callback_state(checkpoint):
    """The state of the best-val/psnr ModelCheckpoint stored in a checkpoint."""
    return next(state for key, state in checkpoint["callbacks"].items() if "val/psnr" in key)


def test_overfit_rises_above_the_jpeg_input(tmp_path, samples_dir):
    result = run_train(tmp_path, "experiment=quick", "debug=overfit", "data.crop_size=32", "data.batch_size=8",
                       "data.quality=10", samples=samples_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [row for path in tmp_path.glob("outputs/*/runs/*/csv/version_0/metrics.csv")
            for row in csv.DictReader(path.open()) if row.get("val/psnr")]
    psnr = [float(row["val/psnr"]) for row in rows]
    jpeg = float(rows[0]["val/psnr_jpeg"])
    assert len(psnr) == 30
    assert psnr[-1] > psnr[0] and psnr[-1] > jpeg + 0.1, (psnr, jpeg)
    assert "JPEG input" in result.stdout and "comparison image" in result.stdout
    assert list(tmp_path.glob("outputs/*/runs/*/comparison.png"))
    assert list(tmp_path.glob("outputs/*/runs/*/csv/version_0/images/val_epoch000.png"))

    # the trained generator exported as a user would ship it, with the facts of its run
    from dequantizer.cli import main
    from dequantizer.weights import read_metadata

    (best,) = tmp_path.glob("outputs/*/checkpoints/best.ckpt")
    assert main(["export", str(best), str(tmp_path / "quick.safetensors"), "--command", "python train.py"]) == 0
    metadata = read_metadata(tmp_path / "quick.safetensors")
    assert metadata["qualities"] == 10 and metadata["experiment"] == "quick"
    assert metadata["command"] == "python train.py"
    assert metadata["training_data"] == "SamplePhotos samples"
    validation = metadata["validation"]
    assert abs(validation["val/psnr"] - max(psnr)) < 1e-3 and abs(validation["val/psnr_jpeg"] - jpeg) < 1e-3
    assert main(["models"]) == 0  # the shipped ones still list


def test_rerun_resumes_from_last_checkpoint(tmp_path, samples_dir):
    first = run_train(tmp_path, *QUICK, "trainer.max_epochs=1", "test=false", samples=samples_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = [path for path in (tmp_path / "outputs").iterdir() if path.is_dir()]
    last = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 0 and last["global_step"] == 2  # 2 batches, generator steps only (pixel loss)
    best_score = checkpoint_callback_state(last)["best_model_score"]

    second = run_train(tmp_path, *QUICK, "trainer.max_epochs=3", "test=false", samples=samples_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    output = second.stdout + second.stderr
    assert "resuming from" in output and str(run_dir / "checkpoints" / "last.ckpt") in output
    resumed = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    # the last of 3 epochs of 2 steps each: epoch 0 was not trained again
    assert resumed["epoch"] == 2 and resumed["global_step"] == 6
    assert len(resumed["optimizer_states"]) == 2 and resumed["optimizer_states"][0]["state"]
    callback = checkpoint_callback_state(resumed)
    assert callback["best_model_score"] >= best_score
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()

    third = run_train(tmp_path, *QUICK, "trainer.max_epochs=3", "resume=false", "test=false", samples=samples_dir)
    assert third.returncode == 0, third.stderr[-3000:]
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6  # 3 fresh epochs
    assert list(run_dir.glob("checkpoints-*/last.ckpt"))  # the old run was moved aside, not lost


def test_multirun_gives_each_job_its_own_directory(tmp_path, samples_dir):
    result = run_train(tmp_path, "experiment=alef", "data=samples", *FAST, "trainer.max_epochs=1", "test=false",
                       "model.generator.num_residual_blocks=1,2", multirun=True, samples=samples_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(path.name for path in (tmp_path / "outputs").iterdir() if (path / "checkpoints").is_dir())
    assert len(runs) == 2 and all(name.startswith("alef-data.batch_size=4") for name in runs)
    blocks = set()
    for name in runs:
        assert (tmp_path / "outputs" / name / "checkpoints" / "last.ckpt").is_file()
        (overrides,) = (tmp_path / "outputs" / name).glob("runs/*/.hydra/overrides.yaml")
        blocks |= {line for line in overrides.read_text().splitlines() if "num_residual_blocks" in line}
    assert blocks == {"- model.generator.num_residual_blocks=1", "- model.generator.num_residual_blocks=2"}


def test_paper_recipe_with_gan_loss_and_wandb_offline_never_stores_secrets(tmp_path, samples_dir):
    secrets = {"WANDB_API_KEY": "wandb-secret-0123456789", "FLICKR_API_KEY": "flickr-secret-0123456789"}
    overrides = [item for item in FAST if item != "logger=none"]
    result = run_train(tmp_path, "experiment=beta", "data=samples", *overrides, "trainer.max_epochs=1",
                       samples=samples_dir, env={**secrets, "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "restored" in result.stdout
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any("wandb" in str(path) for path in written)
    for path in written:
        data = path.read_bytes()
        for secret in secrets.values():
            assert secret.encode() not in data, f"{secret} leaked into {path}"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.quality=0"], "quality 0 is out of range"),
        (["data.quality=101"], "quality 101 is out of range"),
        (["data.crop_size=4000"], "data.crop_size=4000 is larger than photo"),
        (["data=folder", "data.source.root=/no/such/folder"], "/no/such/folder does not exist"),
        (["experiment=beta"], "no prepared Flickr set"),
        (["ckpt_path=/no/such.ckpt"], "ckpt_path=/no/such.ckpt does not exist"),
        (["experiment=phi", "data=samples"], "train that experiment first"),
    ],
)
def test_bad_values_give_one_clear_line(tmp_path, samples_dir, overrides, message):
    result = run_train(tmp_path, *FAST, *overrides, samples=samples_dir)  # experiment=quick unless overridden
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def start_train(root, samples, overrides, output):
    """train.py in the background, as a process to signal."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    (root / "data").mkdir()
    (root / "data" / "samples").symlink_to(samples)
    env = {**os.environ, "DEQUANTIZER_ROOT": str(root)}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *overrides], cwd=root, env=env, stdout=output,
                            stderr=subprocess.STDOUT, text=True)


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes_mid_epoch(tmp_path, samples_dir):
    import signal
    import subprocess
    import time

    overrides = [*QUICK, "data.samples_per_epoch=2000", "trainer.max_epochs=1", "test=false"]
    process = start_train(tmp_path, samples_dir, overrides, subprocess.PIPE)
    seen = ""
    deadline = time.time() + 120
    while "val crops" not in seen and time.time() < deadline:  # the data is ready, training starts
        seen += process.stdout.read(1)
    time.sleep(8)
    process.send_signal(signal.SIGTERM)
    output = seen + process.communicate(timeout=120)[0]
    assert "SIGTERM: saved" in output, output[-2000:]
    (run_dir,) = [path for path in (tmp_path / "outputs").iterdir() if path.is_dir()]
    saved = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert 0 < saved["global_step"] < 500  # mid-epoch
    rerun = run_train(tmp_path, *overrides, samples=samples_dir)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    finished = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert finished["global_step"] == 500  # the epoch was completed, not restarted


def test_ddp_with_two_cpu_processes(tmp_path, samples_dir):
    """trainer=ddp runs (gloo on CPU here; NCCL on GPUs), metrics synced, one table printed by rank 0."""
    result = run_train(tmp_path, "experiment=alef", "data=samples", *FAST, "trainer=ddp", "trainer.accelerator=cpu",
                       "trainer.devices=2", "trainer.sync_batchnorm=false", "trainer.max_epochs=1",
                       samples=samples_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("held-out crops") == 1
    assert "world_size: 2" in result.stdout + result.stderr or "Initializing distributed: GLOBAL_RANK: 1" in (
        result.stdout + result.stderr)
    (run_dir,) = [path for path in (tmp_path / "outputs").iterdir() if path.is_dir()]
    # 8 crops over 2 ranks of batch 4: one batch per rank, i.e. one D step and one G step
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2


def test_optuna_search_runs_two_trials(tmp_path, samples_dir):
    result = run_train(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2", *FAST, "trainer.max_epochs=1",
                       "test=false", multirun=True, samples=samples_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Best value:" in output and output.count("#0 :") == 1 and output.count("#1 :") == 1
    assert (tmp_path / "outputs" / "optimization_results.yaml").is_file()


def test_slurm_launcher_config_composes(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "hydra/launcher=slurm", "trainer=gpu", "experiment=beta",
         "--cfg", "hydra"],
        capture_output=True, text=True, cwd=tmp_path, env={"DEQUANTIZER_ROOT": str(tmp_path), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "SlurmLauncher" in result.stdout and "max_num_timeout: 20" in result.stdout


def test_sigkill_mid_epoch_then_rerun_resumes_from_last_epoch(tmp_path, samples_dir):
    import signal
    import subprocess
    import time

    overrides = [*QUICK, "data.samples_per_epoch=800", "trainer.max_epochs=2", "test=false"]
    process = start_train(tmp_path, samples_dir, overrides, subprocess.DEVNULL)
    deadline = time.time() + 180
    while not list(tmp_path.glob("outputs/*/checkpoints/last.ckpt")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # into epoch 1
    process.send_signal(signal.SIGKILL)
    process.wait()
    (last,) = tmp_path.glob("outputs/*/checkpoints/last.ckpt")
    assert read_checkpoint(last)["global_step"] == 200  # intact: epoch 0's state, never half-written
    rerun = run_train(tmp_path, *overrides, samples=samples_dir)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert read_checkpoint(last)["global_step"] == 400


def test_resumed_training_continues_the_random_stream(tmp_path, samples_dir):
    """1 epoch + resume to 2 ends with the same weights as 2 epochs straight: data, RNG and optimizers restored."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for root in (straight, resumed):
        root.mkdir()
    args = [*QUICK, "trainer.precision=32-true", "test=false", "trainer.deterministic=true", "model.scheduler=null"]
    assert run_train(straight, *args, "trainer.max_epochs=2", samples=samples_dir).returncode == 0
    assert run_train(resumed, *args, "trainer.max_epochs=1", samples=samples_dir).returncode == 0
    assert run_train(resumed, *args, "trainer.max_epochs=2", samples=samples_dir).returncode == 0
    (a,) = straight.glob("outputs/*/checkpoints/last.ckpt")
    (b,) = resumed.glob("outputs/*/checkpoints/last.ckpt")
    state_a, state_b = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    for key in state_a:
        if key.startswith("generator."):
            assert torch.equal(state_a[key], state_b[key]), key

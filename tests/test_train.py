"""train.py end to end, as a user runs it: overfit, resume, multirun, errors, secrets."""

import csv
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import FAST, QUICK, ROOT, run_train, train_environment

pytestmark = pytest.mark.slow  # every test here starts train.py


def read_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_callback_state(checkpoint):
    """The state of the best-val/psnr ModelCheckpoint stored in a checkpoint."""
    return next(state for key, state in checkpoint["callbacks"].items() if "val/psnr" in key)


def test_training_with_torch_jpeg_pairs(tmp_path, samples_dir):
    """data.jpeg=torch: the workers only crop and Lightning hands the batch to the DataModule, after the transfer,
    to be compressed (double JPEGs and other subsamplings among them); the run trains and validates as with Pillow."""
    result = run_train(tmp_path, *QUICK, "data.jpeg=torch", "data.num_workers=1", "trainer.max_epochs=1",
                       "data.double_fraction=0.5", "data.other_subsampling_fraction=0.5", "test=false",
                       samples=samples_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val PSNR" in result.stderr + result.stdout


def test_overfit_rises_above_the_jpeg_input(tmp_path, samples_dir):
    # Quality 5 and 8 crops a photo: there the gain stands well above the noise of a few crops; at quality 10 it was
    # too close to the 0.1 dB asked for to pass every time.
    result = run_train(tmp_path, "experiment=quick", "debug=overfit", "data.crop_size=32", "data.batch_size=8",
                       "data.quality=5", "data.val_crops_per_photo=8", samples=samples_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [row for path in tmp_path.glob("outputs/*/runs/*/csv/version_0/metrics.csv")
            for row in csv.DictReader(path.open()) if row.get("val/psnr")]
    psnr = [float(row["val/psnr"]) for row in rows]
    jpeg = float(rows[0]["val/psnr_jpeg"])
    assert len(psnr) == 30
    assert psnr[-1] > psnr[0] and psnr[-1] > jpeg + 0.1, (psnr, jpeg)
    assert "JPEG input" in result.stdout and "comparison image" in result.stdout
    # the table is computed on photos that neither trained nor picked best.ckpt, and says so
    assert "test split: 4 held-out photos, never trained on, never used to pick best.ckpt" in result.stdout
    assert list(tmp_path.glob("outputs/*/runs/*/comparison.png"))
    assert list(tmp_path.glob("outputs/*/runs/*/csv/version_0/images/val_epoch000.png"))

    # the trained generator exported as a user would ship it, with the facts of its run
    from dequantizer.cli import main
    from dequantizer.weights import read_metadata

    (best,) = tmp_path.glob("outputs/*/checkpoints/best.ckpt")
    assert main(["export", str(best), str(tmp_path / "quick.safetensors"), "--command", "python train.py"]) == 0
    metadata = read_metadata(tmp_path / "quick.safetensors")
    assert metadata["qualities"] == 5 and metadata["experiment"] == "quick"
    assert metadata["command"] == "python train.py"
    assert metadata["training_data"] == "scikit-image's sample photos"  # in words, not a class name
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

    # one line per epoch on stdout (a pipe here, as under nohup or SLURM) and in the run's train.log
    (first_log,) = run_dir.glob("runs/*/train.log")
    epoch_line = r"epoch {}/{}, step {}: loss g [0-9.e-]+, pixel [0-9.e-]+ \| val PSNR [0-9.]+ dB, JPEG [0-9.]+ " \
                 r"\([+-][0-9.]+\) \| [0-9.]+ s, [0-9.]+ images/s"
    assert re.search(epoch_line.format(1, 1, 2), first.stdout), first.stdout[-2000:]
    assert re.search(epoch_line.format(1, 1, 2), first_log.read_text())

    second = run_train(tmp_path, *QUICK, "trainer.max_epochs=3", "test=false", samples=samples_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [int(n) for n in re.findall(r"^.*epoch (\d)/3, step", second.stdout, re.MULTILINE)] == [2, 3]
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
    # the validation grid W&B stored has the photos' pixels, not a black image of 0s and 1s
    (grid,) = tmp_path.glob("outputs/*/wandb/offline-run-*/files/media/images/val/examples_*.png")
    pixels = np.asarray(Image.open(grid))
    assert pixels.dtype == np.uint8 and pixels.max() == 255  # the white padding
    assert len(np.unique(pixels)) > 100 and 30 < pixels.mean() < 225
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
    assert not list(tmp_path.glob("outputs/*"))  # a launch that failed leaves no empty run folder behind


def test_a_run_too_short_to_validate_says_its_table_is_of_the_last_weights(tmp_path, samples_dir):
    result = run_train(tmp_path, *QUICK, "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=2",
                       samples=samples_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the weights at the end of training (no validation ran, so there is no best.ckpt)" in result.stdout
    assert "never used to pick best.ckpt" not in result.stdout and "best checkpoint:" not in result.stdout


def start_train(root, samples, overrides):
    """train.py in the background, as a process to signal, its output (stderr too) a stream of lines to wait on."""
    (root / "data").mkdir()
    (root / "data" / "samples").symlink_to(samples)
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *overrides], cwd=root,
                            env=train_environment(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_line(process, text):
    """Read the process's output until a line holds ``text``; fail, saying what was awaited, if it ends first."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    process.wait()
    pytest.fail(f"train.py ended (exit {process.returncode}) before printing {text!r}:\n" + "".join(seen)[-3000:])


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes_mid_epoch(tmp_path, samples_dir):
    overrides = [*QUICK, "data.samples_per_epoch=40", "trainer.max_epochs=1", "test=false"]
    probe = ["+callbacks.probe._target_=probes.PauseAt", "+callbacks.probe.epoch=0", "+callbacks.probe.batch=5"]
    process = start_train(tmp_path, samples_dir, overrides + probe)
    seen = wait_for_line(process, "probe: paused after epoch 0 batch 5")
    process.send_signal(signal.SIGTERM)
    output = seen + process.communicate()[0]
    assert "SIGTERM: saved" in output, output[-2000:]
    (run_dir,) = [path for path in (tmp_path / "outputs").iterdir() if path.is_dir()]
    saved = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 6  # the step in flight finished, then the checkpoint was saved mid-epoch
    rerun = run_train(tmp_path, *overrides, samples=samples_dir)  # callbacks are not part of the run's name
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    finished = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert finished["global_step"] == 10  # the epoch was completed, not restarted


def test_ddp_with_two_cpu_processes(tmp_path, samples_dir):
    """trainer=ddp runs (gloo on CPU here; NCCL on GPUs), metrics synced, one table printed by rank 0."""
    result = run_train(tmp_path, "experiment=alef", "data=samples", *FAST, "trainer=ddp", "trainer.accelerator=cpu",
                       "trainer.devices=2", "trainer.sync_batchnorm=false", "trainer.max_epochs=1",
                       samples=samples_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test split:") == 1 and result.stdout.count("JPEG input") == 1
    assert "world_size: 2" in result.stdout + result.stderr or "Initializing distributed: GLOBAL_RANK: 1" in (
        result.stdout + result.stderr)
    (run_dir,) = [path for path in (tmp_path / "outputs").iterdir() if path.is_dir()]
    # 8 crops over 2 ranks of batch 4: one batch per rank, one step (a D step and a G step)
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 1


def test_ddp_a_non_finite_loss_on_one_rank_skips_the_step_on_every_rank(tmp_path, samples_dir):
    """Both ranks skip (a rank skipping alone would leave the other in the gradient all-reduce forever), and both
    stop at the same batch with one line."""
    overrides = ["experiment=alef", "data=samples", *FAST, "trainer=ddp", "trainer.accelerator=cpu",
                 "trainer.devices=2", "trainer.sync_batchnorm=false", "trainer.max_epochs=1",
                 "data.samples_per_epoch=32", "model.max_nonfinite_steps=3",
                 "+callbacks.poison._target_=probes.PoisonRank", "+callbacks.poison.rank=1"]
    try:  # a short run; the failure it guards against is a hang
        result = run_train(tmp_path, *overrides, samples=samples_dir, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail("train.py under DDP did not end in 900 s: a rank is waiting for the other (the skip is not "
                    "collective)")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: non-finite losses in 3 batches in a row: training stopped, the last good checkpoint "
                      "is left as it was; lower the learning rate or set model.clip_gradients, then rerun to resume"]
    # rank 0, whose own losses were finite, skipped too: D's and G's steps, counted
    output = result.stdout + result.stderr
    for batch in range(3):
        assert f"non-finite discriminator and generator loss at epoch 0, batch {batch}: step skipped" in output


def test_optuna_search_runs_two_trials(tmp_path, samples_dir):
    result = run_train(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2", *FAST, "trainer.max_epochs=1",
                       "test=false", multirun=True, samples=samples_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Best value:" in output and output.count("#0 :") == 1 and output.count("#1 :") == 1
    assert (tmp_path / "outputs" / "optimization_results.yaml").is_file()


def test_slurm_launcher_config_composes(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "hydra/launcher=slurm", "trainer=gpu", "experiment=beta",
         "--cfg", "hydra"],
        capture_output=True, text=True, cwd=tmp_path, env={"DEQUANTIZER_ROOT": str(tmp_path), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "SlurmLauncher" in result.stdout and "max_num_timeout: 20" in result.stdout


def test_sigkill_mid_epoch_then_rerun_resumes_from_last_epoch(tmp_path, samples_dir):
    overrides = [*QUICK, "data.samples_per_epoch=40", "trainer.max_epochs=2", "test=false"]
    probe = ["+callbacks.probe._target_=probes.PauseAt", "+callbacks.probe.epoch=1", "+callbacks.probe.batch=3"]
    process = start_train(tmp_path, samples_dir, overrides + probe)
    wait_for_line(process, "probe: paused after epoch 1 batch 3")
    process.send_signal(signal.SIGKILL)
    process.communicate()
    (last,) = tmp_path.glob("outputs/*/checkpoints/last.ckpt")
    assert read_checkpoint(last)["global_step"] == 10  # intact: epoch 0's state, never half-written
    rerun = run_train(tmp_path, *overrides, samples=samples_dir)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert read_checkpoint(last)["global_step"] == 20


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

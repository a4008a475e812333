"""Train a dequantizer: `python train.py experiment=beta` (see README for the rest).

compose config -> build data, model, callbacks, loggers, trainer -> fit (resuming from the run's last.ckpt) ->
evaluate the best checkpoint on the held-out test split -> print the JPEG vs restored table. Returns the best val PSNR
for Hydra sweepers.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("DEQUANTIZER_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

import dequantizer.config  # noqa: E402,F401  (registers the config resolvers)
from dequantizer.errors import DequantizerError  # noqa: E402

log = logging.getLogger("dequantizer")
attempt_trainer: L.Trainer | None = None  # this attempt's: a run that failed after it took steps keeps its folder


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``ckpt_path``, else the run's last.ckpt when ``resume`` is on."""
    if cfg.ckpt_path:
        if not Path(cfg.ckpt_path).is_file():
            raise DequantizerError(f"ckpt_path={cfg.ckpt_path} does not exist")
        return str(cfg.ckpt_path)
    checkpoint_dir = Path(cfg.paths.checkpoint_dir)
    last = checkpoint_dir / "last.ckpt"
    if cfg.resume and last.is_file():
        log.info("resuming from %s (resume=false to start over)", last)
        return str(last)
    if not cfg.resume and checkpoint_dir.is_dir():
        # Starting over: keep the old checkpoints, out of the way.
        aside = checkpoint_dir.with_name(f"checkpoints-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(checkpoint_dir, aside)
        log.info("resume=false: moved the previous checkpoints to %s", aside)
        (Path(cfg.paths.run_dir) / "wandb_run_id").unlink(missing_ok=True)
    return None


def print_summary(results: dict[str, float], part: str, photos: int, image_path: Path | None,
                  best_checkpoint: str) -> None:
    """The JPEG vs restored table, headed by the split it was computed on and the weights it measured."""
    if not best_checkpoint:
        title = (f"{part} split: {photos} photos, never trained on; the weights at the end of training (no validation "
                 "ran, so there is no best.ckpt)")
    elif part == "test":
        title = f"test split: {photos} held-out photos, never trained on, never used to pick best.ckpt"
    else:
        title = f"val split: {photos} photos, which also picked best.ckpt (split.json has no test part)"
    rows = [
        ("JPEG input", results["psnr_jpeg"], results["ssim_jpeg"]),
        ("restored", results["psnr"], results["ssim"]),
    ]
    lines = [title, f"{part + ' crops':<16}{'PSNR (dB)':>11}{'SSIM':>9}"]
    lines += [f"{name:<16}{psnr:>11.3f}{ssim:>9.4f}" for name, psnr, ssim in rows]
    lines.append(
        f"{'gain':<16}{results['psnr'] - results['psnr_jpeg']:>+11.3f}{results['ssim'] - results['ssim_jpeg']:>+9.4f}"
    )
    if image_path:
        lines.append(f"comparison image (JPEG | restored | original): {image_path}")
    if best_checkpoint:
        lines.append(f"best checkpoint: {best_checkpoint}")
    print("\n" + "\n".join(lines), flush=True)


def train(cfg: DictConfig) -> float | None:
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    ckpt_path = resume_checkpoint(cfg)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, loss=cfg.loss)
    callbacks = [instantiate(callback) for callback in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(logger) for logger in (cfg.get("logger") or {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        # The composed config; secrets are never in it (API keys are read from the environment in code).
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    global attempt_trainer
    attempt_trainer = trainer
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    best_checkpoint = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    best_score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None

    image_path = None
    if cfg.test:
        trainer.test(model, datamodule=datamodule, ckpt_path=best_checkpoint or None, weights_only=True)
        if model.example_grid is not None and trainer.is_global_zero:
            from torchvision.transforms.functional import to_pil_image

            from dequantizer.images import save_image_atomic

            image_path = Path(cfg.paths.output_dir) / "comparison.png"
            save_image_atomic(to_pil_image(model.example_grid), image_path)
    for logger in loggers:
        if hasattr(logger.experiment, "finish"):
            logger.experiment.finish()  # one W&B run per multirun job
    if cfg.test and trainer.is_global_zero:
        print_summary(model.test_results, datamodule.test_part, datamodule.test_photos, image_path, best_checkpoint)
    return float(best_score) if best_score is not None else None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except Exception as error:
        # Hydra's instantiate wraps our errors: find the user-facing one in the chain, else it is a bug.
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, DequantizerError):
            cause = cause.__cause__
        if cause is None:
            raise
        # Under DDP every rank stops with the same error: one of them says it.
        trained = attempt_trainer is not None and attempt_trainer.global_step > 0
        if rank_zero_only.rank == 0 and not trained:
            remove_empty_attempt(Path(cfg.paths.output_dir))
            print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)


def remove_empty_attempt(attempt: Path) -> None:
    """A launch that failed before it trained leaves no folder behind: its attempt folder, which holds only Hydra's
    saved config and log, and the run's folders above it where that leaves them empty."""
    if not attempt.is_dir() or any(path.name not in (".hydra", "train.log") for path in attempt.iterdir()):
        return
    shutil.rmtree(attempt)
    for folder in (attempt.parent, attempt.parent.parent):  # runs/, then the run's own folder
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


if __name__ == "__main__":
    main()

"""Experiment tracking: the W&B logger, offline unless the user is logged in or asks for online mode."""

from __future__ import annotations

import netrc
import os
import uuid
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

RUN_ID_FILE = "wandb_run_id"


def wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it). The key itself is never read out."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(project: str, name: str, save_dir: str, group: str | None = None) -> WandbLogger:
    """A WandbLogger whose run resumes with the training run: its id is kept in ``save_dir``.

    Mode: WANDB_MODE if set (online, offline, disabled), else online when logged in, else offline.
    """
    mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    directory = Path(save_dir)
    directory.mkdir(parents=True, exist_ok=True)
    id_file = directory / RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id + "\n")
    return WandbLogger(
        project=project,
        name=name,
        group=group,
        save_dir=str(directory),
        id=run_id,
        mode=mode,
        offline=mode == "offline",
    )

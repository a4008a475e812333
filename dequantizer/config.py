"""OmegaConf resolvers the Hydra configs use. Importing this module registers them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from omegaconf import OmegaConf

# Overrides that do not change what is trained (how and where it runs, what it logs and reports): kept out of run
# names, so a rerun with any of them resumes the same run. A key is matched with everything below it.
NOT_IN_RUN_NAME = ("experiment", "resume", "ckpt_path", "test", "trainer", "logger", "callbacks", "paths", "hydra",
                   "data.num_workers", "data.pin_memory")


def changes_training(override: str) -> bool:
    """Whether a command-line override (``key=value``, ``+key=value``, ``group=option``) changes what is trained."""
    key = override.split("=", 1)[0].lstrip("+~")
    return not any(key == name or key.startswith((name + ".", name + "/")) for name in NOT_IN_RUN_NAME)


def run_name(experiment: str, overrides: Iterable[str] = ()) -> str:
    """The stable name of a run: the experiment, plus the overrides that change what it trains, sorted.

    It names the run's directory (checkpoints, W&B), so the same command resumes the same run and jobs of a multirun
    never share one. Path separators are replaced; very long names are shortened with a hash.
    """
    kept = sorted(override for override in overrides if changes_training(override))
    name = f"{experiment}-{','.join(kept)}" if kept else experiment
    name = name.replace("/", "_").replace("\\", "_")
    if len(name) > 150:
        name = f"{name[:130]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return name


OmegaConf.register_new_resolver("run_name", run_name, replace=True)

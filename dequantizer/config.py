"""OmegaConf resolvers the Hydra configs use. Importing this module registers them."""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf


def run_name(experiment: str, overrides: str = "") -> str:
    """The stable name of a run: the experiment, plus the overrides that change what it trains.

    It names the run's directory (checkpoints, W&B), so the same command resumes the same run and jobs of a multirun
    never share one. Path separators are replaced; very long names are shortened with a hash.
    """
    name = experiment if not overrides else f"{experiment}-{overrides}"
    name = name.replace("/", "_").replace("\\", "_")
    if len(name) > 150:
        name = f"{name[:130]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return name


OmegaConf.register_new_resolver("run_name", run_name, replace=True)

"""The Hydra configs (conf/): every experiment composes and instantiates, the paper's four and our recipes of them, the
stages of the shipped models chain from one to the next, what names a run, and the README's training commands."""

import re
import subprocess
import sys
from itertools import pairwise

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dequantizer.data import FlickrPhotos
from helpers import EXPERIMENTS, ROOT, compose_config


def test_the_paper_experiments_exist():
    assert {"alef", "beta", "gimel", "phi"} <= set(EXPERIMENTS)


def test_experiment_blind_is_the_shipped_default_models_recipe(tmp_path):
    cfg = compose_config(["experiment=blind"], tmp_path)
    assert cfg.experiment_name == "blind" and cfg.model.generator._target_ == "dequantizer.models.QualityUNet"
    assert list(cfg.data.quality) == [1, 100]


def numbered_stages(model: str) -> list[str]:
    """conf/experiment/<model>/<n>_*.yaml in stage order: the recipes that made a shipped model, one after another."""
    stages = [name for name in EXPERIMENTS if re.fullmatch(rf"{model}/\d+_\w+", name)]
    return sorted(stages, key=lambda name: int(name.split("/")[1].split("_")[0]))


@pytest.mark.parametrize("model", ["blind", "blind_v1"])
def test_each_stage_starts_from_the_run_of_the_stage_before(model, tmp_path):
    stages = numbered_stages(model)
    assert len(stages) >= 2
    assert compose_config([f"experiment={stages[0]}"], tmp_path).model.init_from is None
    for before, stage in pairwise(stages):
        run = tmp_path / "outputs" / before.replace("/", "-")  # the run directory of the stage before
        init_from = compose_config([f"experiment={stage}"], tmp_path).model.init_from
        assert init_from in (str(run / "checkpoints" / "best.ckpt"), f"{run}.safetensors"), (stage, init_from)


def test_the_next_gpu_stage_starts_from_the_shipped_weights(tmp_path):
    cfg = compose_config(["experiment=blind/continue_gpu"], tmp_path)
    shipped = ROOT / "dequantizer" / "pretrained" / "blind.safetensors"
    assert cfg.model.init_from == str(tmp_path / shipped.relative_to(ROOT)) and shipped.is_file()


def test_the_experiments_that_remake_the_shipped_models_exist():
    script = (ROOT / "experiments" / "shipped_models.sh").read_text().replace("$name", "{name}")
    named = set()
    for name in re.findall(r"(?:experiment=|--experiment )([\w/{}]+)", script):
        named |= {name.format(name=paper) for paper in ("alef", "beta", "gimel", "phi")}
    assert len(named) > 10 and named <= set(EXPERIMENTS), sorted(named - set(EXPERIMENTS))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", "loss.content.pretrained=false", "logger=csv"], tmp_path)
    name = experiment.replace("/", "-")
    assert cfg.experiment_name == name and cfg.run_name == f"{name}-loss.content.pretrained=false"
    for key in ("data.quality", "data.batch_size", "data.crop_size", "model.generator._target_",
                "loss.content.pretrained", "ckpt_path", "seed"):
        OmegaConf.select(cfg, key, throw_on_missing=True)
    data = instantiate(cfg.data)
    assert data.crop_size == cfg.data.crop_size and data.batch_size == cfg.data.batch_size
    model = instantiate(cfg.model, loss=cfg.loss)
    # the generator built is the one named, and it restores a crop to its own size
    assert cfg.model.generator._target_.endswith("." + type(model.generator).__name__)
    crop = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        restored = model.generator(crop, torch.tensor([50]))  # told the quality (the paper's generator ignores it)
    assert restored.shape == crop.shape
    callbacks = [instantiate(callback) for callback in cfg.callbacks.values()]
    loggers = [instantiate(logger) for logger in cfg.logger.values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    assert trainer.checkpoint_callback.dirpath == str(tmp_path / "outputs" / cfg.run_name / "checkpoints")


@pytest.mark.parametrize(
    "experiment, quality, blocks",
    [("alef", 1, 5), ("beta", 50, 5), ("gimel", 1, 10), ("phi", 50, 10)],
)
def test_paper_recipes(experiment, quality, blocks, tmp_path):
    cfg = compose_config([f"experiment={experiment}"], tmp_path)
    assert cfg.data.quality == quality and cfg.model.generator.num_residual_blocks == blocks
    assert cfg.data.batch_size == 16 and cfg.data.crop_size == 96 and cfg.trainer.max_epochs == 50
    assert cfg.model.generator.num_upsample_blocks == 0 and not cfg.model.generator.image_residual
    assert cfg.model.optimizer_g.lr == 1e-4 and list(cfg.model.optimizer_g.betas) == [0.9, 0.999]
    assert cfg.loss.content.weight == 1 and cfg.loss.adversarial.weight == 1e-3 and cfg.loss.content.layer == 35
    assert cfg.data.source._target_ == f"{FlickrPhotos.__module__.rsplit('.', 1)[0]}.FlickrPhotos"
    if experiment == "phi":
        assert cfg.model.init_from == str(tmp_path / "outputs" / "gimel" / "checkpoints" / "best.ckpt")


@pytest.mark.parametrize(
    "experiment, quality, blocks",
    [("alef", 1, 5), ("beta", 50, 5), ("gimel", 1, 10), ("phi", 50, 10)],
)
def test_our_recipes_of_the_paper_experiments_train_offline(experiment, quality, blocks, tmp_path):
    cfg = compose_config([f"experiment=ours/{experiment}"], tmp_path)
    assert cfg.experiment_name == f"ours-{experiment}"
    assert cfg.data.quality == quality and cfg.model.generator.num_residual_blocks == blocks
    assert cfg.data.crop_size == 96 and cfg.data.batch_size == 16 and cfg.model.generator.channels == 64
    assert cfg.model.generator.batch_norm and cfg.model.generator.image_residual
    assert cfg.loss.pixel.weight == 1 and cfg.loss.content.weight == 0 and cfg.loss.adversarial.weight == 0
    assert cfg.data.source._target_.endswith("FolderPhotos") and cfg.data.source.root.endswith("wallpapers")
    gimel = str(tmp_path / "outputs" / "ours-gimel" / "checkpoints" / "best.ckpt")
    assert cfg.model.init_from == (gimel if experiment == "phi" else None)


def test_command_line_overrides_name_the_run(tmp_path):
    cfg = compose_config(["experiment=beta", "data=samples", "trainer.max_epochs=3", "logger=none"], tmp_path)
    assert cfg.run_name == "beta-data=samples"  # max_epochs and logger do not change what is trained
    assert cfg.data.source._target_.endswith("SamplePhotos") and cfg.data.quality == 50


def test_overrides_that_do_not_change_what_is_trained_stay_out_of_the_run_name(tmp_path):
    cfg = compose_config(
        ["experiment=beta", "model.generator.channels=8", "++trainer.limit_train_batches=20",
         "+trainer.max_time=00:01:00:00", "trainer.precision=32-true", "trainer=gpu", "hydra.verbose=true",
         "hydra/launcher=slurm", "logger=csv", "data.num_workers=0", "data.pin_memory=true", "resume=false",
         "+callbacks.extra._target_=lightning.pytorch.callbacks.Timer", "paths.log_dir=/elsewhere", "data.quality=10"],
        tmp_path,
    )
    assert cfg.run_name == "beta-data.quality=10,model.generator.channels=8"


@pytest.mark.slow  # train.py started four times
def test_cfg_job_prints_the_composed_config(tmp_path):
    for experiment in ("alef", "beta", "gimel", "phi"):
        result = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), f"experiment={experiment}", "--cfg", "job", "--resolve"],
            capture_output=True, text=True, cwd=tmp_path, env={"DEQUANTIZER_ROOT": str(tmp_path), "PATH": ""},
        )
        assert result.returncode == 0, result.stderr
        assert f"experiment_name: {experiment}" in result.stdout


def readme_train_commands() -> list[tuple[list[str], str]]:
    """The `python train.py` commands of the README's first code block: (overrides, comment)."""
    block = (ROOT / "README.md").read_text().split("```")[1].replace("\\\n", " ")
    commands = []
    for line in block.splitlines():
        command, _, comment = line.partition("#")
        words = command.split()
        if words[:2] == ["python", "train.py"]:
            commands.append(([word for word in words[2:] if word != "-m"], comment))
    return commands


def test_the_readmes_first_training_commands_run_offline_or_say_what_they_need(tmp_path):
    commands = readme_train_commands()
    assert len(commands) == 3
    for overrides, comment in commands:
        cfg = compose_config([override.split(",")[0] for override in overrides], tmp_path)
        needs_flickr = cfg.data.source._target_.endswith("FlickrPhotos")
        needs_vgg = cfg.loss.content.weight > 0 and cfg.loss.content.network._target_.endswith("VGGFeatures")
        if needs_flickr or needs_vgg:
            assert "needs" in comment and ("Flickr" in comment) == needs_flickr and ("VGG19" in comment) == needs_vgg
        else:
            assert "offline" in comment, overrides

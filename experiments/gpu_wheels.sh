#!/usr/bin/env bash
# The pure-Python packages train.py needs that the GPU machine's image lacks (it has torch, Lightning, torchmetrics,
# Pillow, scikit-image, safetensors), as wheels in .whl/ (git-ignored) to carry there (~0.4 MiB). Each call that runs
# Python there starts with:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=.:/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
rm -rf .whl && mkdir .whl
$python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl "hydra-core>=1.3,<1.4" "omegaconf>=2.3,<2.4"
$python -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3   # published as source only
ls -la .whl

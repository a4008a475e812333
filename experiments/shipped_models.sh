#!/usr/bin/env bash
# Reproduce the shipped models and their evaluation, offline, from a checkout with `make install` done.
#   bash experiments/shipped_models.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

# 1. Training photos: Debian's wallpapers, one file per scene, area-downscaled 4x (data/wallpapers/).
if [ ! -d data/wallpapers ]; then
  work=$(mktemp -d)
  (cd "$work" && apt-get download mate-backgrounds plasma-workspace-wallpapers)
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/x"; done
  python experiments/offline_photos.py "$work/x" data/wallpapers
fi

# 2. The blind default model (JPEG quality 1-95), ~45 minutes on 2 CPU cores.
python train.py experiment=blind logger=csv
dequantizer export outputs/blind/checkpoints/best.ckpt dequantizer/pretrained/blind.safetensors \
  --description "blind restorer for JPEG quality 1-95 (PSNR-oriented: L1 loss, image residual)" \
  --command "python train.py experiment=blind logger=csv" --max-quality 75  # measured: gain > 0 up to q75

# 3. Evaluation on photos never used in training: scikit-image's bundled photos (data/samples/).
python -c "from dequantizer.data import SamplePhotos; SamplePhotos('data/samples').photo_paths()"
dequantizer evaluate data/samples --quality 1 5 10 20 30 40 50 60 70 80 90 95 -o experiments/results/blind
dequantizer evaluate data/samples --square 96 --quality 1 50 -o experiments/results/blind-paper-protocol

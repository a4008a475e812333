#!/usr/bin/env bash
# Reproduce the shipped models and their evaluation, offline, from a checkout with `make install` done.
#   bash experiments/shipped_models.sh
# Times are on 2 CPU cores (bf16); a GPU runs each in minutes.
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
# Evaluation photos, never used in training: scikit-image's bundled photos (data/samples/).
python -c "from dequantizer.data import SamplePhotos; SamplePhotos('data/samples').photo_paths()"

# 2. The blind default model (JPEG quality 1-95): 5000 steps (~45 min), then 2000 more from its best (~18 min).
python train.py experiment=blind logger=csv
python train.py experiment=blind_stage2 logger=csv
dequantizer export outputs/blind_stage2/checkpoints/best.ckpt dequantizer/pretrained/blind.safetensors \
  --description "blind restorer for JPEG quality 1-95 (PSNR-oriented: L1 loss, image residual)" \
  --command "python train.py experiment=blind logger=csv && python train.py experiment=blind_stage2 logger=csv" \
  --max-quality 75  # measured: gain > 0 up to q75
dequantizer evaluate data/samples --quality 1 5 10 20 30 40 50 60 70 75 80 90 95 -o experiments/results/blind
dequantizer evaluate data/samples --square 96 --quality 1 50 -o experiments/results/blind-paper-protocol

# 3. The paper's four experiments by our recipe (conf/experiment/ours/): 15, 15, 17 and 30 minutes.
for name in alef beta gimel phi; do  # phi starts from gimel, as in the paper
  python train.py experiment=ours/$name logger=csv
done
for name in alef beta gimel phi; do
  quality=$([ "$name" = alef ] || [ "$name" = gimel ] && echo 1 || echo 50)
  from=$([ "$name" = phi ] && echo ", from gimel" || true)
  before=$([ "$name" = phi ] && echo "python train.py experiment=ours/gimel logger=csv && " || true)
  dequantizer export outputs/ours-$name/checkpoints/best.ckpt dequantizer/pretrained/$name.safetensors \
    --description "the paper's $name (JPEG quality $quality$from) trained by our recipe: paper generator + image residual, L1" \
    --command "${before}python train.py experiment=ours/$name logger=csv"
  dequantizer evaluate data/samples -m $name --square 96 --quality $quality -o experiments/results/$name-paper-protocol
  dequantizer evaluate data/samples -m $name --quality $quality -o experiments/results/$name
done

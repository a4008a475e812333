#!/usr/bin/env bash
# Reproduce the shipped models and their evaluation, offline, from a checkout with `make install` done.
#   bash experiments/shipped_models.sh
# The CPU stages take minutes to hours on 2 CPU cores (experiments/README.md has each one's time); a GPU runs each in minutes.
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
# The default model's photos: ../shared/photos + the Debian wallpapers, full size, lossless WebP, in data/photos/ (the
# split fixed in experiments/training_split.json), and the same cut into packs (~31.7 MiB) that travel to a GPU
# machine one per call (gpu_packs/, git-ignored; experiments/gpu_stage.sh). Stages 1-8 below ran before this layout:
# on the 559 photos linked from ../shared/photos then, and on the GPU on one 208-px (stages 1-2) or 168-px (stage 8)
# crop of each (`git log -p experiments/training_photos.py`).
python experiments/training_photos.py data/photos --packs gpu_packs
# Evaluation photos, never used in training: scikit-image's bundled photos (data/samples/).
python -c "from dequantizer.data import SamplePhotos; SamplePhotos('data/samples').photo_paths()"

# 2. The default model `blind` (QualityUNet, every quality): the stages of conf/experiment/blind/, each from the one
#    before (stage 7 was tried and dropped: experiments/README.md). Every run writes outputs/<run name>/ (the GPU stages
#    too: --work outputs), and each stage's fp16 export, outputs/<run name>.safetensors, is where the next one starts.
#    Stages 1-2 on one GPU (they ran on an H200; on a GPU machine, with hydra-core/omegaconf on its PYTHONPATH):
if python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  python experiments/gpu_train.py --experiment blind/1_gpu --budget 400 --photos data/photos --out outputs/gpu-stage1 \
    --work "$PWD/outputs"
  python experiments/gpu_train.py --experiment blind/2_gpu_second_cycle --budget 235 --photos data/photos \
    --out outputs/gpu-stage2 --work "$PWD/outputs"
  dequantizer export outputs/blind-2_gpu_second_cycle/checkpoints/best.ckpt outputs/blind-2_gpu_second_cycle.safetensors --half
fi
#    Stages 3-6 on the CPU (stage 4 was stopped after epoch 43 of 80: experiments/README.md):
python train.py experiment=blind/3_cpu_finetune logger=csv
dequantizer export outputs/blind-3_cpu_finetune/checkpoints/best.ckpt outputs/blind-3_cpu_finetune.safetensors --half
python train.py experiment=blind/4_charbonnier_grey logger=csv
dequantizer export outputs/blind-4_charbonnier_grey/checkpoints/best.ckpt outputs/blind-4_charbonnier_grey.safetensors --half
python train.py experiment=blind/5_psnr_loss logger=csv
dequantizer export outputs/blind-5_psnr_loss/checkpoints/best.ckpt outputs/blind-5_psnr_loss.safetensors --half
python train.py experiment=blind/6_high_qualities logger=csv
dequantizer export outputs/blind-6_high_qualities/checkpoints/best.ckpt outputs/blind-6_high_qualities.safetensors --half
#    Stage 8 on one GPU (an H200), from stage 6 (shipped as `blind` before it); it ran on one 168-px crop of each photo
#    (experiments/README.md), here on the full photos of step 1. Then stage 9, the quality head alone, on the CPU, from
#    stage 8's export.
if python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  python experiments/gpu_train.py --experiment blind/8_gpu_large_batch --batch-size 64 --budget 400 \
    --photos data/photos --out outputs/gpu-stage8 --work "$PWD/outputs"
  dequantizer export outputs/blind-8_gpu_large_batch/checkpoints/best.ckpt outputs/blind-8_gpu_large_batch.safetensors --half
fi
python train.py experiment=blind/9_quality_head logger=csv
dequantizer export outputs/blind-9_quality_head/checkpoints/last.ckpt dequantizer/pretrained/blind.safetensors --half \
  --description "blind restorer for every JPEG quality (quality-aware multi-scale U-Net, PSNR-oriented: L1, Charbonnier, then PSNR loss; image residual; quality head predicts the 0.9 quantile)" \
  --command "python experiments/gpu_train.py --experiment blind/1_gpu && ...blind/2_gpu_second_cycle (one H200) && python train.py experiment=blind/3_cpu_finetune && ...blind/4_charbonnier_grey (best of epoch 43 of 80) && ...blind/5_psnr_loss && ...blind/6_high_qualities && python experiments/gpu_train.py --experiment blind/8_gpu_large_batch --batch-size 64 --budget 400 (one H200) && python train.py experiment=blind/9_quality_head logger=csv (last.ckpt); every command: experiments/shipped_models.sh" \
  --training-data "../shared/photos (BSDS500 train, Urban100, T91: research/non-commercial use only; photographic wallpapers) + Debian wallpapers; a research artefact: see README"
dequantizer evaluate data/samples --quality 1 5 10 20 30 40 50 60 70 75 80 84 85 90 95 96 97 98 99 100 -o experiments/results/blind
dequantizer evaluate data/samples --raw --quality 1 10 20 30 50 60 65 70 75 80 85 90 95 100 -o experiments/results/blind-raw
dequantizer evaluate data/samples --square 96 --quality 1 50 -o experiments/results/blind-paper-protocol
python experiments/analyses/per_photo.py data/samples --models outputs/blind-8_gpu_large_batch.safetensors blind --quality 85 90 95 100
for model in blind blind_v1; do  # LIVE1: evaluation only; its images are never written into the project
  dequantizer evaluate ../shared/testsets/LIVE1_color -m $model --quality 10 20 30 40
done
for views in 2 4 8; do  # the self-ensemble (an option of every model: --ensemble)
  dequantizer evaluate data/samples --ensemble $views --quality 1 10 20 30 50 -o experiments/results/blind-ensemble$views
done
dequantizer evaluate data/samples --raw --ensemble 8 --quality 1 10 50 100 -o experiments/results/blind-raw-ensemble8
dequantizer evaluate ../shared/testsets/LIVE1_color --ensemble 8 --quality 10 20 30 40
dequantizer evaluate ../shared/testsets/Classic5 --ensemble 8 --quality 10 20 30 40

# 3. The previous default `blind_v1` (JPEG quality 1-95), conf/experiment/blind_v1/: 5000 steps from scratch, then
#    2000 more from its best.
python train.py experiment=blind_v1/1_from_scratch logger=csv
python train.py experiment=blind_v1/2_second_cycle logger=csv
dequantizer export outputs/blind_v1-2_second_cycle/checkpoints/best.ckpt dequantizer/pretrained/blind_v1.safetensors \
  --description "blind restorer for JPEG quality 1-95 (PSNR-oriented: L1 loss, image residual)" \
  --command "python train.py experiment=blind_v1/1_from_scratch logger=csv && python train.py experiment=blind_v1/2_second_cycle logger=csv" \
  --max-quality 75  # measured: gain > 0 up to q75
dequantizer evaluate data/samples -m blind_v1 --quality 1 5 10 20 30 40 50 60 70 75 80 90 95 -o experiments/results/blind_v1

# 4. The paper's four experiments by our recipe (conf/experiment/ours/; `phi` is ours/gimel, then ours/phi).
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

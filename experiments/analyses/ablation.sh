#!/usr/bin/env bash
# The architecture ablation of experiments/README.md: each step adds one change, all at the same training budget
# (800 steps of 16 crops of 96x96, EMA 0.995: a 0.999 EMA would still hold 45% of the starting weights; ~7 min each
# on 2 CPU cores, bf16), on the same photos (data/photos, made by
# experiments/training_photos.py), evaluated on the unseen photos (scikit-image's) at q10, q30, q50 and q90.
#   bash experiments/analyses/ablation.sh              # results in experiments/results/ablation/<step>/
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"

budget="trainer.max_epochs=8 data.samples_per_epoch=1600 data.crop_size=96 data.batch_size=16 model.ema_decay=0.995 logger=csv"
today="model/generator=srresnet +model.generator.space_to_depth=2 model.generator.channels=96
  model.generator.num_residual_blocks=8 model.generator.first_kernel_size=3 model.generator.last_kernel_size=3
  model.generator.batch_norm=false model.generator.output_activation=null model.generator.image_residual=true"
uniform="data.focus_quality=null data.grid_shift_fraction=1.0"
declare -A steps=(
  [1-today]="$today $uniform"                                               # today's network, on the new photos
  [2-unet]="model.generator.quality_aware=false $uniform"                  # + multi-scale U-Net body (blind)
  [3-quality]="$uniform"                                                    # + quality head and conditioning
  [4-on-grid]="data.focus_quality=null"                                     # + 75% of crops on the JPEG grid
  [5-focus]=""                                                              # + qualities weighted to 1-60 (recipe)
  [6-charbonnier]="loss.pixel.kind=charbonnier"                             # Charbonnier instead of L1
)
for step in $(printf '%s\n' "${!steps[@]}" | sort); do
  [ -n "${ONLY:-}" ] && [[ "$step" != $ONLY ]] && continue
  out=experiments/results/ablation/$step
  [ -f "$out/results.csv" ] && continue
  # shellcheck disable=SC2086
  python train.py experiment=blind run_name=ablation-$step test=false $budget ${steps[$step]}
  dequantizer export outputs/ablation-$step/checkpoints/best.ckpt outputs/ablation-$step.safetensors \
    --description "ablation step $step" --command "bash experiments/analyses/ablation.sh (step $step)"
  dequantizer evaluate data/samples -m outputs/ablation-$step.safetensors --quality 10 30 50 90 -o "$out"
done

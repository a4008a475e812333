#!/usr/bin/env bash
# On a GPU machine: merge the carried photo pack parts (gpu_packs/part*, from experiments/training_photos.py --packs)
# into gpu_data/photos, which git ignores, so it stays there while the machine is held and later calls train on it.
# Prints how many of the split's photos are there, so a call can tell a complete set from a machine that was renewed.
#   device call k: carry ["gpu_packs/partk"], command "bash experiments/gpu_stage.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p gpu_data/photos
for part in gpu_packs/part*/; do
  [ -d "$part" ] && cp -r "$part". gpu_data/photos/
done
have=$(find gpu_data/photos -name '*.webp' | wc -l)
want=$(python3 -c 'import json; s = json.load(open("gpu_data/photos/split.json")); print(len(s["train"]) + len(s["val"]))' \
  2>/dev/null || echo "? (part1, with split.json, not merged yet)")
echo "gpu_data/photos: $have of $want photos, $(du -sm gpu_data/photos | cut -f1) MiB"

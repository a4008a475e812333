#!/usr/bin/env bash
# bf16-mixed vs fp32 training: the same short quick run (3 epochs x 100 steps, same seed) in each precision;
# compare the held-out PSNR each prints (target: within 0.1 dB). Run names differ, so neither resumes the other.
set -euo pipefail
cd "$(dirname "$0")/../.."
for precision in bf16-mixed 32-true; do
  /usr/bin/time -f "$precision: %e s" .venv/bin/python train.py experiment=quick trainer.max_epochs=3 \
    trainer.precision=$precision logger=csv resume=false 2>&1 | grep -E "^(JPEG input|restored|gain)|: [0-9.]+ s$"
done

#!/usr/bin/env bash
# The quality curve that two CPU cores cannot run: more views per branch and higher
# resolution, a larger cohort, the 5-fold ensemble with test-time augmentation, and the
# external site, on one CUDA device (about 2 hours on one H100 with 16 cores; 8 GB of disk
# at 24 views of 256 px). Each point prints the single model and the ensemble side by side
# against issue 38's goals; paste the tables into docs/benchmarks.md with the device name.
# Usage: benchmarks/gpu_quality.sh [points]   (from the repository root, with .venv installed)
#   points: "views:px:patients ..." (default "8:128:600 24:256:600 24:256:1200")
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -lt 1 ]; then
  echo "no CUDA device: nothing to run"; exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
for point in ${1:-8:128:600 24:256:600 24:256:1200}; do
  IFS=: read -r views px patients <<<"$point"
  echo "== $views views of $px px, $patients patients"
  "$PY" benchmarks/model_quality.py --views "$views" --raw-size "$px" --image-size "$px" \
    --patients "$patients" --validation 0.1 --test 0.2 --epochs 24 \
    --ensemble 5 --tta flip --external --work "data/benchmarks/gpu-$views-$px-$patients"
done

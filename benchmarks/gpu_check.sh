#!/usr/bin/env bash
# GPU check in under 8 minutes: two epochs of the real training loop at 224 and 512 px (AMP,
# channels_last) on one device, then on every device through torchrun (DDP over nccl) when
# there are two or more. Put the printed figures in docs/benchmarks.md.
# Usage: benchmarks/gpu_check.sh   (from the repository root, with .venv installed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
devices=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
if [ "$devices" -lt 1 ]; then echo "no CUDA device: nothing to check"; exit 1; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "== one device"
timeout 300 "$PY" benchmarks/gpu_check.py --device cuda
if [ "$devices" -ge 2 ]; then
  echo "== $devices devices, DDP over nccl"
  timeout 150 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$devices" \
    benchmarks/gpu_check.py --device cuda --sizes 512
fi

#!/usr/bin/env bash
# One prepared GPU benchmark for a lent machine (<= 8 minutes): resnet50 training img/s at 224 px,
# ours vs a plain PyTorch loop with torchvision's resnet50, and Fashion-MNIST time to 94 %.
# The device image has python3 with torch/torchvision; the data travel in .data/ (see BENCHMARKS.md):
#   mkdir -p .data && cp /usr/share/datasets/fashion-mnist/*.gz .data/ && echo /.data/ >> .git/info/exclude
#   device run: bash benchmarks/gpu.sh   (carry: .data)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src RESNET_DATA="${RESNET_DATA:-$PWD/.data}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
OUT="${OUT:-benchmarks/results}"
timeout 470 python3 benchmarks/gpu_train.py --out "$OUT/gpu.json"

#!/usr/bin/env bash
# Build optimum's environment (issue #34): a virtualenv of its own (default .venv-optimum at the repository root,
# git-ignored), because optimum-onnx 0.1.0 (its newest release) pins transformers < 4.58 while pitome_hf needs
# transformers 5. It runs scripts/optimum_check.py: optimum's ORTModelForImageClassification and transformers'
# pipeline on a folder written by `pitome-hf export` (with our own venv), as a user of optimum would load it.
#
#     bash scripts/setup_optimum_env.sh                 # .venv-optimum
#     bash scripts/setup_optimum_env.sh /path/to/venv   # elsewhere
#
# What is installed, and why:
#   torch==2.13.0                     first, the CPU build ours runs (nothing after it may replace it: every step
#                                     below is dry-run first and refused if its plan holds torch, torchvision or an
#                                     nvidia-* package). optimum's pipeline() imports torch.
#   optimum-onnx[onnxruntime]==0.1.0  ORTModelFor... (brings optimum 2.1, onnx, onnxruntime)
#   transformers==4.57.6              the last 4.x, inside optimum-onnx's pin (< 4.58)
#   pillow                            the image processor reads PIL images
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-optimum}"
# shellcheck source=scripts/side_env.sh
source "$ROOT/scripts/side_env.sh"  # the venv, pip_quiet, safe_install, install_torch

install_torch
safe_install "optimum-onnx[onnxruntime]==0.1.0" "transformers==4.57.6" pillow
"$VENV/bin/python" -c "import torch, transformers, optimum.onnxruntime, onnxruntime; print('torch', torch.__version__, 'transformers', transformers.__version__, 'onnxruntime', onnxruntime.__version__)"

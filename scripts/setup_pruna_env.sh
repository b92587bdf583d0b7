#!/usr/bin/env bash
# Build Pruna's environment for scripts/tome_vs_pruna.py (issue #36): a virtualenv of its own (default .venv-pruna at
# the repository root, git-ignored), because Pruna's token merging (pruna==0.3.4, pruna/algorithms/token_merging.py)
# needs transformers < 5 while pitome_hf needs transformers 5.
#
#     bash scripts/setup_pruna_env.sh                 # .venv-pruna
#     bash scripts/setup_pruna_env.sh /path/to/venv   # elsewhere (then: tome_vs_pruna.py --pruna-python PATH/bin/python)
#
# What is installed, and why:
#   torch==2.13.0            first, the CPU build ours runs (nothing after it may replace it: every step below is
#                            dry-run first and refused if its plan contains torch, torchvision or an nvidia-* package)
#   transformers==4.57.6     the last 4.x: Pruna's ToMeViTLayer/ToMeViTSelfAttention subclass its ViT modules
#                            (brings huggingface_hub 0.36, tokenizers, safetensors, numpy, ...)
#   pruna==0.3.4 --no-deps   its declared requirements (diffusers, torchvision, bitsandbytes, openvino, datasets,
#                            pytorch-lightning, torchao, opentelemetry, ... 35 in all) are not needed by token_merging
#   configspace              Pruna's SmashConfig and the algorithm's hyperparameters are ConfigSpace objects
#   colorama                 Pruna's logger
#   importlib_metadata       pruna/__init__.py reads its version with it
#   pillow                   pruna.data imports PIL.Image at module level
#
# What is not installed: `import pruna` also imports, at module level, datasets, torchvision, pytorch_lightning,
# diffusers, accelerate, opentelemetry, peft, trl and jaxtyping (its data modules, diffusion helpers, telemetry, LoRA
# recovery), none of which its token_merging algorithm uses. scripts/tome_vs_pruna.py (_import_pruna) gives each of
# those that is missing an inert placeholder module before `import pruna`, and switches Pruna's telemetry off
# (PRUNA_METRICS_ENABLED=false). Pruna's code itself runs unchanged: smash(model, SmashConfig({"token_merging":
# {"r": r}})) swaps the ViT layers' classes for Pruna's and wraps the model.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-pruna}"
PIP_NOISE="dependency resolver|^pruna .* requires"  # --no-deps conflict reports
# shellcheck source=scripts/side_env.sh
source "$ROOT/scripts/side_env.sh"  # the venv, pip_quiet, safe_install, install_torch

install_torch
safe_install "transformers==4.57.6"
safe_install --no-deps "pruna==0.3.4"
safe_install configspace colorama importlib_metadata pillow "transformers==4.57.6"
"$VENV/bin/python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
"$VENV/bin/python" "$ROOT/scripts/tome_vs_pruna.py" --import-only

#!/usr/bin/env bash
# Time to first token of the Qwen3 families on CPU (issue #33): Qwen3-VL-2B and Qwen3.5-2B(-like) shapes with 4
# language-model layers, random weights, one 448 x 448 image and a short video (2 temporal patches = 4 frames of
# 448 x 448; budgets per temporal patch), unreduced vs PiToMe vs ToMe vs VisionZip-style vs DivPrune vs DART at 64,
# 128 and 192 visual tokens, side by side in one run each (measured/ideal, peak memory per row, the FLOPs check).
# One job at a time on a quiet machine: about an hour on 2 CPU cores. Into out/qwen3/.
#   bash scripts/measure_qwen3_ttft.sh                 # all four runs
#   bash scripts/measure_qwen3_ttft.sh qwen3_vl_image  # one of them
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/qwen3}
mkdir -p "$OUT"
COMMON="--lm-layers 4 --image-size 448 --visual-tokens 64 128 192 --keep-ratios 0.5 --warmup 1 --repeats 3"
declare -A RUNS=(
  [qwen3_vl_image]="qwen3_vl --shapes Qwen3-VL-2B $COMMON"
  [qwen3_vl_video]="qwen3_vl --shapes Qwen3-VL-2B $COMMON --video-frames 2"
  [qwen3_5_image]="qwen3_5 $COMMON"
  [qwen3_5_video]="qwen3_5 $COMMON --video-frames 2"
)
for tag in ${@:-qwen3_vl_image qwen3_vl_video qwen3_5_image qwen3_5_video}; do
  echo "=== pitome-hf benchmark ${RUNS[$tag]}"
  # shellcheck disable=SC2086
  $PY -m pitome_hf.cli benchmark ${RUNS[$tag]} --json "$OUT/$tag.json" 2>>"$OUT/progress.log" | tee "$OUT/$tag.md"
done

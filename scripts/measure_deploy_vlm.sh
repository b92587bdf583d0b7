#!/usr/bin/env bash
# Re-measure the README's ONNX Runtime and vision-language figures, one job at a time (timings need a quiet machine),
# into out/readme/ (also run at the end of scripts/measure_readme.sh).
#   bash scripts/measure_deploy_vlm.sh            # about 35 minutes on 2 CPU cores (quiet)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/readme}
mkdir -p "$OUT"
run() { local tag=$1; shift; echo "=== $*"; "$@" 2>>"$OUT/progress.log" | tee "$OUT/$tag.md"; }
# ONNX Runtime next to eager PyTorch (#22): the embedded default at batch 64, DINOv2 ViT-S/14 at 224 px
run onnx_default $PY -m pitome_hf.cli benchmark default --modes eager onnx --keep-ratios 0.9 0.75 --repeats 100 \
  --json "$OUT/onnx_default.json"
run onnx_dinov2 $PY -m pitome_hf.cli benchmark dinov2 --modes eager onnx --keep-ratios 0.9 0.75 --batch-size 16 \
  --warmup 2 --repeats 10 --json "$OUT/onnx_dinov2.json"
run onnx_profile_default $PY scripts/profile_onnx.py --model default --batch-size 64 --ratio 0.9
run onnx_profile_dinov2 $PY scripts/profile_onnx.py --model dinov2 --batch-size 16 --ratio 0.75 --iters 10
# ONNX Runtime vs PyTorch outputs on real weights
run onnx_parity_default $PY scripts/onnx_parity.py default --json "$OUT/onnx_parity_default.json"
run onnx_parity_dinov2 $PY scripts/onnx_parity.py dinov2 --data ../shared/data/cifar10/cifar10.npz --n 256 \
  --json "$OUT/onnx_parity_dinov2.json"
# Vision-language time to first token (#21): Qwen2.5-VL-3B and LLaVA-OneVision-0.5B shapes, 4 LM layers, one image
run ttft_qwen2_5_vl $PY -m pitome_hf.cli benchmark qwen2_5_vl --lm-layers 4 --visual-tokens 64 128 192 \
  --keep-ratios 0.5 --warmup 1 --repeats 3 --json "$OUT/ttft_qwen2_5_vl.json"
run ttft_llava_onevision $PY -m pitome_hf.cli benchmark llava_onevision --lm-layers 4 --set vision_config.num_hidden_layers=4 \
  --visual-tokens 64 128 192 --keep-ratios 0.5 --methods pitome tome --visual-selections merge visionzip --warmup 1 \
  --repeats 3 --json "$OUT/ttft_llava_onevision.json"

#!/usr/bin/env bash
# GPU checks in one device call (about 8 minutes on an H200): the project's own benchmark and evaluation commands at
# GPU sizes, eager and compiled side by side, float16. Writes JSON and a log under $OUT (or ./out/gpu_check).
#
#   bash scripts/gpu_check.sh              # on the GPU machine (see ../shared/gpu/README.md for bringing wheels)
#   GPU_CHECK_TINY=1 bash scripts/gpu_check.sh   # the same commands at tiny sizes on a CPU, to test the script
#
# Rows: ViT-B/16 (batch 256), CLIP-L/14-336 tower (batch 64), SigLIP-B/16-224 tower (batch 256), the embedded
# default's evaluation (batch 256), a LLaVA-1.5-7B-shaped prefill (CLIP-L/14-336 + 32-layer 4096-wide language model,
# random weights, batch 1), the embedded default as a static ONNX graph in ONNX Runtime (CUDA provider), Qwen2.5-VL-3B
# time to first token at 64/128/192 visual tokens (bfloat16, random weights). Report figures with the device's name,
# dtype, batch and this command.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"

# Run the package from the working tree (modeling/ is pitome_hf.modeling once installed).
SHIM=$(mktemp -d)
cp -r pitome_hf "$SHIM/pitome_hf" && cp -r modeling "$SHIM/pitome_hf/modeling"
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
PY=${PYTHON:-python3}

if [ -n "${GPU_CHECK_TINY:-}" ]; then
  DEV=cpu; DT=float32; BIG=4; MID=2; COMPILE="eager"; LM="--lm-layers 1 --lm-hidden 64"; LIMIT="--limit 256"
  REP="--warmup 1 --repeats 3"
  # Qwen2.5-VL-3B shape shrunk to 2 vision blocks and 1 narrow LM layer, a 224 px image (64 visual tokens)
  QWEN="--dtype float32 --lm-layers 1 --image-size 224 --visual-tokens 16 32 48 --keep-ratios 0.5 --set \
vision_config.depth=2 vision_config.hidden_size=64 vision_config.intermediate_size=128 vision_config.num_heads=2 \
vision_config.out_hidden_size=128 vision_config.fullatt_block_indexes=[1] text_config.hidden_size=128 \
text_config.intermediate_size=256 text_config.num_attention_heads=1 text_config.num_key_value_heads=1"
  # LLaVA-OneVision-0.5B shape with 1 SigLIP layer and 1 LM layer, one 448 px AnyRes image (base + 2 x 2 crops)
  ONEVISION="--dtype float32 --lm-layers 1 --image-size 448 --visual-tokens 64 --keep-ratios 0.5 --set \
vision_config.num_hidden_layers=1"
  # Qwen3-VL-4B / Qwen3.5-2B shapes with 2 vision blocks and a narrow language model, a 256 px image (64 tokens)
  Q3="--set vision_config.depth=2 vision_config.hidden_size=64 vision_config.intermediate_size=128 vision_config.num_heads=2 vision_config.out_hidden_size=128 text_config.hidden_size=128 text_config.intermediate_size=256 text_config.num_attention_heads=2 text_config.num_key_value_heads=1 text_config.head_dim=64"
  QWEN3VL="--shapes Qwen3-VL-4B --dtype float32 --lm-layers 1 --image-size 256 --visual-tokens 16 --keep-ratios 0.5 $Q3 vision_config.deepstack_visual_indexes=[0]"
  QWEN35="--dtype float32 --lm-layers 4 --image-size 256 --visual-tokens 16 --keep-ratios 0.5 $Q3 text_config.linear_num_key_heads=2 text_config.linear_num_value_heads=2"
else
  DEV=cuda; DT=float16; BIG=256; MID=64; COMPILE="eager compiled"; LM="--lm-layers 32 --lm-hidden 4096"; LIMIT=""
  REP="--warmup 3 --repeats 10"
  # the whole Qwen2.5-VL-3B (36 LM layers, random weights), bf16, one 448 px image: 256 visual tokens unreduced
  QWEN="--dtype bfloat16 --lm-layers 36 --image-size 448 --visual-tokens 64 128 192 --keep-ratios 0.5"
  # the whole LLaVA-OneVision-0.5B shape (26 SigLIP layers, 24 LM layers), bf16, one 448 px AnyRes image: 3,699 tokens
  ONEVISION="--dtype bfloat16 --lm-layers 24 --image-size 448 --visual-tokens 64 128 192 --keep-ratios 0.5"
  # the whole Qwen3-VL-4B shape (36 LM layers) and Qwen3.5-2B-like shape (24 hybrid LM layers), bf16, one 448 px image
  # (196 visual tokens unreduced) and a video of 4 temporal patches (budgets per temporal patch)
  QWEN3VL="--shapes Qwen3-VL-4B --dtype bfloat16 --lm-layers 36 --image-size 448 --visual-tokens 64 128 192 --keep-ratios 0.5"
  QWEN35="--dtype bfloat16 --lm-layers 24 --image-size 448 --visual-tokens 64 128 192 --keep-ratios 0.5"
fi

run() {  # name, then the pitome-hf arguments; a failing step is logged and the next one runs
  local name=$1; shift
  echo "=== $name: pitome-hf $*" | tee -a "$LOG"
  local start=$SECONDS
  if ! $PY -m pitome_hf.cli "$@" >>"$LOG" 2>&1; then echo "FAILED: $name" | tee -a "$LOG"; fi
  echo "($((SECONDS - start)) s)" | tee -a "$LOG"
}

$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee -a "$LOG"
run vit benchmark vit --batch-size $BIG --dtype $DT --device $DEV --modes $COMPILE $REP --json "$OUT/vit.json"
run clip benchmark clip --shapes L/14-336 --batch-size $MID --dtype $DT --device $DEV --modes $COMPILE $REP \
  --json "$OUT/clip.json"
run siglip benchmark siglip --batch-size $BIG --dtype $DT --device $DEV --modes $COMPILE $REP --json "$OUT/siglip.json"
run default benchmark default --batch-size $BIG --device $DEV --modes $COMPILE $REP --json "$OUT/default.json"
# ONNX Runtime's CUDA provider (needs onnxruntime-gpu there; float32 graphs): unmerged vs merged, eager alongside
run default-onnx benchmark default --batch-size $BIG --device $DEV --modes eager onnx --keep-ratios 0.9 0.75 $REP \
  --json "$OUT/default_onnx.json"
run evaluate evaluate --device $DEV --batch-size $BIG --no-progress $LIMIT --output "$OUT/evaluate"
run llava benchmark llava --batch-size 1 --dtype $DT --device $DEV $LM --keep-ratios 0.95 0.9 --warmup 1 --repeats 3 \
  --json "$OUT/llava.json"
# Qwen2.5-VL time to first token: unreduced vs PiToMe vs ToMe vs VisionZip-style at 64/128/192 visual tokens and keep
# ratio 0.5, with the FLOPs-ideal speed-up, measured/ideal (target >= 0.8), peak memory and the FLOPs check
run qwen2_5_vl benchmark qwen2_5_vl --device $DEV $QWEN $REP --json "$OUT/qwen2_5_vl.json"
run llava_onevision benchmark llava_onevision --device $DEV $ONEVISION $REP --json "$OUT/llava_onevision.json"
# Qwen3-VL (DeepStack) and Qwen3.5 (hybrid language model): every selection (PiToMe, ToMe, VisionZip-style, DivPrune,
# DART), an image, then a video
run qwen3_vl benchmark qwen3_vl --device $DEV $QWEN3VL $REP --json "$OUT/qwen3_vl.json"
run qwen3_vl_video benchmark qwen3_vl --device $DEV $QWEN3VL --video-frames 4 $REP --json "$OUT/qwen3_vl_video.json"
run qwen3_5 benchmark qwen3_5 --device $DEV $QWEN35 $REP --json "$OUT/qwen3_5.json"
run qwen3_5_video benchmark qwen3_5 --device $DEV $QWEN35 --video-frames 4 $REP --json "$OUT/qwen3_5_video.json"
rm -rf "$SHIM"
echo "done; files in $OUT" | tee -a "$LOG"

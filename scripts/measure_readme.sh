#!/usr/bin/env bash
# Re-measure every speed figure in the README, one job at a time (timings need a quiet machine), into out/readme/.
#   bash scripts/measure_readme.sh            # about 35 minutes on 2 CPU cores
# The studies (pitome-hf study ...) and the fine-tuning run (scripts/finetune_merged.py) are run separately: they take
# longer and are not timings.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=out/readme
mkdir -p "$OUT"
bench() { local tag=$1; shift; echo "=== benchmark $*"; $PY -m pitome_hf.cli benchmark "$@" --json "$OUT/bench_$tag.json" 2>>"$OUT/progress.log" | tee "$OUT/bench_$tag.md"; }
bench default default --modes eager compiled
bench default_eager_attn default --attn eager --modes eager compiled
echo "=== profile of the embedded default"; $PY scripts/profile_default.py --compiled 2>>"$OUT/progress.log" | tee "$OUT/profile_default.md"
bench vit vit --batch-size 32 --warmup 1 --repeats 3 --modes eager compiled
bench vit_system_malloc vit --batch-size 32 --warmup 1 --repeats 3 --modes eager compiled --system-malloc
bench clip clip --shapes B/16 --batch-size 16 --warmup 1 --repeats 3
bench siglip siglip --batch-size 32 --warmup 1 --repeats 3 --modes eager compiled
bench llava llava --warmup 1 --repeats 3
echo "=== the allocator's effect: three alternating runs with and without --system-malloc" | tee "$OUT/malloc_repeats.txt"
for i in 1 2 3; do for m in --system-malloc ""; do
  echo "run $i ${m:-pinned}: method | keep ratio | images/s | measured/ideal | PiToMe/ToMe" | tee -a "$OUT/malloc_repeats.txt"
  $PY -m pitome_hf.cli benchmark default --keep-ratios 0.9 0.8 $m 2>>"$OUT/progress.log" | grep -E "^\| (none|tome|pitome)" \
    | cut -d'|' -f2,3,5,9,12 | tee -a "$OUT/malloc_repeats.txt"
done; done
echo "=== overview (make run)"; $PY -m pitome_hf.cli overview --output "$OUT/overview" 2>>"$OUT/progress.log" | tee "$OUT/overview.md"
echo "=== ONNX Runtime and vision-language figures"; OUT="$OUT" PY="$PY" bash scripts/measure_deploy_vlm.sh

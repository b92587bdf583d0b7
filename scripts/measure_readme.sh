#!/usr/bin/env bash
# Re-measure every figure in the README, one job at a time (timings need a quiet machine), into out/readme/.
#   bash scripts/measure_readme.sh            # about 30 minutes on 2 CPU cores
# The studies (pitome-hf study ...) and the fine-tuning run (scripts/finetune_merged.py) are run separately: they take
# longer and are not timings.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=out/readme
mkdir -p "$OUT"
bench() { local name=$1; shift; echo "=== benchmark $name $*"; $PY -m pitome_hf.cli benchmark "$name" "$@" --json "$OUT/bench_$name.json" 2>>"$OUT/progress.log" | tee "$OUT/bench_$name.md"; }
bench default --modes eager compiled
bench vit --batch 32 --warmup 1 --repeats 3 --modes eager compiled
bench clip --shapes B/16 --batch 16 --warmup 1 --repeats 3
bench siglip --batch 32 --warmup 1 --repeats 3 --modes eager compiled
bench llava --warmup 1 --repeats 3
echo "=== overview (make run)"; $PY -m pitome_hf.cli overview --out "$OUT/overview" 2>>"$OUT/progress.log" | tee "$OUT/overview.md"

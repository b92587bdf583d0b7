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
echo "=== profile of the embedded default"; $PY scripts/profile_default.py 2>>"$OUT/progress.log" | tee "$OUT/profile_default.md"
bench vit vit --batch 32 --warmup 1 --repeats 3 --modes eager compiled
bench clip clip --shapes B/16 --batch 16 --warmup 1 --repeats 3
bench siglip siglip --batch 32 --warmup 1 --repeats 3 --modes eager compiled
bench llava llava --warmup 1 --repeats 3
echo "=== overview (make run)"; $PY -m pitome_hf.cli overview --out "$OUT/overview" 2>>"$OUT/progress.log" | tee "$OUT/overview.md"

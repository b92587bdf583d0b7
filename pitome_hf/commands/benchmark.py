"""Speed benchmarks: none vs ToMe vs PiToMe measured side by side in one run: eager, compiled, ONNX Runtime.

    pitome-hf benchmark default                 # the embedded Fashion-MNIST ViT (real weights), batch 64
    pitome-hf benchmark vit --batch 32          # ViT-B/16 shape (random weights)
    pitome-hf benchmark clip --shapes B/16      # CLIP vision towers (B/16 at 224, L/14 at 336)
    pitome-hf benchmark siglip                  # SigLIP-B/16-224 vision tower with its attention-pooling head
    pitome-hf benchmark llava                   # LLaVA-1.5 shape: image tokens, time to first token, KV cache
    pitome-hf benchmark vit --modes eager compiled
    pitome-hf benchmark default --modes eager onnx --keep-ratios 0.9   # + the static ONNX graph in ONNX Runtime

Per row: images/s, analytic GFLOPs, the FLOPs-ideal speed-up over the unmerged model, the measured speed-up, their
ratio (measured / ideal), the merge step's own time per merging layer (eager rows: the step is timed with device
synchronisation around it; a compiled graph has no separate step to time), and PiToMe's time over ToMe's at the same
token schedule. All runs of a mode are built and warmed up (--warmup calls each) first, then timed in --repeats
rounds, each run once per round in turn, and the median is reported: a slow spell of a shared machine falls on every
run alike. Absolute numbers on a shared CPU still move by several percent between runs; read the ratios.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pitome_hf.families import FAMILIES, family_named
from pitome_hf.measurement import benchmark_llava, benchmark_vlm
from pitome_hf.measurement.benchmark import COLUMNS, MODES, check_modes, subcommands
from pitome_hf.measurement.timing import check_timing_settings, markdown_table, pin_allocator
from pitome_hf.options import add_batch_argument, add_device_arguments, add_sweep_arguments, sweep_values


def _common(parser: argparse.ArgumentParser, batch: int, ratios, repeats: int = 5) -> None:
    add_batch_argument(parser, batch)
    add_device_arguments(parser, "cpu or cuda (default: cuda when available)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default: %(default)s, at least 1)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds (each run once per round, in turn), "
                        "median reported (default: %(default)s, at least 3)")
    parser.add_argument("--allow-short", action="store_true", help="run with fewer warm-up calls or repeats anyway; "
                        "the output is flagged as not a measurement")
    parser.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc as it is (by default "
                        "its thresholds are pinned first, see pitome_hf.measurement.timing.pin_allocator: otherwise page faults "
                        "that depend on the process's history move the ratios)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--modes", nargs="+", default=["eager"], choices=MODES,
                        help="eager, compiled (torch.compile) and/or onnx (the static ONNX graph run by ONNX Runtime, "
                        "pip install \"pitome_hf[onnx]\") rows, side by side; each mode's rows against its own "
                        "unmerged row; compiled and onnx rows for the image models only (llava and the vision-language "
                        "families time a prompt's prefill eagerly) (default: %(default)s)")
    add_sweep_arguments(parser, ratios)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pitome-hf benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="family", required=True, metavar="family")
    for name, (_, ratios, batch, repeats, title) in subcommands().items():
        p = sub.add_parser(name, help=title, description=f"{title}: none vs ToMe vs PiToMe, side by side.")
        _common(p, batch, ratios, repeats)
        p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                       help="attention backend of every row (default: %(default)s; on a CPU at a few dozen tokens the "
                       "eager matmul-softmax-matmul is faster than SDPA's kernel and scales with the token count)")
        shapes = list(family_named(name).benchmark.shapes) if name != "default" else []
        if len(shapes) > 1:
            p.add_argument("--shapes", nargs="+", default=shapes, choices=shapes, help="which shapes (default: all)")
    for family in FAMILIES:  # a vision tower that merges, in a generating model (LLaVA-1.5)
        if benchmark_llava.is_generation_benchmark(family):
            benchmark_llava.add_parser(sub, family, _common)
    for family in FAMILIES:
        if benchmark_vlm.is_vlm_benchmark(family):
            benchmark_vlm.add_parser(sub, family, _common)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_modes(args.family, args.modes)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be >= 1.")
    sweep_values(args)
    caveat = check_timing_settings(args.warmup, args.repeats, args.allow_short)
    malloc = None if args.system_malloc else pin_allocator()
    start = time.perf_counter()
    setup = f"torch {torch.__version__}, {torch.get_num_threads()} threads" + (f", {malloc}" if malloc else "")
    if args.family in benchmark_vlm.subcommand_names():
        return benchmark_vlm.main(args, caveat, setup)
    if args.family in benchmark_llava.subcommand_names():
        rows = benchmark_llava.run(args)
        print(benchmark_llava.heading(args, rows, setup))
        print(benchmark_llava.markdown(rows))
    else:
        runner, _, _, _, title = subcommands()[args.family]
        rows = runner(args)
        groups = sorted({r.get("model", title) for r in rows}, key=lambda m: [r.get("model", title) for r in rows].index(m))
        for group in groups:
            part = [r for r in rows if r.get("model", title) == group]
            print(f"\n{group}, batch {args.batch_size}, {part[0]['device']}, {args.dtype}, {setup}")
            print(markdown_table(part, COLUMNS))
    print(f"\n{time.perf_counter() - start:.0f} s. Read the ratios: absolute timings on a shared CPU move by several "
          "percent between runs.")
    if caveat:
        print(caveat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "caveat": caveat, "setup": setup}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

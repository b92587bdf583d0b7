"""Where ONNX Runtime spends a merged model's time: unmerged vs ToMe vs PiToMe, by operator type (ORT's profiler).

    python scripts/profile_onnx.py                       # the embedded default, batch 64, keep ratio 0.9
    python scripts/profile_onnx.py --model dinov2 --batch-size 8 --ratio 0.75   # DINOv2 ViT-S/14 shape at 224 px

Each configuration is exported (pitome_hf.deployment.onnx, static batch), run --warmup times, then --iters times with
ORT's profiler on (SessionOptions.enable_profiling); the profile's node events are summed per operator type and
divided by --iters: ms per forward. Operators are grouped: "matmul" (MatMul, Gemm, FusedMatMul and ORT's fused
attention/MatMulNBits kernels), "softmax", "merge" (the operators only a merged graph has in number: TopK, sorting,
gathers, scatters, reductions over the similarity, comparisons, cumulative sums), "norm/activation" and "other".
The merge group's share is the overhead a static graph still pays for merging; the FLOPs-ideal speed-up counts only
the matmuls. Profiling adds per-node overhead: read the shares, and time with `pitome-hf benchmark ... --modes onnx`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile

import numpy as np
import torch

GROUPS = {
    "matmul": ("MatMul", "Gemm", "FusedMatMul", "Attention", "MultiHeadAttention", "FusedGemm", "MatMulNBits",
               "QAttention", "GroupQueryAttention", "Conv"),
    "softmax": ("Softmax",),
    "merge": ("TopK", "GatherElements", "ScatterElements", "ScatterND", "GatherND", "ReduceMax", "ArgMax", "CumSum",
              "Less", "Greater", "Equal", "Not", "Where", "OneHot", "ReduceSum", "Exp", "Elu", "Log", "Range", "Expand",
              "Gather", "Tile", "Cast", "Mod", "NonZero"),
    "norm/activation": ("LayerNormalization", "SkipLayerNormalization", "Gelu", "FastGelu", "BiasGelu", "Erf",
                        "SimplifiedLayerNormalization", "Sqrt", "Div", "Mul", "Add", "Sub", "Pow"),
}


def group_of(op: str) -> str:
    for group, ops in GROUPS.items():
        if op in ops:
            return group
    return "other"


def profile(path: str, x: np.ndarray, warmup: int, iters: int, threads: int, folder: str) -> tuple[dict, float]:
    """ms per forward per operator type, and the wall ms per forward (profiled); the profile is written in `folder`."""
    import time

    from pitome_hf.deployment.onnx import run_session, session

    sess = session(path, threads=threads, profile=os.path.join(folder, "ort"))
    for _ in range(warmup):
        run_session(sess, x)
    start = time.perf_counter()
    for _ in range(iters):
        run_session(sess, x)
    wall = (time.perf_counter() - start) * 1000 / iters
    with open(sess.end_profiling()) as f:
        trace = json.load(f)
    per_op = collections.Counter()
    runs = 0
    for event in trace:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            runs += 1
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000.0
    runs = max(runs, 1)
    return {op: ms / runs for op, ms in per_op.items()}, wall


def main(argv=None) -> int:
    from pitome_hf.options import add_batch_argument

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["default", "dinov2"], default="default")
    add_batch_argument(parser, 64)
    parser.add_argument("--ratio", type=float, default=0.9)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--top", type=int, default=8, help="largest operator types listed per configuration")
    args = parser.parse_args(argv)
    from pitome_hf.deployment.onnx import example_input, temporary_export
    from pitome_hf.measurement.timing import markdown_table

    if args.model == "default":
        from pitome_hf.evaluation.evaluate import DEFAULT_MODEL
        from pitome_hf.modeling import PiToMeViTForImageClassification

        stock = PiToMeViTForImageClassification.from_pretrained(DEFAULT_MODEL, merge_method="none")
    else:
        from pitome_hf.measurement.shapes import stock_for_shape

        stock = stock_for_shape("dinov2", "ViT-S/14-224")
    stock.eval()
    x = example_input(stock.config, args.batch_size).numpy()
    threads = args.threads or torch.get_num_threads()
    rows, details = [], []
    work = tempfile.TemporaryDirectory(prefix="pitome_ort_profile_")  # the exports and profiles, removed at the end
    for method, ratio in (("none", 1.0), ("tome", args.ratio), ("pitome", args.ratio)):
        path = temporary_export(stock, args.batch_size, directory=work.name, merge_method=method, keep_ratio=ratio)
        per_op, wall = profile(path, x, args.warmup, args.iters, threads, work.name)
        groups = collections.Counter()
        for op, ms in per_op.items():
            groups[group_of(op)] += ms
        total = sum(groups.values())
        rows.append(dict(method=method, keep_ratio=ratio, wall_ms=wall, kernel_ms=total,
                         **{g: groups.get(g, 0.0) for g in (*GROUPS, "other")},
                         merge_share=groups.get("merge", 0.0) / total if total else 0.0))
        top = sorted(per_op.items(), key=lambda kv: -kv[1])[: args.top]
        details.append(f"- {method} {ratio}: " + ", ".join(f"{op} {ms:.2f}" for op, ms in top))
    work.cleanup()
    fmt = lambda v: f"{v:.2f}"  # noqa: E731
    columns = [("method", "method", str), ("keep_ratio", "keep ratio", str), ("wall_ms", "wall ms (profiled)", fmt),
               ("kernel_ms", "kernel ms", fmt), *[(g, f"{g} ms", fmt) for g in (*GROUPS, "other")],
               ("merge_share", "merge share", lambda v: f"{100 * v:.1f}%")]
    print(f"ONNX Runtime CPU, {args.model}, batch {args.batch_size}, {threads} threads, {args.iters} profiled forwards\n")
    print(markdown_table(rows, columns))
    print("\nLargest operator types, ms per forward:")
    print("\n".join(details))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

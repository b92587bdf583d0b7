"""Where the time of the embedded default's forward goes: unmerged vs ToMe vs PiToMe, eager, one process.

    python scripts/profile_default.py                 # batch 64, keep ratio 0.9, 2 threads, about a minute
    python scripts/profile_default.py --ratio 0.8 --batch-size 32

Prints three markdown tables:
0. Side by side (interleaved rounds, pitome_hf.measurement.timing.time_interleaved): unmerged, ToMe, PiToMe and a "free merge"
   ceiling: the same token schedule and proportional-attention path, but each merge step replaced by dropping the last
   r tokens (no selection, no averaging). Its speed-up is what any merging method could reach at this schedule if its
   merge step cost nothing.
1. ms per forward by part (torch.profiler, median-free: the mean over --iters profiled forwards after warm-up):
   linear layers (addmm), attention (scaled_dot_product_attention), the merge step (MergeState.step), the
   proportional-attention bias (MergeState.attention_mask), and everything else (layer norms, GELU, embeddings, ...).
3. With --compiled: the compiled PiToMe forward (eager attention, which compiles best here), its largest operations
   and generated kernels (inductor's kernel profiling), ms per forward: what remains of the merge step once fused.
2. The attention kernel alone at the token counts the merged model runs (batch x heads x N x head_dim), SDPA and the
   plain matmul-softmax-matmul: on this CPU its time hardly falls with N at these sizes, which caps what merging can buy.

glibc's malloc is pinned first (pitome_hf.measurement.timing.pin_allocator), as the benchmark does.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pitome_hf.apply import apply_pitome
from pitome_hf.evaluation.evaluate import DEFAULT_MODEL
from pitome_hf.flops import vit_flops
from pitome_hf.measurement.timing import markdown_table, pin_allocator, time_interleaved
from pitome_hf.modeling import PiToMeViTForImageClassification
from pitome_hf.modeling.merge_state import MergeState

PARTS = ("linear (addmm)", "attention (SDPA)", "merge step", "attention bias", "other", "total")


def free_step(self, x, layer, keys=None):
    """MergeState.step with the merge replaced by dropping the last r tokens (same counts, sizes stay 1)."""
    if self.sizes is None:
        self.begin(x)
    T = x.shape[1] - self.num_prefix
    r = self.settings.budget(T, layer)
    if r > 0:
        x = x[:, : x.shape[1] - r]
        self.sizes = self.sizes[:, : x.shape[1]]
        self.merged = True
    self.counts.append(T - r)
    return x


def run_free(model, x):
    step = MergeState.step
    MergeState.step = free_step
    try:
        return model(x)
    finally:
        MergeState.step = step


def side_by_side(base, x, ratio: float, rounds: int) -> list[dict]:
    models = {m: apply_pitome(base, merge_method=m, keep_ratio=ratio if m != "none" else 1.0)
              for m in ("none", "tome", "pitome")}
    runs = {"none": lambda: models["none"](x), "tome": lambda: models["tome"](x),
            "pitome": lambda: models["pitome"](x), "free merge (ceiling)": lambda: run_free(models["tome"], x)}
    with torch.inference_mode():
        times = time_interleaved(list(runs.values()), x.device, warmup=5, repeats=rounds)
    flops = {m: vit_flops(models[m].config) for m in models}
    rows = []
    for (name, _), seconds in zip(runs.items(), times):
        ideal = flops["none"] / flops.get(name, flops["tome"])
        rows.append({"run": name, "ms": 1e3 * seconds, "speedup": times[0] / seconds, "ideal": ideal,
                     "ratio": times[0] / seconds / ideal})
    return rows


def profile_forward(model, x: torch.Tensor, iters: int) -> dict:
    from torch.profiler import ProfilerActivity, profile, record_function

    step, bias = MergeState.step, MergeState.attention_mask

    def timed_step(self, *args, **kwargs):
        with record_function("pitome::merge_step"):
            return step(self, *args, **kwargs)

    def timed_bias(self, *args, **kwargs):
        with record_function("pitome::attention_bias"):
            return bias(self, *args, **kwargs)

    MergeState.step, MergeState.attention_mask = timed_step, timed_bias
    try:
        with torch.inference_mode():
            for _ in range(5):
                model(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                begin = time.perf_counter()
                for _ in range(iters):
                    model(x)
                wall = time.perf_counter() - begin
    finally:
        MergeState.step, MergeState.attention_mask = step, bias
    totals = {name: 0.0 for name in PARTS}
    for event in prof.events():
        if event.cpu_parent is not None and event.cpu_parent.name.startswith(("aten::", "pitome::")):
            continue  # count top-level calls only
        part = {"aten::addmm": "linear (addmm)", "aten::linear": "linear (addmm)",
                "aten::scaled_dot_product_attention": "attention (SDPA)", "pitome::merge_step": "merge step",
                "pitome::attention_bias": "attention bias"}.get(event.name)
        if part is not None:
            totals[part] += event.cpu_time_total / 1e3
    totals = {k: v / iters for k, v in totals.items()}
    totals["total"] = 1e3 * wall / iters
    totals["other"] = totals["total"] - sum(totals[p] for p in PARTS[:4])
    return totals


def attention_times(batch: int, heads: int, head_dim: int, counts, repeats: int = 200) -> list[dict]:
    rows = []
    for n in counts:
        q, k, v = (torch.randn(batch, heads, n, head_dim) for _ in range(3))
        fns = {"sdpa_ms": lambda: F.scaled_dot_product_attention(q, k, v),
               "math_ms": lambda: torch.softmax(q @ k.transpose(-1, -2) * head_dim**-0.5, -1) @ v}
        row = {"tokens": n}
        for name, fn in fns.items():
            for _ in range(20):
                fn()
            times = []
            for _ in range(repeats):
                begin = time.perf_counter()
                fn()
                times.append(time.perf_counter() - begin)
            row[name] = 1e3 * statistics.median(times)
        rows.append(row)
    return rows


def compiled_kernels(base, x, ratio: float, iters: int, top: int = 12) -> list[dict]:
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity, profile

    inductor_config.cpp.enable_kernel_profile = True  # name each generated kernel in the profile
    model = apply_pitome(base, merge_method="pitome", keep_ratio=ratio)
    model.set_attn_implementation("eager")
    model = torch.compile(model)
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iters):
                model(x)
    rows = []
    for item in prof.key_averages():
        if item.key.startswith(("aten::", "graph_")) and item.key not in ("aten::linear",):
            rows.append({"operation": item.key[:70], "calls": item.count / iters, "ms": item.self_cpu_time_total / 1e3
                         / iters})
    return sorted(rows, key=lambda r: -r["ms"])[:top]


def main(argv=None) -> int:
    from pitome_hf.options import add_batch_argument

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_batch_argument(parser, 64)
    parser.add_argument("--ratio", type=float, default=0.9, help="keep ratio (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=40, help="profiled forwards per model (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=100, help="interleaved timing rounds (default: %(default)s)")
    parser.add_argument("--compiled", action="store_true", help="also list the compiled PiToMe forward's largest "
                        "operations and generated kernels")
    args = parser.parse_args(argv)
    malloc = pin_allocator()
    base = PiToMeViTForImageClassification.from_pretrained(str(DEFAULT_MODEL), merge_method="none").eval()
    x = torch.randn(args.batch_size, 3, 28, 28)
    head = (f"embedded default, batch {args.batch_size}, keep ratio {args.ratio}, eager, {torch.get_num_threads()} threads"
            + (f", {malloc}" if malloc else ""))
    print(f"{head}: side by side, median of {args.rounds} interleaved rounds")
    print(markdown_table(side_by_side(base, x, args.ratio, args.rounds), [
        ("run", "run", str), ("ms", "ms per forward", lambda v: f"{v:.2f}"),
        ("speedup", "measured speed-up", lambda v: f"{v:.3f}"), ("ideal", "FLOPs-ideal", lambda v: f"{v:.3f}"),
        ("ratio", "measured/ideal", lambda v: f"{v:.3f}")]))
    rows = []
    for method in ("none", "tome", "pitome"):
        model = apply_pitome(base, merge_method=method, keep_ratio=args.ratio if method != "none" else 1.0)
        rows.append({"method": method, **profile_forward(model, x, args.iters)})
    print(f"\n{head}: ms per forward by part, under torch.profiler (mean of {args.iters}; the profiler's own overhead "
          "inflates parts made of many small operations, such as the merge step)")
    print(markdown_table(rows, [("method", "method", str)] + [(p, p, lambda v: f"{v:.2f}") for p in PARTS]))
    with torch.inference_mode():
        counts = apply_pitome(base, merge_method="pitome", keep_ratio=args.ratio)(x[:1]).token_counts.tolist()
    config = base.config
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    tokens = [c + 1 for c in counts[:-1]]  # each layer's attention runs on the tokens entering it (CLS included)
    print(f"\nattention alone, ({args.batch_size}, {heads}, N, {head_dim}) float32: ms per call (median of 200)")
    print(markdown_table(attention_times(args.batch_size, heads, head_dim, tokens),
                         [("tokens", "N", str), ("sdpa_ms", "SDPA", lambda v: f"{v:.3f}"),
                          ("math_ms", "matmul-softmax-matmul", lambda v: f"{v:.3f}")]))
    if args.compiled:
        print(f"\ncompiled PiToMe forward (eager attention), keep ratio {args.ratio}: the largest operations and "
              f"generated kernels, ms per forward (self time, mean of {args.iters}; fused kernels are named after the "
              "operations they contain)")
        print(markdown_table(compiled_kernels(base, x, args.ratio, args.iters), [
            ("operation", "operation or kernel", str), ("calls", "calls per forward", lambda v: f"{v:g}"),
            ("ms", "ms per forward", lambda v: f"{v:.3f}")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

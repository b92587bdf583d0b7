"""Speed benchmarks: images/s of none vs ToMe vs PiToMe, measured side by side in one run.

`python -m pitome_hf.benchmark vit` (or `pitome-hf benchmark vit`) prints, for a ViT-B/16-shaped model with random
weights: images/s, analytic GFLOPs, the FLOPs-ideal speed-up, measured speed-up / ideal, the share of time spent in
the merge step, and PiToMe's time over ToMe's at the same token schedule.

`python -m pitome_hf.benchmark clip` does the same for CLIP vision towers (with projection, random weights) shaped
like CLIP ViT-B/16 at 224 and ViT-L/14 at 336 (LLaVA-1.5's tower), at keep ratios 0.95, 0.925 and 0.9.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from typing import Callable

import torch

from .flops import clip_vision_flops, vit_flops
from .modeling.merge_state import MergeState


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds of `fn()` after `warmup` calls, with device synchronisation around each call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def merge_step_timer(device: torch.device):
    """Accumulates the wall time spent inside `MergeState.step` (benchmark instrumentation only)."""
    spent = {"seconds": 0.0}
    original = MergeState.step

    def timed(self, x, layer, keys=None):
        synchronize(device)
        start = time.perf_counter()
        out = original(self, x, layer, keys)
        synchronize(device)
        spent["seconds"] += time.perf_counter() - start
        return out

    MergeState.step = timed
    try:
        yield spent
    finally:
        MergeState.step = original


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def vit_b16_config(**overrides):
    from transformers import ViTConfig

    values = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                  image_size=224, patch_size=16, num_labels=1000, attn_implementation="sdpa")
    values.update(overrides)
    return ViTConfig(**values)


def bench_vit(
    batch: int = 32,
    ratios=(0.95, 0.9, 0.85),
    device: str | None = None,
    dtype: str = "float32",
    warmup: int = 2,
    repeats: int = 5,
    config_overrides: dict | None = None,
) -> list[dict]:
    from transformers import ViTForImageClassification

    dev = torch.device(device) if device else default_device()
    torch_dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    stock = ViTForImageClassification(vit_b16_config(**(config_overrides or {}))).eval().to(dev, torch_dtype)
    x = torch.randn(batch, 3, stock.config.image_size, stock.config.image_size, device=dev, dtype=torch_dtype)
    return compare_methods(stock, x, vit_flops, ratios, dtype, warmup, repeats)


def compare_methods(stock, x: torch.Tensor, flops_fn, ratios, dtype: str, warmup: int, repeats: int) -> list[dict]:
    """Time `stock` as none, then ToMe and PiToMe at each keep ratio, on input `x`; one row per run.

    `flops_fn(config)` gives one sample's analytic FLOPs. Every run shares the stock model's weights."""
    from .convert import apply_pitome

    dev, batch = x.device, x.shape[0]
    rows = []
    runs = [("none", 1.0)] + [(m, r) for r in ratios for m in ("tome", "pitome")]
    base_flops = base_time = None
    for method, ratio in runs:
        model = apply_pitome(stock, merge_method=method, keep_ratio=ratio)
        with torch.inference_mode():
            seconds = time_call(lambda: model(x), dev, warmup, repeats)
            with merge_step_timer(dev) as spent:
                start = time.perf_counter()
                model(x)
                synchronize(dev)
                total = time.perf_counter() - start
        flops = flops_fn(model.config)
        if method == "none":
            base_flops, base_time = flops, seconds
        ideal = base_flops / flops
        measured = base_time / seconds
        rows.append(
            dict(
                method=method,
                keep_ratio=ratio,
                images_per_s=batch / seconds,
                gflops=flops / 1e9,
                ideal_speedup=ideal,
                speedup=measured,
                measured_over_ideal=measured / ideal,
                merge_share=spent["seconds"] / total,
                device=str(dev),
                dtype=dtype,
                batch=batch,
            )
        )
    tome_time = {r["keep_ratio"]: r["images_per_s"] for r in rows if r["method"] == "tome"}
    for r in rows:
        if r["method"] == "pitome":
            r["time_vs_tome"] = tome_time[r["keep_ratio"]] / r["images_per_s"]
    return rows


# CLIP vision towers (OpenAI CLIP shapes): name -> CLIPVisionConfig fields.
CLIP_SHAPES = {
    "B/16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 image_size=224, patch_size=16, projection_dim=512),
    "L/14-336": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     image_size=336, patch_size=14, projection_dim=768),
}


def clip_vision_config(shape: str = "B/16", **overrides):
    from transformers import CLIPVisionConfig

    if shape not in CLIP_SHAPES:
        raise ValueError(f"CLIP shape {shape!r} is not known; choose from {', '.join(map(repr, CLIP_SHAPES))}.")
    values = dict(CLIP_SHAPES[shape], attn_implementation="sdpa")
    values.update(overrides)
    return CLIPVisionConfig(**values)


def bench_clip(
    batch: int = 32,
    ratios=(0.95, 0.925, 0.9),
    device: str | None = None,
    dtype: str = "float32",
    warmup: int = 2,
    repeats: int = 5,
    shapes=tuple(CLIP_SHAPES),
    config_overrides: dict | None = None,
) -> list[dict]:
    """CLIP vision towers with projection (random weights), none vs ToMe vs PiToMe; each row also names its shape."""
    from transformers import CLIPVisionModelWithProjection

    dev = torch.device(device) if device else default_device()
    torch_dtype = getattr(torch, dtype)
    rows = []
    for shape in shapes:
        torch.manual_seed(0)
        config = clip_vision_config(shape, **(config_overrides or {}))
        stock = CLIPVisionModelWithProjection(config).eval().to(dev, torch_dtype)
        x = torch.randn(batch, 3, config.image_size, config.image_size, device=dev, dtype=torch_dtype)

        def flops_fn(cfg):
            return clip_vision_flops(cfg, with_projection=True)

        for row in compare_methods(stock, x, flops_fn, ratios, dtype, warmup, repeats):
            rows.append(dict(row, model=f"CLIP {shape}"))
        del stock
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = "| method | keep ratio | images/s | GFLOPs | ideal speed-up | speed-up | measured/ideal | merge share | time / ToMe |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        vs = f"{r['time_vs_tome']:.3f}" if "time_vs_tome" in r else ""
        lines.append(
            f"| {r['method']} | {r['keep_ratio']} | {r['images_per_s']:.1f} | {r['gflops']:.2f} | "
            f"{r['ideal_speedup']:.3f} | {r['speedup']:.3f} | {r['measured_over_ideal']:.3f} | "
            f"{100 * r['merge_share']:.1f}% | {vs} |"
        )
    return "\n".join(lines)


DEFAULT_RATIOS = {"vit": [0.95, 0.9, 0.85], "clip": [0.95, 0.925, 0.9]}


def main(argv=None) -> None:
    if argv is None:
        import sys

        argv = sys.argv[1:]
    if argv and argv[0] == "llava":  # the llava family has its own options (pitome_hf/benchmark_llava.py)
        from .benchmark_llava import main as llava_main

        return llava_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=["vit", "clip", "llava"], nargs="?", default="vit")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--ratios", type=float, nargs="+", default=None,
                        help="keep ratios (default: vit 0.95 0.9 0.85; clip 0.95 0.925 0.9)")
    parser.add_argument("--shapes", nargs="+", default=list(CLIP_SHAPES), choices=list(CLIP_SHAPES),
                        help="clip only: which vision towers to run")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    ratios = args.ratios or DEFAULT_RATIOS[args.family]
    setup = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    if args.family == "vit":
        rows = bench_vit(args.batch, ratios, args.device, args.dtype, args.warmup, args.repeats)
        print(f"ViT-B/16 shape, random weights, batch {args.batch}, {rows[0]['device']}, {args.dtype}, {setup}")
        print(markdown_table(rows))
    else:
        rows = bench_clip(args.batch, ratios, args.device, args.dtype, args.warmup, args.repeats, args.shapes)
        for shape in args.shapes:
            part = [r for r in rows if r["model"] == f"CLIP {shape}"]
            print(f"\nCLIP {shape} vision tower + projection, random weights, batch {args.batch}, "
                  f"{part[0]['device']}, {args.dtype}, {setup}")
            print(markdown_table(part))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()

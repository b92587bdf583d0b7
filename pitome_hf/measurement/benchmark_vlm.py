"""Vision-language benchmark: time to first token of the unreduced model vs PiToMe vs ToMe vs the VisionZip-style,
DivPrune and DART visual-token selections, side by side in one run, at equal visual-token counts.

    pitome-hf benchmark qwen2_5_vl                         # Qwen2.5-VL-3B shape, 4 LM layers, one 448 x 448 image
    pitome-hf benchmark qwen2_5_vl --visual-tokens 64 128 192 --keep-ratios 0.5 --lm-layers 4 --json ttft.json
    pitome-hf benchmark qwen2_5_vl --device cuda --dtype bfloat16 --lm-layers 36      # the whole 3B model
    pitome-hf benchmark qwen3_vl --shapes Qwen3-VL-4B --video-frames 2      # a video of 2 temporal patches (4 frames)

Any registry family whose `BenchmarkShape` has a `prompt` builder gets this subcommand (pitome_hf.families): the
stock model of the shape is built with random weights (`--lm-layers` replaces the language model's depth,
`--set KEY=VALUE` any other field of the shape's config, e.g. `--set vision_config.depth=2`), and every row shares
its weights. Rows: the unreduced model, then each budget (`--visual-tokens` K per image, then `--keep-ratios`) with
each `--methods` selection (visual_selection="merge") and each other `--visual-selections` entry (visionzip,
divprune, dart: all of them by default).

Per row: visual tokens reaching the language model, time to first token (`generate(max_new_tokens=1)`: vision
tower, reduction, prefill and the first token), its speed-up over the unreduced row, the FLOPs-ideal speed-up from
the family's analytic prefill FLOPs (pitome_hf.flops), their ratio (measured / ideal; the issue's target
is >= 0.8), and the peak memory allocated during one such call beyond what was allocated before it (activations and
KV cache; CUDA: torch.cuda.max_memory_allocated; CPU: the allocations torch's profiler records, `profile_memory=True`).
All rows are warmed up first, then timed round after round, each row once per round (timing.time_interleaved), and
the medians reported. Before timing, the analytic FLOPs of the unreduced row and of one reduced row are checked
against torch's FlopCounterMode on one prefill forward (eager attention, so the counter sees the attention matmuls).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from pitome_hf.measurement.shapes import merged_fields, stock_for_shape
from pitome_hf.measurement.timing import (
    Progress, default_device, frozen_parameters, markdown_table, peak_bytes, time_interleaved,
)

FLOPS_TOLERANCE = 0.01  # analytic vs FlopCounterMode, relative


def is_vlm_benchmark(family) -> bool:
    """Whether `family`'s benchmark is this one (a prompt builder in its BenchmarkShape)."""
    return family.benchmark is not None and family.benchmark.prompt is not None


def parse_sets(items) -> dict:
    """`KEY=VALUE` strings (dotted keys into the config dict, values as JSON, else strings) -> nested dict."""
    out: dict = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: give KEY=VALUE, e.g. vision_config.depth=2.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def stock_model(family, shape: str, overrides: dict, device, dtype):
    """The stock model of `family`'s benchmark shape with `overrides` (nested) applied (`benchmark.stock_for_shape`):
    random weights made where they run, sdpa attention, in `dtype`."""
    return stock_for_shape(family.name, shape, device=device, **overrides).eval().to(dtype)


def runs(methods, keep_ratios, visual_tokens, selections) -> list[dict]:
    """The rows' settings: unreduced first, then per budget (visual tokens, then keep ratios) each merge method
    and each other selection."""
    out = [dict(merge_method="none")]
    budgets = [dict(visual_tokens=int(k)) for k in visual_tokens] + [dict(keep_ratio=float(r)) for r in keep_ratios]
    for budget in budgets:
        if "merge" in selections:
            out += [dict(budget, merge_method=m) for m in methods]
        out += [dict(budget, merge_method="pitome", visual_selection=s) for s in selections if s != "merge"]
    return out


def row_method(settings: dict) -> str:
    selection = settings.get("visual_selection", "merge")
    return selection if selection != "merge" else settings.get("merge_method", "pitome")


def _to(inputs: dict, device, dtype) -> dict:
    return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}


def counted_flops(model, inputs: dict) -> int:
    """FlopCounterMode's count of one prefill forward (last token's logits), with eager attention."""
    from torch.utils.flop_counter import FlopCounterMode

    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with frozen_parameters(model), FlopCounterMode(display=False) as counter, torch.no_grad():
            model(**inputs, logits_to_keep=1)
    finally:
        model.set_attn_implementation(previous)
    return counter.get_total_flops()


def _video_prompt_arguments(spec, family_name: str, video_frames: int) -> dict:
    """The prompt builder's keyword arguments for `video_frames` temporal patches ({} for an image prompt); refused
    in one line where the family's builder writes images only."""
    if not video_frames:
        return {}
    import inspect

    if "frames" not in inspect.signature(spec.prompt).parameters:
        raise ValueError(f"--video-frames {video_frames}: the {family_name} benchmark builds image prompts only; "
                         "leave --video-frames out.")
    if video_frames < 1:
        raise ValueError(f"--video-frames {video_frames}: give a number of temporal patches >= 1.")
    return {"frames": video_frames}


def bench_vlm(family_name: str, *, shape: str | None = None, overrides: dict | None = None, lm_layers: int | None = 4,
              image_size: int | None = None, text_tokens: int = 32, visual_tokens=None, keep_ratios=None,
              methods=("pitome", "tome"), selections=None, device=None, dtype: str = "float32",
              warmup: int = 1, repeats: int = 3, extra: dict | None = None, check_flops: bool = True,
              progress: bool = True, video_frames: int = 0) -> dict:
    """Time every row of `family_name`'s VLM benchmark side by side; returns {"rows", "flops_check", "setup"}.
    `selections`: the visual_selection values of the rows (default: every value of the field, as the command's
    --visual-selections); `extra`: merge settings of every reduced row (the command line's merge flags);
    `video_frames` > 0: the prompt holds a video of that many temporal patches of the image's size instead of the
    image (budgets per temporal patch where the family's processor writes one run per frame)."""
    from pitome_hf.apply import apply_pitome
    from pitome_hf.families import family_named

    family = family_named(family_name)
    if not is_vlm_benchmark(family):
        raise ValueError(f"{family_name} has no vision-language benchmark (no prompt builder in its BenchmarkShape).")
    spec = family.benchmark
    shape = shape or next(iter(spec.shapes))
    dev = torch.device(device) if device else default_device()
    torch_dtype = getattr(torch, dtype)
    overrides = dict(overrides or {})
    if lm_layers is not None:
        if lm_layers < 1:
            raise ValueError(f"--lm-layers {lm_layers}: must be >= 1.")
        overrides = merged_fields(overrides, {"text_config": {"num_hidden_layers": lm_layers}})
    size = image_size or spec.image_size
    frames = _video_prompt_arguments(spec, family_name, video_frames)
    visual_tokens = spec.visual_tokens if visual_tokens is None else visual_tokens
    keep_ratios = spec.ratios if keep_ratios is None else keep_ratios
    if selections is None:
        from pitome_hf.options import visual_selections

        selections = visual_selections([family])
    stock = stock_model(family, shape, overrides, dev, torch_dtype)
    settings = runs(methods, keep_ratios, visual_tokens, selections)
    models, prompts = [], []
    for row in settings:
        model = apply_pitome(stock, **({} if row.get("merge_method") == "none" else dict(extra or {})), **row)
        inputs, flops_kwargs = spec.prompt(model.config, size, text_tokens, **frames)  # refuses a budget above it
        models.append(model)
        prompts.append((_to(inputs, dev, torch_dtype), flops_kwargs))
    flops = [family.flops(m.config, **kw) for m, (_, kw) in zip(models, prompts)]
    check = []
    if check_flops:  # the unreduced row and the first reduced one
        for i in sorted({0, min(1, len(models) - 1)}):
            counted = counted_flops(models[i], prompts[i][0])
            check.append(dict(method=row_method(settings[i]), analytic=flops[i], counted=counted,
                              relative_error=abs(flops[i] - counted) / counted))
    image_token = stock.config.video_token_id if video_frames else stock.config.image_token_id
    calls = [(lambda m=m, x=x: m.generate(**x, max_new_tokens=1, min_new_tokens=1, do_sample=False))
             for m, (x, _) in zip(models, prompts)]
    lines = Progress(len(calls) + max(1, repeats), f"benchmark {family_name} ", enabled=progress)
    with torch.inference_mode():
        times = time_interleaved(calls, dev, warmup, repeats,
                                 on_warm=lambda i: lines.step(f"{row_method(settings[i])} warmed up"),
                                 on_round=lambda k: lines.step(f"timing round {k + 1}/{max(1, repeats)}"))
        peaks = [peak_bytes(call, dev) for call in calls]
    rows = []
    for row, (x, _), gflop, seconds, peak in zip(settings, prompts, flops, times, peaks):
        ideal, measured = flops[0] / gflop, times[0] / seconds
        rows.append(dict(method=row_method(row), visual_tokens=row.get("visual_tokens"),
                         keep_ratio=row.get("keep_ratio", 1.0 if row.get("merge_method") == "none" else None),
                         visual_tokens_in=int((x["input_ids"] == image_token).sum()), ttft_s=seconds,
                         prefill_gflops=gflop / 1e9, ttft_speedup=measured, ideal_ttft_speedup=ideal,
                         measured_over_ideal=measured / ideal, peak_mib=peak / 2**20, prompt_tokens=x["input_ids"].shape[1],
                         device=str(dev), dtype=dtype))
    cfg = stock.config
    setup = dict(family=family_name, shape=shape, image_size=size, text_tokens=text_tokens, video_frames=video_frames,
                 lm_layers=cfg.text_config.num_hidden_layers, overrides=overrides, warmup=warmup, repeats=repeats,
                 torch=torch.__version__, threads=torch.get_num_threads(), device=str(dev), dtype=dtype,
                 memory=("torch.cuda.max_memory_allocated" if dev.type == "cuda"
                         else "torch.profiler profile_memory (CPU allocations)"))
    return {"rows": rows, "flops_check": check, "setup": setup}


COLUMNS = [
    ("method", "method", str), ("visual_tokens", "visual_tokens budget", str), ("keep_ratio", "keep ratio", str),
    ("visual_tokens_in", "visual tokens in LM", str), ("ttft_s", "TTFT (s)", lambda v: f"{v:.4f}"),
    ("prefill_gflops", "prefill GFLOPs", lambda v: f"{v:.4g}"), ("ttft_speedup", "TTFT speed-up", lambda v: f"{v:.3f}"),
    ("ideal_ttft_speedup", "FLOPs-ideal speed-up", lambda v: f"{v:.3f}"),
    ("measured_over_ideal", "measured/ideal", lambda v: f"{v:.2f}"), ("peak_mib", "peak memory (MiB)",
                                                                       lambda v: f"{v:.1f}"),
]


def flops_check_lines(check: list[dict]) -> list[str]:
    return [f"FLOPs check ({c['method']} row): analytic {c['analytic'] / 1e9:.3f} GFLOPs, FlopCounterMode "
            f"{c['counted'] / 1e9:.3f} GFLOPs, relative error {100 * c['relative_error']:.3f}% "
            f"({'ok' if c['relative_error'] <= FLOPS_TOLERANCE else 'ABOVE'} the {100 * FLOPS_TOLERANCE:.0f}% tolerance)"
            for c in check]


def markdown(result: dict) -> str:
    s = result["setup"]
    visual = (f"a video of {s['video_frames']} temporal patches of {s['image_size']} x {s['image_size']}"
              if s.get("video_frames") else f"one {s['image_size']} x {s['image_size']} image")
    head = (f"{s['family']} {s['shape']} shape ({s['lm_layers']} language-model layers), random weights, "
            f"{visual}, {s['text_tokens']} text tokens, {s['device']}, {s['dtype']}, "
            f"torch {s['torch']}, {s['threads']} threads; TTFT = generate(max_new_tokens=1), median of {s['repeats']} "
            f"interleaved rounds; peak memory: {s['memory']}")
    return "\n".join([head, "", markdown_table(result["rows"], COLUMNS), "", *flops_check_lines(result["flops_check"])])


def add_arguments(parser: argparse.ArgumentParser, family) -> None:
    """This benchmark's own options (the common ones and the sweep come from pitome_hf.measurement.benchmark)."""
    from pitome_hf.options import add_visual_sweep_arguments

    spec = family.benchmark
    add_visual_sweep_arguments(parser, spec.visual_tokens, family)
    parser.add_argument("--shapes", nargs="+", choices=list(spec.shapes), default=[next(iter(spec.shapes))],
                        metavar="SHAPE", help=f"the real model shape, one per run: {', '.join(spec.shapes)} "
                        "(default: %(default)s)")
    parser.add_argument("--lm-layers", type=int, default=4, help="language-model layers (default: %(default)s; "
                        f"the real {next(iter(spec.shapes))} has "
                        f"{next(iter(spec.shapes.values()))['text_config']['num_hidden_layers']})")
    parser.add_argument("--image-size", type=int, default=spec.image_size, help="square image side in pixels "
                        "(default: %(default)s)")
    parser.add_argument("--text-tokens", type=int, default=32, help="prompt text tokens (default: %(default)s)")
    parser.add_argument("--video-frames", type=int, default=0, metavar="T", help="a video of T temporal patches "
                        "(2T frames) of --image-size instead of the image; budgets per temporal patch where the "
                        "family's processor writes one run per frame (Qwen3-VL, Qwen3.5)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="other config fields of the shape, "
                        "dotted keys, JSON values (e.g. vision_config.depth=2 text_config.hidden_size=128)")
    parser.add_argument("--no-flops-check", action="store_true", help="skip the analytic-vs-FlopCounterMode check")


def add_parser(sub, family, common) -> argparse.ArgumentParser:
    """`pitome-hf benchmark <family>` for a vision-language family; `common(parser, batch, ratios, repeats)` adds the
    options every benchmark shares, then the visual-token sweep (`options.add_visual_sweep_arguments`)."""
    spec = family.benchmark
    parser = sub.add_parser(family.name, help=f"{spec.title}: time to first token at visual-token budgets",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(parser, 1, list(spec.ratios), 3)
    add_arguments(parser, family)
    return parser


def subcommand_names() -> tuple:
    from pitome_hf.families import FAMILIES

    return tuple(f.name for f in FAMILIES if is_vlm_benchmark(f))


def run(args) -> dict:
    from pitome_hf.options import check_visual_sweep, merge_arguments

    check_visual_sweep(args.visual_budgets, args.visual_selections)
    if len(args.shapes) != 1:
        raise ValueError(f"--shapes {' '.join(args.shapes)}: the vision-language benchmark times one shape per run; "
                         "give one (run the command once per shape).")
    if args.batch_size != 1:
        raise ValueError(f"--batch-size {args.batch_size}: the vision-language benchmark times one prompt (batch 1).")
    for flag, value in (("--image-size", args.image_size), ("--text-tokens", args.text_tokens)):
        if value < 1:
            raise ValueError(f"{flag} {value}: must be >= 1.")
    return bench_vlm(args.family, shape=args.shapes[0], overrides=parse_sets(args.set), lm_layers=args.lm_layers, image_size=args.image_size,
                     text_tokens=args.text_tokens, visual_tokens=args.visual_budgets, keep_ratios=args.keep_ratios,
                     methods=args.methods, selections=args.visual_selections, device=args.device, dtype=args.dtype,
                     warmup=args.warmup, repeats=args.repeats, extra=merge_arguments(args),
                     check_flops=not args.no_flops_check, video_frames=args.video_frames)


def main(args, caveat, setup: str) -> int:
    """Run, print the table and the FLOPs check, write --json ({rows, flops_check, setup, caveat})."""
    result = run(args)
    print(markdown(result) + f"\n{setup}")
    if caveat:
        print(caveat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**result, "caveat": caveat}, f, indent=2)
    bad = [c for c in result["flops_check"] if c["relative_error"] > FLOPS_TOLERANCE]
    if bad:
        print(f"warning: analytic FLOPs differ from FlopCounterMode by more than {100 * FLOPS_TOLERANCE:.0f}%",
              file=sys.stderr)
    return 0

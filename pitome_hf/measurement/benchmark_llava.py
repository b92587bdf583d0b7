"""LLaVA benchmark: none vs ToMe vs PiToMe in a LLaVA-1.5-shaped model (random weights), side by side in one run.

The vision tower is CLIP-L/14-336 (576 patches, 24 layers, feature layer -2, LLaVA-1.5's); the language model is a
small random Llama (a few layers) so the run fits a CPU or a single GPU. Reported per run: image tokens reaching the
language model, time to first token (prefill + 1 token), total latency for 32 new tokens, KV-cache bytes after
generation (analytic: 2 x layers x batch x kv_heads x head_dim x sequence x bytes), analytic prefill FLOPs and the
FLOPs-ideal time-to-first-token speed-up next to the measured one. With a small language model the vision tower is a
larger share of prefill than in LLaVA-1.5-7B, so the ideal speed-up here is smaller than the 7B model's.

`pitome-hf benchmark llava` (options: `pitome-hf benchmark llava --help`).
"""

from __future__ import annotations

import argparse

import torch
import transformers

from pitome_hf.families import FAMILIES, LLAVA15_VISION, family_named  # noqa: F401 (LLAVA15_VISION: its old home)
from pitome_hf.families import llava15_config as llava_config  # noqa: F401 (the old name)
from pitome_hf.measurement.timing import default_device, markdown_table, time_call

# Every registry family with a `generation_benchmark` (pitome_hf.families.GenerationBenchmark: a vision-language model
# whose vision tower merges) gets this subcommand (`add_parser`); LLaVA-1.5 is the one today. The module docstring is
# the subcommand's --help description.


def is_generation_benchmark(family) -> bool:
    """Whether `family`'s benchmark is this one (a `generation_benchmark` in its registry entry)."""
    return family.generation_benchmark is not None


def subcommand_names() -> tuple:
    return tuple(f.name for f in FAMILIES if is_generation_benchmark(f))


def bench_llava(batch: int = 1, ratios=None, device: str | None = None, dtype: str = "float32",
                new_tokens: int = 32, text_tokens: int = 32, repeats: int = 3, lm_layers: int = 4,
                lm_hidden: int = 1024, vision: dict | None = None, warmup: int = 1, methods=("tome", "pitome"),
                extra: dict | None = None, family: str = "llava") -> list[dict]:
    """Time `family`'s generation benchmark (its registry entry's `generation_benchmark`; `ratios` default to its
    own): the unmerged model, then each method at each keep ratio; one row per run."""
    from pitome_hf.apply import apply_pitome

    entry = family_named(family)
    spec = entry.generation_benchmark
    if spec is None:
        raise ValueError(f"{family} has no generation benchmark (no generation_benchmark in its registry entry).")
    ratios = spec.ratios if ratios is None else ratios
    dev = torch.device(device) if device else default_device()
    torch_dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    config = spec.config(lm_layers, lm_hidden, vision=vision)
    with torch.device(dev):  # random weights made where they run (a 7B model would take minutes on the host)
        stock = getattr(transformers, spec.stock)(config).eval().to(torch_dtype)
    size = config.vision_config.image_size
    pixel = torch.randn(batch, 3, size, size, device=dev, dtype=torch_dtype)
    text = torch.randint(3, config.text_config.vocab_size - 1, (batch, text_tokens), device=dev)
    rows, base = [], None
    runs = [("none", 1.0)] + [(m, r) for r in ratios for m in methods]
    for method, ratio in runs:
        model = apply_pitome(stock, merge_method=method, keep_ratio=ratio, **({} if method == "none" else extra or {}))
        n_img = spec.image_tokens(model.config)
        image = torch.full((batch, n_img), config.image_token_id, device=dev)
        ids = torch.cat([text[:, :1], image, text[:, 1:]], dim=1)
        inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel)

        def generate(n):
            return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)

        with torch.inference_mode():
            ttft = time_call(lambda: generate(1), dev, warmup=warmup, repeats=repeats)
            total = time_call(lambda: generate(new_tokens), dev, warmup=0, repeats=repeats)
        text_cfg = config.text_config
        head_dim = text_cfg.hidden_size // text_cfg.num_attention_heads
        seq = ids.shape[1] + new_tokens
        kv_bytes = (2 * text_cfg.num_hidden_layers * batch * text_cfg.num_key_value_heads * head_dim * seq
                    * torch.finfo(torch_dtype).bits // 8)
        flops = entry.flops(model.config, text_tokens)
        if base is None:
            base = dict(ttft=ttft, flops=flops)
        rows.append(dict(method=method, keep_ratio=ratio, image_tokens=n_img, ttft_s=ttft, latency_s=total,
                         new_tokens=new_tokens, kv_cache_bytes=kv_bytes, prefill_gflops=flops / 1e9,
                         ttft_speedup=base["ttft"] / ttft, ideal_ttft_speedup=base["flops"] / flops,
                         device=str(dev), dtype=dtype, batch=batch))
    return rows


COLUMNS = [
    ("method", "method", str), ("keep_ratio", "keep ratio", str), ("image_tokens", "image tokens", str),
    ("ttft_s", "TTFT (s)", lambda v: f"{v:.4f}"), ("latency_s", "latency (s)", lambda v: f"{v:.4f}"),
    ("kv_cache_bytes", "KV cache (MiB)", lambda v: f"{v / 2**20:.2f}"),
    ("prefill_gflops", "prefill GFLOPs", lambda v: f"{v:.2f}"), ("ttft_speedup", "TTFT speed-up", lambda v: f"{v:.3f}"),
    ("ideal_ttft_speedup", "FLOPs-ideal speed-up", lambda v: f"{v:.3f}"),
    ("measured_over_ideal", "measured/ideal", lambda v: f"{v:.2f}"),
]


def markdown(rows: list[dict]) -> str:
    return markdown_table([dict(r, measured_over_ideal=r["ttft_speedup"] / r["ideal_ttft_speedup"]) for r in rows],
                          COLUMNS)


def heading(args, rows: list[dict], setup: str) -> str:
    """The line above the table: the registry's heading of the shape, then the batch, device, dtype and setup."""
    spec = family_named(args.family).generation_benchmark
    return (f"{spec.heading.format(lm_layers=args.lm_layers, lm_hidden=args.lm_hidden)}, batch {args.batch_size}, "
            f"{rows[0]['device']}, {args.dtype}, {setup}")


def add_parser(sub, family, common) -> argparse.ArgumentParser:
    """`pitome-hf benchmark <family>` for a family with a generation benchmark; `common(parser, batch, ratios)` adds
    the options every benchmark shares."""
    spec = family.generation_benchmark
    parser = sub.add_parser(family.name, help=spec.title, description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    common(parser, 1, list(spec.ratios))
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The LLaVA benchmark's own options (the common ones come from pitome_hf.measurement.benchmark)."""
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated for the latency (default: %(default)s)")
    parser.add_argument("--text-tokens", type=int, default=32, help="prompt text tokens (default: %(default)s)")
    parser.add_argument("--lm-layers", type=int, default=4, help="language-model layers (default: %(default)s; "
                        "LLaVA-1.5-7B has 32)")
    parser.add_argument("--lm-hidden", type=int, default=1024, help="language-model width (default: %(default)s; "
                        "LLaVA-1.5-7B has 4096)")


def run(args) -> list[dict]:
    from pitome_hf.options import merge_arguments

    return bench_llava(args.batch_size, args.keep_ratios, args.device, args.dtype, args.new_tokens, args.text_tokens,
                       repeats=args.repeats, lm_layers=args.lm_layers, lm_hidden=args.lm_hidden, warmup=args.warmup,
                       methods=args.methods, extra=merge_arguments(args), family=args.family)

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

from pitome_hf.flops import llava_prefill_flops
from pitome_hf.measurement.timing import default_device, markdown_table, time_call
# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf.modeling.configuration_pitome_llava import llava_num_image_tokens

LLAVA15_VISION = dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                      num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)


def llava_config(lm_layers: int = 4, lm_hidden: int = 1024, vocab: int = 1000, vision: dict | None = None, **kw):
    from transformers import LlavaConfig

    text = dict(model_type="llama", vocab_size=vocab, hidden_size=lm_hidden, intermediate_size=lm_hidden * 8 // 3,
                num_hidden_layers=lm_layers, num_attention_heads=max(1, lm_hidden // 128),
                num_key_value_heads=max(1, lm_hidden // 128), max_position_embeddings=4096, pad_token_id=0,
                bos_token_id=1, eos_token_id=2)
    return LlavaConfig(vision_config=vision or LLAVA15_VISION, text_config=text, image_token_index=vocab - 1,
                       attn_implementation="sdpa", **kw)


def bench_llava(batch: int = 1, ratios=(0.95, 0.925, 0.9), device: str | None = None, dtype: str = "float32",
                new_tokens: int = 32, text_tokens: int = 32, repeats: int = 3, lm_layers: int = 4,
                lm_hidden: int = 1024, vision: dict | None = None, warmup: int = 1, methods=("tome", "pitome"),
                extra: dict | None = None) -> list[dict]:
    from transformers import LlavaForConditionalGeneration

    from pitome_hf.apply import apply_pitome

    dev = torch.device(device) if device else default_device()
    torch_dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    config = llava_config(lm_layers, lm_hidden, vision=vision)
    with torch.device(dev):  # random weights made where they run (a 7B model would take minutes on the host)
        stock = LlavaForConditionalGeneration(config).eval().to(torch_dtype)
    size = config.vision_config.image_size
    pixel = torch.randn(batch, 3, size, size, device=dev, dtype=torch_dtype)
    text = torch.randint(3, config.text_config.vocab_size - 1, (batch, text_tokens), device=dev)
    rows, base = [], None
    runs = [("none", 1.0)] + [(m, r) for r in ratios for m in methods]
    for method, ratio in runs:
        model = apply_pitome(stock, merge_method=method, keep_ratio=ratio, **({} if method == "none" else extra or {}))
        n_img = llava_num_image_tokens(model.config)
        image = torch.full((batch, n_img), config.image_token_index, device=dev)
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
        flops = llava_prefill_flops(model.config, text_tokens)
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
                       methods=args.methods, extra=merge_arguments(args))

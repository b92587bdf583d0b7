"""PiToMe Qwen3.5 (issue #33): Qwen3-VL's reduction before a hybrid language model.

The contract suite and tests/test_language_input_reduction.py run on it unchanged; the budget-and-positions test of
Qwen2.5-VL and the video and processor tests of Qwen3-VL run here on Qwen3.5's case (its processor is Qwen3-VL's).
Here also the decision on token size in the two kinds of layer (modeling_pitome_qwen3_5.py): proportional attention
acts in the full-attention layers only; the Gated DeltaNet layers get the stock padding mask and see each merged token
once.
"""

from __future__ import annotations

import torch

from pitome_hf import apply_pitome

from .test_qwen2_5_vl import test_each_image_gets_its_budget_and_survivors_keep_stock_positions  # noqa: F401
from .test_qwen3_vl import (  # noqa: F401
    test_a_video_at_budget_off_equals_stock, test_a_video_gets_a_budget_per_temporal_patch_at_its_stock_positions,
    test_processor_counts_match_the_model,
)
from .vlm_cases import case_fixture, stock  # noqa: F401 (a fixture)

case = case_fixture("qwen3_5")


def _layer_io(model):
    """For each decoder layer: the attention mask it was given and its output, on the first call."""
    seen, handles = {}, []
    def record(i, kwargs, out):
        seen.setdefault(i, (kwargs.get("attention_mask"), out))  # returns None: the output is kept

    for i, layer in enumerate(model.model.language_model.layers):
        handles.append(layer.register_forward_hook(lambda m, a, k, out, i=i: record(i, k, out), with_kwargs=True))
    return seen, handles


def test_token_sizes_act_in_the_full_attention_layers_only(case, stock):
    """On a left-padded batch with merged tokens and the same reduced features: with and without proportional
    attention, the linear-attention layers get the same (stock 2-D padding) mask and give the same outputs; the
    full-attention layer gets the log(size) bias and its output differs."""
    on = apply_pitome(stock, visual_tokens=3)
    off = apply_pitome(stock, visual_tokens=3, proportional_attention=False)
    kinds = stock.config.text_config.layer_types
    assert kinds[:4] == ["linear_attention"] * 3 + ["full_attention"]
    x = case.batch(case.processor_for(on.config))
    assert not bool(x["attention_mask"].all())  # padded
    text, encoded = case.encoded_inputs(on, x)
    assert any(bool((s > 1).any()) for s in encoded.token_sizes)
    results = []
    for model in (on, off):
        seen, handles = _layer_io(model)
        with torch.no_grad():
            model(**text, mm_encoder_outputs={"image": encoded})
        for h in handles:
            h.remove()
        results.append(seen)
    valid = x["attention_mask"].bool()
    for i, kind in enumerate(kinds):
        (mask_on, out_on), (mask_off, out_off) = results[0][i], results[1][i]
        if kind == "linear_attention":
            assert torch.equal(mask_on, x["attention_mask"]) and torch.equal(mask_off, x["attention_mask"])
            assert torch.equal(out_on[valid], out_off[valid])
        else:
            assert mask_on.ndim == 4 and mask_on.is_floating_point()
            assert (out_on - out_off)[valid].abs().max() > 1e-5

"""PiToMe Qwen2.5-VL (issue #21): what is specific to reducing visual tokens at the language model's input.

The contract suite (tests/test_contract.py) covers loading, save/load, bad settings on every path, FLOPs, remote code;
tests/test_language_input_reduction.py what every family reducing at the language model's input shares (stock
equality, size-weighted means, decoding with the cache, the proportional-attention bias, the shared refusals). Here:
the budgets per image of a batch, the survivors' M-RoPE positions against the stock model's, several images and a
video, the VisionZip-style ranking against the stock attention, the processor, and the family's own refusals. The
environment has no torchvision, so the stock video processor cannot be built: videos are given as patch tensors, as
the video processor would emit them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pitome_hf import apply_pitome
from pitome_hf.modeling.configuration_pitome_qwen2_5_vl import PiToMeQwen2_5_VLConfig, qwen_visual_token_count
from pitome_hf.modeling.configuration_pitome_vit import PiToMeViTConfig

from .contract_fixtures import QWEN_END, QWEN_IMAGE, QWEN_START, QWEN_VIDEO, qwen2_5_vl_config
from .helpers import prefill_positions
from .vlm_cases import BUDGETS, QWEN_PATCH as PATCH, case_fixture, stock  # noqa: F401 (a fixture)


case = case_fixture("qwen2_5_vl")


@pytest.mark.parametrize("settings", BUDGETS)
def test_each_image_gets_its_budget_and_survivors_keep_stock_positions(case, stock, settings):
    model = apply_pitome(stock, **settings)
    x_stock, x = case.batch(case.stock_processor), case.batch(case.processor_for(model.config))
    grids = x["image_grid_thw"].tolist()
    n = [t * h * w // 4 for t, h, w in grids]
    if "visual_tokens" in settings:
        budgets = [settings["visual_tokens"]] * 3
    else:  # n - floor(n - n * rho), written out
        budgets = [c - int(np.floor(c - c * settings["keep_ratio"])) for c in n]
    assert [qwen_visual_token_count(model.config, g) for g in grids] == budgets
    seen, handle = prefill_positions(model)
    seen_stock, handle_stock = prefill_positions(stock)
    with torch.no_grad():
        out = model(**x)
        stock(**x_stock)
    handle.remove(), handle_stock.remove()
    assert out.token_counts.tolist() == [[a, b] for a, b in zip(n, budgets)]
    assert [(row == QWEN_IMAGE).sum().item() for row in x["input_ids"]] == [budgets[0], budgets[1] + budgets[2]]
    assert [f.shape[0] for f in out.image_outputs.pooler_output] == budgets
    # positions: for each image, the stock ids of its tokens gathered at the survivors; text as stock
    kept = out.image_outputs.kept_indices
    image = 0
    for row in range(2):
        ours_ids, stock_ids = x["input_ids"][row], x_stock["input_ids"][row]
        ours_pos, stock_pos = seen["position_ids"][-3:, row], seen_stock["position_ids"][-3:, row]
        ours_img, stock_img = (ours_ids == QWEN_IMAGE).nonzero()[:, 0], (stock_ids == QWEN_IMAGE).nonzero()[:, 0]
        start_ours = start_stock = 0
        for count, full in [(budgets[i], n[i]) for i in ([0] if row == 0 else [1, 2])]:
            want = stock_pos[:, stock_img[start_stock:start_stock + full]][:, kept[image]]
            assert torch.equal(ours_pos[:, ours_img[start_ours:start_ours + count]], want)
            start_ours, start_stock, image = start_ours + count, start_stock + full, image + 1
        valid = x["attention_mask"][row].bool() & (ours_ids != QWEN_IMAGE)
        valid_stock = x_stock["attention_mask"][row].bool() & (stock_ids != QWEN_IMAGE)
        assert torch.equal(ours_pos[:, valid], stock_pos[:, valid_stock])  # text tokens: the stock positions


def test_visionzip_keeps_the_most_attended_tokens_by_the_stock_attention(stock):
    """Dominant tokens: those receiving the most attention in the last vision block, computed here with the stock
    eager attention function on the block's own input."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as stock_code

    model = apply_pitome(stock, visual_tokens=6, visual_selection="visionzip")
    block = model.model.visual.blocks[-1]
    grid = torch.tensor([[1, 8, 8]])
    pixels = torch.randn(64, PATCH, generator=torch.Generator().manual_seed(4))
    seen = {}
    handle = block.register_forward_pre_hook(lambda m, a, k: seen.update(h=a[0], **k), with_kwargs=True)
    with torch.no_grad():
        out = model.model.get_image_features(pixels, grid)
    handle.remove()
    attn = block.attn
    with torch.no_grad():
        qkv = attn.qkv(block.norm1(seen["h"])).reshape(64, 3, attn.num_heads, -1).permute(1, 0, 2, 3)
        q, k = stock_code.apply_rotary_pos_emb_vision(qkv[0], qkv[1], *seen["position_embeddings"])
        _, weights = stock_code.eager_attention_forward(attn, q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                                        k.transpose(0, 1)[None], None, attn.scaling)
    received = weights[0].mean(0).sum(0)  # mean over heads, sum over queries: one full-attention group
    window_index, _ = stock_code.get_vision_window_index(grid, 2, 8, 2)
    per_token = received.reshape(16, 4).sum(1)[torch.argsort(window_index)]
    sizes, kept = out.token_sizes[0], out.kept_indices[0]
    dominant = kept[sizes == 1]
    contextual = 1  # round(6 * 10 / 64)
    assert dominant.numel() >= 6 - contextual
    top = torch.sort(per_token, descending=True, stable=True).indices[: 6 - contextual]
    assert set(top.tolist()) <= set(kept.tolist())


def _video_prompt(config, grid, images=False):
    """A prompt with a video of `grid` (and an image of 8 x 8 patches before it when `images`), as the processor would
    write it for `config` (PiToMe) or the stock model (a stock config)."""
    count = lambda g: (qwen_visual_token_count(config, g) if hasattr(config, "keep_ratio")  # noqa: E731
                       else g[0] * g[1] * g[2] // 4)
    ids = [5, 6]
    if images:
        ids += [QWEN_START] + [QWEN_IMAGE] * count((1, 8, 8)) + [QWEN_END, 7]
    ids += [QWEN_START] + [QWEN_VIDEO] * count(grid) + [QWEN_END, 8, 9]
    ids = torch.tensor([ids])
    types = (ids == QWEN_IMAGE).int() + 2 * (ids == QWEN_VIDEO).int()
    g = torch.Generator().manual_seed(5)
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": types,
         "pixel_values_videos": torch.randn(grid[0] * grid[1] * grid[2], PATCH, generator=g),
         "video_grid_thw": torch.tensor([grid]), "second_per_grid_ts": torch.tensor([1.0])}
    if images:
        x.update(pixel_values=torch.randn(64, PATCH, generator=g), image_grid_thw=torch.tensor([[1, 8, 8]]))
    return x


@pytest.mark.parametrize("settings", [dict(visual_tokens=3), dict(keep_ratio=0.5, visual_selection="visionzip")])
def test_video_and_an_image_in_one_prompt(stock, settings):
    """A video of 3 temporal patches (budget: visual_tokens per temporal patch) after an image: counts, positions
    (temporal ids spaced by tokens_per_second) against the stock model's, generate runs."""
    model = apply_pitome(stock, **settings)
    grid = (3, 8, 8)
    x, x_stock = _video_prompt(model.config, grid, images=True), _video_prompt(stock.config, grid, images=True)
    seen, handle = prefill_positions(model)
    seen_stock, handle_stock = prefill_positions(stock)
    with torch.no_grad():
        out = model(**x)
        stock(**x_stock)
        generated = model.generate(**x, max_new_tokens=3, do_sample=False)
    handle.remove(), handle_stock.remove()
    k_video = 9 if "visual_tokens" in settings else 24
    k_image = 3 if "visual_tokens" in settings else 8
    assert out.token_counts.tolist() == [[16, k_image], [48, k_video]]
    for token, output in ((QWEN_IMAGE, out.image_outputs), (QWEN_VIDEO, out.video_outputs)):
        ours = seen["position_ids"][-3:, 0][:, x["input_ids"][0] == token]
        full = seen_stock["position_ids"][-3:, 0][:, x_stock["input_ids"][0] == token]
        assert torch.equal(ours, full[:, output.kept_indices[0]])
    assert generated.shape[1] == x["input_ids"].shape[1] + 3


def test_a_new_image_continuing_a_cache_is_refused_with_one_line(case, stock):
    """Continuing a cache with a new image: M-RoPE positions are computed over the whole prompt, with every image's
    grid, which the stock generate cannot place either (it fails on the grids); a reduced model refuses it in one line,
    from generate and from a forward."""
    model = apply_pitome(stock, keep_ratio=0.4)
    processor = case.processor_for(model.config)
    images = case.images()
    x1 = dict(processor(text=[case.texts[0]], images=[[images[0]]], return_tensors="pt"))
    x2 = dict(processor(text=["w9 <|vision_start|><|image_pad|><|vision_end|> w8"], images=[[images[1]]],
                        return_tensors="pt"))
    with torch.no_grad():
        first = model.generate(**x1, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
        ids = torch.cat([first.sequences, x2["input_ids"]], 1)
        turn = dict(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=(ids == QWEN_IMAGE).int(),
                    pixel_values=x2["pixel_values"], image_grid_thw=x2["image_grid_thw"])
        for call in (lambda: model.generate(**turn, cache=first.cache, max_new_tokens=2, do_sample=False),
                     lambda: model(**{**turn, "input_ids": x2["input_ids"], "attention_mask": None,
                                      "mm_token_type_ids": None}, cache=first.cache)):
            with pytest.raises(ValueError, match=r"reduced images or videos .* cache \(past_key_values\) are not "
                                                 r"supported") as info:
                call()
            assert "\n" not in str(info.value)


def test_processor_round_trip_and_counts(case):
    config = PiToMeQwen2_5_VLConfig(**qwen2_5_vl_config().to_dict() | {"model_type": "pitome_qwen2_5_vl"},
                                    visual_tokens=5)
    proc = case.processor_for(config)
    assert proc.merge_settings["visual_tokens"] == 5
    x = case.batch(proc)
    assert [(row == QWEN_IMAGE).sum().item() for row in x["input_ids"]] == [5, 10]
    # saved with the processor (processor_config.json); save_pretrained itself needs a video processor, which needs
    # torchvision (absent here)
    assert proc.to_dict()["merge_settings"] == proc.merge_settings


# ------------------------------------------------------------------------------------------------------------------
def test_budgets_the_family_cannot_give_are_refused_with_one_line(stock):
    with pytest.raises(ValueError, match=r"visual_tokens=17 asks for 17 visual tokens.*allowed values are 1\.\.16"):
        apply_pitome(stock, visual_tokens=17).model.get_image_features(torch.randn(64, PATCH), torch.tensor([[1, 8, 8]]))
    with pytest.raises(ValueError, match="visual_tokens=4 is not supported by PiToMeViTConfig"):
        PiToMeViTConfig(visual_tokens=4)

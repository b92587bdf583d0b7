"""PiToMe Qwen3-VL (issue #33): what is specific to it beyond the Qwen machinery it shares with Qwen2.5-VL.

The contract suite and tests/test_language_input_reduction.py run on it unchanged (stock equality eager and sdpa,
generate, beams, assisted decoding, the shared refusals). The budget-and-positions test of Qwen2.5-VL runs here on
Qwen3-VL's case. Here also: DeepStack (every row the language model adds is the reduction of the stock rows of the
same tokens, at `visual_pos_masks` that mark exactly the kept tokens), videos with a budget per temporal patch (the
stock processor's timestamps kept, each frame's survivors at its stock positions), and the processor's video count.
No torchvision here: videos are given as patch tensors, as the video processor would emit them.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pitome_hf import apply_pitome
from pitome_hf.modeling.qwen_reduction import qwen_visual_token_count

from .contract_fixtures import QWEN_END, QWEN_IMAGE, QWEN_START, QWEN_VIDEO
from .helpers import prefill_positions
from .test_qwen2_5_vl import test_each_image_gets_its_budget_and_survivors_keep_stock_positions  # noqa: F401
from .vlm_cases import QWEN_PATCH as PATCH, case_fixture, stock  # noqa: F401 (a fixture)

case = case_fixture("qwen3_vl")


def _language_inputs(model):
    """Record what the language model is first called with (visual_pos_masks, deepstack_visual_embeds, positions)."""
    seen = {}

    def hook(module, args, kwargs):
        if not seen:
            seen.update(kwargs)

    return seen, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


SELECTIONS = [dict(visual_tokens=5), dict(keep_ratio=0.4, merge_method="tome"),
              dict(visual_tokens=6, visual_selection="visionzip"), dict(visual_tokens=5, visual_selection="divprune"),
              dict(keep_ratio=0.4, visual_selection="dart")]


@pytest.mark.parametrize("settings", SELECTIONS)
def test_deepstack_rows_follow_the_reduction_at_exactly_the_kept_tokens(case, stock, settings):
    """Each DeepStack level: the row the language model adds at kept token j is the mean of the stock DeepStack rows
    of the stock tokens token j holds (for a survivor that absorbed nothing: its own stock row), and
    visual_pos_masks is exactly the kept tokens' placeholders."""
    model = apply_pitome(stock, **settings)
    x = case.batch(case.processor_for(model.config))
    seen, handle = _language_inputs(model)
    with torch.no_grad():
        out = model(**x)
        full = stock.model.get_image_features(x["pixel_values"], x["image_grid_thw"])
    handle.remove()
    assert torch.equal(seen["visual_pos_masks"], x["input_ids"] == QWEN_IMAGE)
    images = out.image_outputs
    assert len(seen["deepstack_visual_embeds"]) == len(full.deepstack_features) == 2
    for level, added in zip(full.deepstack_features, seen["deepstack_visual_embeds"]):
        want = []
        for stock_rows, token_map, kept, sizes in zip(level, images.token_maps, images.kept_indices,
                                                      images.token_sizes):
            rows = torch.stack([stock_rows[token_map == j].mean(0) for j in range(kept.numel())])
            single = sizes == 1
            assert torch.equal(rows[single], stock_rows[kept[single]])  # survivors alone: their own stock rows
            want.append(rows)
        torch.testing.assert_close(added, torch.cat(want), rtol=1e-5, atol=1e-6)
        if settings.get("visual_selection") in ("divprune", "dart"):  # pure selections: the stock rows, exactly
            assert torch.equal(added, torch.cat([rows[kept] for rows, kept in zip(level, images.kept_indices)]))
    merged = any(bool((s > 1).any()) for s in images.token_sizes)
    assert merged == (settings.get("visual_selection") not in ("divprune", "dart"))


def test_deepstack_at_budget_off_is_the_stock_deepstack(case, stock):
    model = apply_pitome(stock, keep_ratio=1.0)
    x = case.batch(case.processor_for(model.config))
    seen, handle = _language_inputs(model)
    seen_stock, handle_stock = _language_inputs(stock)
    with torch.no_grad():
        model(**x), stock(**x)
    handle.remove(), handle_stock.remove()
    assert torch.equal(seen["visual_pos_masks"], seen_stock["visual_pos_masks"])
    for a, b in zip(seen["deepstack_visual_embeds"], seen_stock["deepstack_visual_embeds"]):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------------------------
# videos: one placeholder run per temporal patch, between timestamp text, as the stock processor writes them
def _video_processor(proc):
    proc.video_processor = SimpleNamespace(merge_size=2, temporal_patch_size=2)
    return proc


def _video_prompt(case, config, grid, image=True):
    """A prompt with an image of 8 x 8 patches and then a video of `grid`, written by the (PiToMe or stock) processor's
    own replace_video_token (timestamps and one run per temporal patch), tokenised by the case's tokenizer."""
    from transformers.video_utils import VideoMetadata

    proc = _video_processor(case.processor_for(config) if hasattr(config, "keep_ratio") else case.stock_processor)
    t, h, w = grid
    video_inputs = {"video_grid_thw": torch.tensor([grid]),
                    "video_metadata": [VideoMetadata(total_num_frames=2 * t, fps=2.0, frames_indices=list(range(2 * t)))]}
    video = proc.replace_video_token(video_inputs, 0)
    count = qwen_visual_token_count(config, (1, 8, 8)) if hasattr(config, "keep_ratio") else 16
    text = "w1 " + (f"<|vision_start|>{'<|image_pad|>' * count}<|vision_end|> w2 " if image else "") + video + " w3"
    text = text.replace("<|", " <|").replace("|>", "|> ")
    ids = proc.tokenizer(text, return_tensors="pt")["input_ids"]
    g = torch.Generator().manual_seed(5)
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
         "mm_token_type_ids": (ids == QWEN_IMAGE).int() + 2 * (ids == QWEN_VIDEO).int(),
         "pixel_values_videos": torch.randn(t * h * w, PATCH, generator=g), "video_grid_thw": torch.tensor([grid])}
    if image:
        x.update(pixel_values=torch.randn(64, PATCH, generator=g), image_grid_thw=torch.tensor([[1, 8, 8]]))
    return x, video


def _runs(ids, token):
    """Lengths of the runs of `token` in a row of ids."""
    runs, current = [], 0
    for value in ids.tolist() + [None]:
        if value == token:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


@pytest.mark.parametrize("settings", [dict(visual_tokens=3), dict(keep_ratio=0.5, visual_selection="visionzip"),
                                      dict(keep_ratio=0.3, merge_method="tome")])
def test_a_video_gets_a_budget_per_temporal_patch_at_its_stock_positions(case, stock, settings):
    """A video of 3 temporal patches after an image: every frame's run holds the per-frame budget (the processor and
    the model count alike), each frame's survivors come from that frame and sit at its stock positions, the
    timestamps and the text keep their stock ids, and generate runs."""
    model = apply_pitome(stock, **settings)
    grid = (3, 8, 8)
    (x, video), (x_stock, _) = _video_prompt(case, model.config, grid), _video_prompt(case, stock.config, grid)
    per_frame = settings.get("visual_tokens") or 16 - int(16 - 16 * settings["keep_ratio"])
    assert video.count("seconds>") == 3 and _runs(x["input_ids"][0], QWEN_VIDEO) == [per_frame] * 3
    assert qwen_visual_token_count(model.config, grid) == 3 * per_frame
    seen, handle = prefill_positions(model)
    seen_stock, handle_stock = prefill_positions(stock)
    with torch.no_grad():
        out = model(**x)
        stock(**x_stock)
        generated = model.generate(**x, max_new_tokens=3, do_sample=False)
    handle.remove(), handle_stock.remove()
    assert out.token_counts.tolist()[1] == [48, 3 * per_frame]
    kept = out.video_outputs.kept_indices[0]
    assert [int(((kept >= 16 * f) & (kept < 16 * (f + 1))).sum()) for f in range(3)] == [per_frame] * 3
    ours = seen["position_ids"][-3:, 0][:, x["input_ids"][0] == QWEN_VIDEO]
    full = seen_stock["position_ids"][-3:, 0][:, x_stock["input_ids"][0] == QWEN_VIDEO]
    assert torch.equal(ours, full[:, kept])
    text, text_stock = ~(x["mm_token_type_ids"][0].bool()), ~(x_stock["mm_token_type_ids"][0].bool())
    assert torch.equal(seen["position_ids"][-3:, 0][:, text], seen_stock["position_ids"][-3:, 0][:, text_stock])
    assert generated.shape[1] == x["input_ids"].shape[1] + 3
    # the token map never crosses frames: a stock token of frame f is held by an output token of frame f
    token_map = out.video_outputs.token_maps[0]
    assert bool(((token_map // per_frame) == torch.arange(48) // 16).all())


def test_a_video_at_budget_off_equals_stock(case, stock):
    model = apply_pitome(stock, keep_ratio=1.0)
    x, _ = _video_prompt(case, model.config, (2, 8, 8))
    with torch.no_grad():
        assert torch.equal(model(**x).logits, stock(**x).logits)
        assert torch.equal(model.generate(**x, max_new_tokens=3, do_sample=False),
                           stock.generate(**x, max_new_tokens=3, do_sample=False))


def test_processor_counts_match_the_model(case, stock):
    model = apply_pitome(stock, visual_tokens=5)
    proc = case.processor_for(model.config)
    x = case.batch(proc)
    assert [(row == QWEN_IMAGE).sum().item() for row in x["input_ids"]] == [5, 10]
    assert proc.to_dict()["merge_settings"] == proc.merge_settings
    data = _video_processor(proc)._get_num_multimodal_tokens(image_sizes=[(16, 16)])
    assert data.num_image_tokens == [5]
    with pytest.raises(ValueError, match=r"visual_tokens=17 asks for 17 visual tokens.*allowed values are 1\.\.16"):
        apply_pitome(stock, visual_tokens=17).model.get_video_features(torch.randn(128, PATCH),
                                                                      torch.tensor([[2, 8, 8]]))

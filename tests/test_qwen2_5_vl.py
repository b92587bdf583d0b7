"""PiToMe Qwen2.5-VL (issue #21): what is specific to reducing visual tokens at the language model's input.

The contract suite (tests/test_contract.py) covers loading, save/load, bad settings on every path, FLOPs, remote code.
Here: stock equality on inputs built by the stock processor (eager and sdpa, logits and greedy generate), the budgets
per image of a batch, the survivors' M-RoPE positions against the stock model's, several images and a video, merged
tokens as size-weighted means of the stock features, decoding with the cache against full forwards, the VisionZip-style
ranking against the stock attention, and bad input. The environment has no torchvision, so the stock video processor
cannot be built: videos are given as patch tensors, as the video processor would emit them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from pitome_hf import apply_pitome
from pitome_hf.modeling import PiToMeQwen2_5_VLProcessor
from pitome_hf.modeling.configuration_pitome_qwen2_5_vl import PiToMeQwen2_5_VLConfig, qwen_visual_token_count
from pitome_hf.modeling.configuration_pitome_vit import PiToMeViTConfig

from .helpers import prefill_positions, with_attn, without_video_processor, word_tokenizer
from .contract_fixtures import QWEN_END, QWEN_IMAGE, QWEN_START, QWEN_VIDEO, qwen2_5_vl_config

PATCH = 3 * 2 * 2 * 2  # channels x temporal patch x patch x patch


@pytest.fixture(scope="module")
def stock():
    torch.manual_seed(0)
    config = qwen2_5_vl_config()
    config._attn_implementation = "eager"
    return transformers.Qwen2_5_VLForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def processors():
    """(stock processor, a PiToMe processor factory): a word-level tokenizer with Qwen's visual special tokens and a
    Qwen2-VL image processor of 2 px patches (images of 16 x 16 and 24 x 16 px: 16 and 24 merged tokens)."""
    fast = word_tokenizer({"<|vision_start|>": QWEN_START, "<|vision_end|>": QWEN_END, "<|image_pad|>": QWEN_IMAGE,
                           "<|video_pad|>": QWEN_VIDEO})
    image = transformers.Qwen2VLImageProcessorPil(patch_size=2, merge_size=2, temporal_patch_size=2, min_pixels=64,
                                                  max_pixels=24 * 24)
    stock_proc = without_video_processor(
        lambda: transformers.Qwen2_5_VLProcessor(image_processor=image, tokenizer=fast, video_processor=None))
    return stock_proc, lambda config: without_video_processor(
        lambda: PiToMeQwen2_5_VLProcessor.from_model_config(config, image, fast))


def _images():
    rng = np.random.default_rng(0)
    return [(rng.random((16, 16, 3)) * 255).astype("uint8"), (rng.random((24, 16, 3)) * 255).astype("uint8"),
            (rng.random((16, 24, 3)) * 255).astype("uint8")]


TEXTS = ["w1 <|vision_start|><|image_pad|><|vision_end|> w2 w3",
         "w4 w5 <|vision_start|><|image_pad|><|vision_end|> w6 <|vision_start|><|image_pad|><|vision_end|> w7"]


def _batch(processor):
    """Two prompts, three images of different sizes (the second prompt holds two), left padding."""
    images = _images()
    return dict(processor(text=TEXTS, images=[[images[0]], images[1:]], return_tensors="pt", padding=True))


# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("settings", [dict(keep_ratio=1.0), dict(merge_method="none", visual_tokens=3)],
                         ids=["keep1", "none"])
def test_unreduced_equals_stock_on_stock_processor_inputs(stock, processors, settings, attn):
    base = with_attn(stock, attn)
    model = apply_pitome(base, **settings)
    x = _batch(processors[0])
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, base(**x).logits, rtol=0, atol=0)
        want = base.generate(**x, max_new_tokens=6, do_sample=False)
        got = model.generate(**x, max_new_tokens=6, do_sample=False)
    with_attn(stock, "eager")
    assert torch.equal(got, want)


@pytest.mark.parametrize("settings", [dict(visual_tokens=3), dict(keep_ratio=0.3), dict(keep_ratio=0.8),
                                      dict(visual_tokens=5, merge_method="tome"),
                                      dict(visual_tokens=5, visual_selection="visionzip")])
def test_each_image_gets_its_budget_and_survivors_keep_stock_positions(stock, processors, settings):
    model = apply_pitome(stock, **settings)
    x_stock, x = _batch(processors[0]), _batch(processors[1](model.config))
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


@pytest.mark.parametrize("settings", [dict(visual_tokens=3), dict(keep_ratio=0.3, merge_method="tome"),
                                      dict(visual_tokens=4, merge_method="pitome_bsm", merge_metric="hidden"),
                                      dict(visual_tokens=5, visual_selection="visionzip")])
def test_a_merged_token_is_the_size_weighted_mean_of_what_it_absorbed(stock, settings):
    model = apply_pitome(stock, **settings)
    g = torch.Generator().manual_seed(3)
    grid = torch.tensor([[1, 8, 8], [1, 12, 8]])
    pixels = torch.randn(64 + 96, PATCH, generator=g)
    with torch.no_grad():
        full = stock.model.get_image_features(pixels, grid).pooler_output
        out = model.model.get_image_features(pixels, grid)
    for feats, reduced, sizes, token_map, kept in zip(full, out.pooler_output, out.token_sizes, out.token_maps,
                                                       out.kept_indices):
        members = [token_map == j for j in range(reduced.shape[0])]
        want = torch.stack([feats[m].mean(0) for m in members])  # every stock token has size 1
        torch.testing.assert_close(reduced, want, rtol=1e-5, atol=1e-6)
        assert sizes.tolist() == [float(m.sum()) for m in members] and sizes.sum() == feats.shape[0]
        assert torch.equal(token_map[kept], torch.arange(reduced.shape[0]))  # the survivor is in its own group
        assert bool((kept.diff() > 0).all())  # original order
    assert (torch.cat(out.token_sizes) > 1).any()


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


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_generate_with_the_cache_equals_greedy_full_forwards(stock, processors, attn):
    """Decoding steps (positions continued from the prompt, the size bias of cached visual keys) give the tokens that
    full forwards without a cache give, on a left-padded batch of different image sizes."""
    model = with_attn(apply_pitome(stock, keep_ratio=0.4), attn)
    x = _batch(processors[1](model.config))
    with torch.no_grad():
        generated = model.generate(**x, max_new_tokens=4, do_sample=False)
        ids, mask = x["input_ids"], x["attention_mask"]
        for _ in range(4):
            extra = {k: v for k, v in x.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
            logits = model(input_ids=ids, attention_mask=mask, mm_token_type_ids=(ids == QWEN_IMAGE).int(),
                           use_cache=False, **extra).logits
            done = (ids[:, x["input_ids"].shape[1]:] == stock.config.text_config.eos_token_id).any(1, keepdim=True)
            step = logits[:, -1].argmax(-1, keepdim=True).masked_fill(done, 0)  # generate pads after EOS
            ids = torch.cat([ids, step], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    with_attn(stock, "eager")
    assert torch.equal(generated, ids)


def test_proportional_attention_adds_log_size_to_visual_keys(stock, processors):
    """With proportional attention the logits differ from the same reduction without it; the eager and sdpa paths
    agree on a padded batch."""
    on = apply_pitome(stock, visual_tokens=3)
    off = apply_pitome(stock, visual_tokens=3, proportional_attention=False)
    x = _batch(processors[1](on.config))
    valid = x["attention_mask"].bool()
    with torch.no_grad():
        a, b = on(**x).logits, off(**x).logits
        c = with_attn(apply_pitome(stock, visual_tokens=3), "sdpa")(**x).logits
    with_attn(stock, "eager")
    assert (a - b)[valid].abs().max() > 1e-4
    torch.testing.assert_close(a[valid], c[valid], rtol=1e-4, atol=1e-5)


def test_processor_round_trip_and_counts(processors, tmp_path):
    config = PiToMeQwen2_5_VLConfig(**qwen2_5_vl_config().to_dict() | {"model_type": "pitome_qwen2_5_vl"},
                                    visual_tokens=5)
    proc = processors[1](config)
    assert proc.merge_settings["visual_tokens"] == 5
    x = _batch(proc)
    assert [(row == QWEN_IMAGE).sum().item() for row in x["input_ids"]] == [5, 10]
    # saved with the processor (processor_config.json); save_pretrained itself needs a video processor, which needs
    # torchvision (absent here)
    assert proc.to_dict()["merge_settings"] == proc.merge_settings


# ------------------------------------------------------------------------------------------------------------------
def test_bad_input_is_refused_with_one_line(stock, processors):
    with pytest.raises(ValueError, match=r"visual_tokens=17 asks for 17 visual tokens.*allowed values are 1\.\.16"):
        apply_pitome(stock, visual_tokens=17).model.get_image_features(torch.randn(64, PATCH), torch.tensor([[1, 8, 8]]))
    for name, value in (("visual_tokens", 0), ("visual_tokens", 2.5), ("keep_ratio", 0.0), ("keep_ratio", 1.5)):
        with pytest.raises(ValueError, match=name):
            PiToMeQwen2_5_VLConfig(**{name: value})
    with pytest.raises(ValueError, match="merge_method=.*per-layer list"):
        PiToMeQwen2_5_VLConfig(merge_method=["tome"])
    with pytest.raises(ValueError, match="visual_selection"):
        PiToMeQwen2_5_VLConfig(visual_selection="fastv")
    with pytest.raises(ValueError, match="visual_tokens=4 is not supported by PiToMeViTConfig"):
        PiToMeViTConfig(visual_tokens=4)
    model = apply_pitome(stock, visual_tokens=3)
    with pytest.raises(ValueError, match=r"the prompt has 64 <\|image_pad\|> tokens where the reduced model gives "
                                         r"9 image features .*PiToMeQwen2_5_VLProcessor"):
        with torch.no_grad():
            model(**_batch(processors[0]))
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2' cannot add"):
        with_attn(apply_pitome(stock, visual_tokens=3), "flash_attention_2")(**_batch(processors[1](model.config)))
    with_attn(stock, "eager")

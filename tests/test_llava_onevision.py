"""PiToMe LLaVA-OneVision (issue #21): what is specific to reducing AnyRes visual tokens at the language model's input.

The contract suite (tests/test_contract.py) covers loading, save/load, bad settings on every path, FLOPs, remote code.
Here: stock equality on inputs built by the stock processor (eager and sdpa, logits and greedy generate), the budgets
per image of a batch (images of different sizes: different crop grids; a several-image prompt: no crops), newlines
kept in place, the survivors' positions against the stock model's, merged tokens as size-weighted means of the stock
features, decoding with the cache against full forwards, and bad input. No torchvision here: the stock processor is
built without a video processor.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from pitome_hf import apply_pitome
from pitome_hf.modeling import PiToMeLlavaOnevisionProcessor
from pitome_hf.modeling.configuration_pitome_llava_onevision import PiToMeLlavaOnevisionConfig, onevision_config_budget

from .helpers import prefill_positions, with_attn, without_video_processor, word_tokenizer
from .contract_fixtures import ONEVISION_IMAGE, ONEVISION_PINPOINTS, ONEVISION_VIDEO, llava_onevision_config


@pytest.fixture(scope="module")
def stock():
    torch.manual_seed(0)
    config = llava_onevision_config()
    config._attn_implementation = "eager"
    return transformers.LlavaOnevisionForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def processors():
    """(stock processor, a PiToMe processor factory): a word-level tokenizer with `<image>`/`<video>` and the stock
    image processor at 16 px tiles with the fixture's pinpoints."""
    fast = word_tokenizer({"<image>": ONEVISION_IMAGE, "<video>": ONEVISION_VIDEO})
    image = transformers.LlavaOnevisionImageProcessorPil(size={"height": 16, "width": 16},
                                                         image_grid_pinpoints=ONEVISION_PINPOINTS)
    stock_proc = without_video_processor(lambda: transformers.LlavaOnevisionProcessor(
        image_processor=image, tokenizer=fast, video_processor=None, num_image_tokens=16,
        vision_feature_select_strategy="full"))
    return stock_proc, lambda config: without_video_processor(
        lambda: PiToMeLlavaOnevisionProcessor.from_model_config(config, image, fast))


def _images():
    rng = np.random.default_rng(0)
    return [(rng.random(s) * 255).astype("uint8") for s in [(16, 16, 3), (20, 40, 3), (40, 24, 3), (16, 24, 3)]]


TEXTS = ["w1 <image> w2 w3", "w4 <image> w5 <image> w6", "w7 <image> w8"]
SIZES = [(16, 16), (20, 40), (40, 24), (16, 24)]
MULTI = [False, True, True, False]  # the second prompt holds two images: no crops


def _batch(processor):
    """Three prompts, four images of different sizes (the second prompt holds two), left padding."""
    images = _images()
    return dict(processor(text=TEXTS, images=[[images[0]], images[1:3], [images[3]]], return_tensors="pt",
                          padding=True))


# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("settings", [dict(keep_ratio=1.0), dict(merge_method="none", visual_tokens=3)],
                         ids=["keep1", "none"])
def test_unreduced_equals_stock_on_stock_processor_inputs(stock, processors, settings, attn):
    base = with_attn(stock, attn)
    model = apply_pitome(base, **settings)
    x = _batch(processors[0])
    assert processors[1](model.config)(text=TEXTS, images=[[_images()[0]], _images()[1:3], [_images()[3]]],
                                       return_tensors="pt", padding=True)["input_ids"].tolist() == x["input_ids"].tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, base(**x).logits, rtol=0, atol=0)
        want = base.generate(**x, max_new_tokens=6, do_sample=False)
        got = model.generate(**x, max_new_tokens=6, do_sample=False)
    with_attn(stock, "eager")
    assert torch.equal(got, want)


def _layout(config, i):
    return onevision_config_budget(config, SIZES[i], MULTI[i])


@pytest.mark.parametrize("settings", [dict(visual_tokens=3), dict(keep_ratio=0.3), dict(keep_ratio=0.8),
                                      dict(visual_tokens=5, merge_method="tome"),
                                      dict(visual_tokens=5, visual_selection="visionzip")])
def test_each_image_gets_its_budget_newlines_stay_and_survivors_keep_stock_positions(stock, processors, settings):
    model = apply_pitome(stock, **settings)
    x_stock, x = _batch(processors[0]), _batch(processors[1](model.config))
    stock_layouts = [onevision_config_budget(apply_pitome(stock, merge_method="none").config, s, m)
                     for s, m in zip(SIZES, MULTI)]
    # the stock layouts, written out: 16 x 16 px -> 1 crop (4 x 4 features, 4 newlines); 16 x 24 px -> 2 crops
    # (4 x 8) unpadded to 4 x 6 (round(24 * 4 / 16) = 6 columns of content: one padding column cut on each side); an
    # image of a several-image prompt -> base + 1 newline
    assert [(b.base, b.rows, b.cols, b.newlines) for b in stock_layouts] == [
        (16, 4, 4, 4), (16, 0, 0, 1), (16, 0, 0, 1), (16, 4, 6, 4)]
    assert [(row == ONEVISION_IMAGE).sum().item() for row in x_stock["input_ids"]] == [
        b.stock_tokens for b in stock_layouts[:1]] + [17 + 17, stock_layouts[3].stock_tokens]
    n_features = [b.base + b.rows * b.cols for b in stock_layouts]
    if "visual_tokens" in settings:
        k = settings["visual_tokens"]
        # crops: base k * 16 / n rounded half up, clamped to 1..k-1, written out
        want = [(max(1, min(k - 1, int(np.floor(k * 16 / n + 0.5)))) if b.rows else k)
                for n, b in zip(n_features, stock_layouts)]
        want = [(kb, (k - kb) if b.rows else 0) for kb, b in zip(want, stock_layouts)]
    else:
        rule = lambda n: n - int(np.floor(n - n * settings["keep_ratio"]))  # noqa: E731
        want = [(rule(b.base), rule(b.rows * b.cols)) for b in stock_layouts]
    budgets = [_layout(model.config, i) for i in range(4)]
    assert [(b.keep_base, b.keep_crops) for b in budgets] == want
    seen, handle = prefill_positions(model)
    seen_stock, handle_stock = prefill_positions(stock)
    with torch.no_grad():
        out = model(**x)
        stock_out = stock(**x_stock)
    handle.remove(), handle_stock.remove()
    assert out.token_counts.tolist() == [[n, kb + kc] for n, (kb, kc) in zip(n_features, want)]
    tokens = [kb + kc + b.newlines for (kb, kc), b in zip(want, stock_layouts)]
    assert [(row == ONEVISION_IMAGE).sum().item() for row in x["input_ids"]] == [tokens[0], tokens[1] + tokens[2],
                                                                                 tokens[3]]
    assert [f.shape[0] for f in out.image_outputs.pooler_output] == tokens
    # newlines in place: each image's newline tokens are the stock ones (same vector), at their stock indices
    for i, (reduced, kept, b) in enumerate(zip(out.image_outputs.pooler_output, out.image_outputs.kept_indices,
                                               stock_layouts)):
        newline_idx = ([b.base + r * (b.cols + 1) + b.cols for r in range(b.rows)] if b.rows else [b.base])
        where = [kept.tolist().index(j) for j in newline_idx]
        torch.testing.assert_close(reduced[where], stock_out.image_outputs.pooler_output[i][newline_idx])
        assert bool((kept.diff() > 0).all())  # stock order
    # positions: each image's tokens at the stock positions of its survivors; text at its stock positions
    image = 0
    for row, images in enumerate([[0], [1, 2], [3]]):
        ours_ids, stock_ids = x["input_ids"][row], x_stock["input_ids"][row]
        ours_pos = seen["position_ids"][row]
        stock_pos = (seen_stock["position_ids"][row] if seen_stock["position_ids"] is not None  # None: arange
                     else torch.arange(x_stock["input_ids"].shape[1]))
        ours_img = (ours_ids == ONEVISION_IMAGE).nonzero()[:, 0]
        stock_img = (stock_ids == ONEVISION_IMAGE).nonzero()[:, 0]
        text = x["attention_mask"][row].bool() & (ours_ids != ONEVISION_IMAGE)
        text_stock = x_stock["attention_mask"][row].bool() & (stock_ids != ONEVISION_IMAGE)
        assert torch.equal(ours_ids[text], stock_ids[text_stock])
        # without position_ids both count from the first (padding) token: the rows' paddings differ by a constant
        pad = int((~x_stock["attention_mask"][row].bool()).sum() - (~x["attention_mask"][row].bool()).sum())
        assert torch.equal(ours_pos[text] + pad, stock_pos[text_stock])  # text: the stock positions
        start_ours = start_stock = 0
        for i in images:
            count, full = tokens[i], stock_layouts[i].stock_tokens
            want_pos = stock_pos[stock_img[start_stock:start_stock + full]][out.image_outputs.kept_indices[image]]
            assert torch.equal(ours_pos[ours_img[start_ours:start_ours + count]] + pad, want_pos)
            start_ours, start_stock, image = start_ours + count, start_stock + full, image + 1


@pytest.mark.parametrize("settings", [dict(visual_tokens=6), dict(keep_ratio=0.3, merge_method="tome"),
                                      dict(visual_tokens=7, merge_method="pitome_bsm", merge_metric="hidden"),
                                      dict(visual_tokens=8, visual_selection="visionzip")])
def test_a_merged_token_is_the_size_weighted_mean_of_what_it_absorbed(stock, settings):
    model = apply_pitome(stock, **settings)
    g = torch.Generator().manual_seed(3)
    x = dict(pixel_values=torch.randn(2, 5, 3, 16, 16, generator=g), image_sizes=torch.tensor([[16, 32], [30, 30]]))
    with torch.no_grad():
        full = stock.model.get_image_features(**x).pooler_output
        out = model.model.get_image_features(**x)
    for feats, reduced, sizes, token_map, kept in zip(full, out.pooler_output, out.token_sizes, out.token_maps,
                                                       out.kept_indices):
        members = [token_map == j for j in range(reduced.shape[0])]
        want = torch.stack([feats[m].mean(0) for m in members])  # every stock token has size 1
        torch.testing.assert_close(reduced, want, rtol=1e-5, atol=1e-6)
        assert sizes.tolist() == [float(m.sum()) for m in members] and sizes.sum() == feats.shape[0]
        assert torch.equal(token_map[kept], torch.arange(reduced.shape[0]))  # the survivor is in its own group
        assert not any(bool(m[:16].any() and m[16:].any()) for m in members)  # base and crops never mix
    assert (torch.cat(out.token_sizes) > 1).any()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_generate_with_the_cache_equals_greedy_full_forwards(stock, processors, attn):
    """Decoding steps (positions continued from the stock ones, the size bias of cached visual keys) give the tokens
    that full forwards without a cache give, on a left-padded batch of different image sizes."""
    model = with_attn(apply_pitome(stock, keep_ratio=0.4), attn)
    x = _batch(processors[1](model.config))
    with torch.no_grad():
        generated = model.generate(**x, max_new_tokens=4, do_sample=False)
        ids, mask = x["input_ids"], x["attention_mask"]
        extra = {k: v for k, v in x.items() if k not in ("input_ids", "attention_mask")}
        for _ in range(4):
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate makes them
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                           **extra).logits
            done = (ids[:, x["input_ids"].shape[1]:] == stock.config.text_config.eos_token_id).any(1, keepdim=True)
            step = logits[:, -1].argmax(-1, keepdim=True).masked_fill(done, 0)  # generate pads after EOS
            ids = torch.cat([ids, step], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    with_attn(stock, "eager")
    assert torch.equal(generated, ids)


def test_decoding_positions_continue_the_stock_ones(stock, processors):
    """The first decoding step's position is the stock model's (the prompt's stock length), not the reduced one."""
    model = apply_pitome(stock, visual_tokens=3)
    x, x_stock = _batch(processors[1](model.config)), _batch(processors[0])
    calls, calls_stock = [], []
    h = model.model.language_model.register_forward_pre_hook(
        lambda m, a, k: calls.append(k["position_ids"]), with_kwargs=True)
    h_stock = stock.model.language_model.register_forward_pre_hook(
        lambda m, a, k: calls_stock.append(k["position_ids"]), with_kwargs=True)
    with torch.no_grad():
        model.generate(**x, max_new_tokens=3, do_sample=False)
        stock.generate(**x_stock, max_new_tokens=3, do_sample=False)
    h.remove(), h_stock.remove()
    assert [c.tolist() for c in calls[1:]] == [c.tolist() for c in calls_stock[1:]]


def test_proportional_attention_adds_log_size_to_visual_keys(stock, processors):
    """With proportional attention the logits differ from the same reduction without it; the eager and sdpa language
    models agree on a padded batch, given the same reduced features (`mm_encoder_outputs`: the two SigLIP kernels'
    float32 rounding can flip a near tie of the merge, which is not what is compared here)."""
    on = apply_pitome(stock, visual_tokens=3)
    off = apply_pitome(stock, visual_tokens=3, proportional_attention=False)
    x = _batch(processors[1](on.config))
    text = {k: x[k] for k in ("input_ids", "attention_mask")}
    valid = x["attention_mask"].bool()
    with torch.no_grad():
        encoded = on.model.get_image_features(x["pixel_values"], x["image_sizes"],
                                              batch_num_images=x["batch_num_images"])
        a = on(**text, mm_encoder_outputs={"image": encoded}).logits
        b = off(**text, mm_encoder_outputs={"image": encoded}).logits
        c = with_attn(apply_pitome(stock, visual_tokens=3), "sdpa")(**text, mm_encoder_outputs={"image": encoded}).logits
        torch.testing.assert_close(a, on(**x).logits)
    with_attn(stock, "eager")
    assert (a - b)[valid].abs().max() > 1e-4
    torch.testing.assert_close(a[valid], c[valid], rtol=1e-4, atol=1e-5)


def test_processor_counts_and_settings(processors):
    config = PiToMeLlavaOnevisionConfig(**llava_onevision_config().to_dict() | {"model_type": "pitome_llava_onevision"},
                                        visual_tokens=5)
    proc = processors[1](config)
    assert proc.merge_settings["visual_tokens"] == 5 and proc.to_dict()["merge_settings"] == proc.merge_settings
    x = _batch(proc)
    assert [(row == ONEVISION_IMAGE).sum().item() for row in x["input_ids"]] == [5 + 4, 6 + 6, 5 + 4]
    assert proc._get_num_multimodal_tokens(image_sizes=[[16, 16], [30, 30]]).num_image_tokens == [9, 13]


# ------------------------------------------------------------------------------------------------------------------
def test_bad_input_is_refused_with_one_line(stock, processors):
    x = dict(pixel_values=torch.randn(1, 5, 3, 16, 16), image_sizes=torch.tensor([[30, 30]]))
    with pytest.raises(ValueError, match=r"visual_tokens=81 does not fit .* allowed values are 2\.\.80"):
        apply_pitome(stock, visual_tokens=81).model.get_image_features(**x)
    with pytest.raises(ValueError, match=r"visual_tokens=1 does not fit .* allowed values are 2\.\.80"):
        apply_pitome(stock, visual_tokens=1).model.get_image_features(**x)
    for name, value in (("visual_tokens", 0), ("visual_tokens", 2.5), ("keep_ratio", 0.0), ("keep_ratio", 1.5)):
        with pytest.raises(ValueError, match=name):
            PiToMeLlavaOnevisionConfig(**{name: value})
    with pytest.raises(ValueError, match="merge_method=.*per-layer list"):
        PiToMeLlavaOnevisionConfig(merge_method=["tome"])
    with pytest.raises(ValueError, match="visual_selection"):
        PiToMeLlavaOnevisionConfig(visual_selection="fastv")
    model = apply_pitome(stock, visual_tokens=3)
    with pytest.raises(ValueError, match=r"the prompt has 114 <image> tokens where the reduced model gives 22 .*"
                                         r"PiToMeLlavaOnevisionProcessor") as info:
        with torch.no_grad():
            model(**_batch(processors[0]))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2' cannot add"):
        with_attn(apply_pitome(stock, visual_tokens=3), "flash_attention_2")(**_batch(processors[1](model.config)))
    with_attn(stock, "eager")

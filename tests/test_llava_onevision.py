"""PiToMe LLaVA-OneVision (issue #21): what is specific to reducing AnyRes visual tokens at the language model's input.

The contract suite (tests/test_contract.py) covers loading, save/load, bad settings on every path, FLOPs, remote code;
tests/test_language_input_reduction.py what every family reducing at the language model's input shares (stock
equality, size-weighted means, decoding with the cache, the proportional-attention bias, the shared refusals). Here:
the budgets per image of a batch (images of different sizes: different crop grids; a several-image prompt: no crops),
newlines kept in place, base and crops never merged together, the survivors' positions against the stock model's,
decoding positions, videos (a budget per frame), the processor, and the family's own refusals. No torchvision here: the
stock processor is built without a video processor.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pitome_hf import apply_pitome
from pitome_hf.modeling.configuration_pitome_llava_onevision import PiToMeLlavaOnevisionConfig, onevision_config_budget

from .contract_fixtures import ONEVISION_IMAGE, ONEVISION_VIDEO, llava_onevision_config
from .helpers import prefill_positions
from .vlm_cases import BUDGETS, case_fixture, stock  # noqa: F401 (a fixture)

SIZES = [(16, 16), (20, 40), (40, 24), (16, 24)]  # the case's images (height, width)
MULTI = [False, True, True, False]  # the second prompt holds two images: no crops


case = case_fixture("llava_onevision")


def _layout(config, i):
    return onevision_config_budget(config, SIZES[i], MULTI[i])


@pytest.mark.parametrize("settings", BUDGETS)
def test_each_image_gets_its_budget_newlines_stay_and_survivors_keep_stock_positions(case, stock, settings):
    model = apply_pitome(stock, **settings)
    x_stock, x = case.batch(case.stock_processor), case.batch(case.processor_for(model.config))
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


@pytest.mark.parametrize("index", range(4))
def test_base_and_crop_features_are_never_merged_together(case, index):
    """The base image (the first 16 features) and the crops are reduced apart: no output token holds both."""
    model = apply_pitome(case.stock, **case.mean_settings[index])
    with torch.no_grad():
        out = case.features(model, torch.Generator().manual_seed(3))
    for reduced, token_map in zip(out.pooler_output, out.token_maps):
        members = [token_map == j for j in range(reduced.shape[0])]
        assert not any(bool(m[:16].any() and m[16:].any()) for m in members)
    assert (torch.cat(out.token_sizes) > 1).any()


def test_decoding_positions_continue_the_stock_ones(case, stock):
    """The first decoding step's position is the stock model's (the prompt's stock length), not the reduced one."""
    model = apply_pitome(stock, visual_tokens=3)
    x, x_stock = case.batch(case.processor_for(model.config)), case.batch(case.stock_processor)
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


VIDEO_FRAMES, FRAME_TOKENS = 2, 4  # 16 px frames of 4 x 4 features, pooled 2 x 2 -> 4 features a frame


def _with_video(case, processor, image=True, video_tokens=VIDEO_FRAMES * FRAME_TOKENS + 1):
    """One prompt: an image (when `image`), then a video of 2 frames (stock: 9 `<video>` tokens, 2 x 2 x 2 pooled
    features and a newline; the video processor needs torchvision, absent here, so the video is given as pixels and
    its `video_tokens` tokens written out), then text."""
    video = torch.randn(1, VIDEO_FRAMES, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    if image:
        x = dict(processor(text=["w1 <image> w2"], images=[[case.images()[0]]], return_tensors="pt"))
    else:
        x = {"input_ids": torch.tensor([[5]])}
    ids = torch.cat([x["input_ids"], torch.tensor([[7] + [ONEVISION_VIDEO] * video_tokens + [8, 9]])], 1)
    x.update(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=video)
    return x


def _embeds_recorder(model, store):
    def hook(module, args, kwargs):
        store.setdefault("x", kwargs["inputs_embeds"])
    return model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


VIDEO_SETTINGS = [dict(keep_ratio=0.4), dict(visual_tokens=2), dict(visual_tokens=3, merge_method="tome"),
                  dict(visual_tokens=2, visual_selection="visionzip"),
                  dict(visual_tokens=2, visual_selection="divprune"), dict(visual_tokens=3, visual_selection="dart")]


@pytest.mark.parametrize("settings", VIDEO_SETTINGS)
def test_a_video_gets_its_budget_per_frame_at_its_stock_positions(case, stock, settings):
    """An image and a 2-frame video in one prompt: each frame keeps the frame budget (visual_tokens K per frame, or
    the keep ratio of a frame's 4 features: 4 - floor(4 - 1.6) = 2), the newline stays last; what reaches the language
    model at the video's tokens is the reduced video (a merged token the mean of its frame's tokens it holds, a pure
    selection's token the stock one), at the stock positions of the survivors; the text after it at its stock
    positions; no token holds features of two frames; generate gives the greedy tokens of full forwards."""
    model = apply_pitome(stock, **settings)
    processor = case.processor_for(model.config)
    keep = settings.get("visual_tokens", 2)
    assert processor.num_video_tokens_for(VIDEO_FRAMES) == VIDEO_FRAMES * keep + 1
    x = _with_video(case, processor, video_tokens=processor.num_video_tokens_for(VIDEO_FRAMES))
    x_stock = _with_video(case, case.stock_processor)
    embeds, embeds_stock = {}, {}
    hooks = [_embeds_recorder(model, embeds), _embeds_recorder(stock, embeds_stock)]
    seen, handle = prefill_positions(model)
    seen_stock, handle_stock = prefill_positions(stock)
    with torch.no_grad():
        out = model(**x)
        stock_out = stock(**x_stock)
        generated = model.generate(**x, max_new_tokens=3, do_sample=False)
        ids = x["input_ids"]
        for _ in range(3):
            step = {**x, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
            ids = torch.cat([ids, model(**step, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], 1)
    for h in (*hooks, handle, handle_stock):
        h.remove()
    assert out.token_counts.tolist()[1] == [VIDEO_FRAMES * FRAME_TOKENS, VIDEO_FRAMES * keep]  # after the image's row
    video, video_stock = x["input_ids"][0] == ONEVISION_VIDEO, x_stock["input_ids"][0] == ONEVISION_VIDEO
    assert int(video.sum()) == VIDEO_FRAMES * keep + 1 and int(video_stock.sum()) == VIDEO_FRAMES * FRAME_TOKENS + 1
    reduced, kept = out.video_outputs.pooler_output[0], out.video_outputs.kept_indices[0]
    token_map, sizes = out.video_outputs.token_maps[0], out.video_outputs.token_sizes[0]
    full = stock_out.video_outputs.pooler_output[0]
    assert reduced.shape == (VIDEO_FRAMES * keep + 1, full.shape[-1]) and bool((kept.diff() > 0).all())
    assert kept[-1] == full.shape[0] - 1 and torch.equal(reduced[-1], full[-1])  # the newline, last
    members = [token_map == j for j in range(reduced.shape[0])]
    torch.testing.assert_close(reduced, torch.stack([full[m].mean(0) for m in members]), rtol=1e-5, atol=1e-6)
    assert sizes.tolist() == [float(m.sum()) for m in members]
    frame_of = torch.arange(full.shape[0]).clamp_max(VIDEO_FRAMES * FRAME_TOKENS - 1) // FRAME_TOKENS
    assert all(len(set(frame_of[m].tolist())) == 1 for m in members[:-1])  # frames reduced apart
    assert [int(((kept[:-1] // FRAME_TOKENS) == f).sum()) for f in range(VIDEO_FRAMES)] == [keep] * VIDEO_FRAMES
    if settings.get("visual_selection") in ("divprune", "dart"):
        assert torch.equal(reduced, full[kept]) and sizes.tolist() == [1.0] * len(kept)
    assert torch.equal(embeds["x"][0, video], reduced.to(embeds["x"].dtype))
    stock_pos = torch.arange(x_stock["input_ids"].shape[1])
    ours_pos = seen["position_ids"][0]
    assert torch.equal(ours_pos[video], stock_pos[video_stock][kept])
    after, after_stock = video.nonzero()[-1, 0] + 1, video_stock.nonzero()[-1, 0] + 1
    assert torch.equal(ours_pos[after:], stock_pos[after_stock:])  # the text after the video: stock positions
    assert torch.equal(generated, ids)


@pytest.mark.parametrize("settings", [dict(keep_ratio=1.0), dict(merge_method="none", visual_tokens=2)],
                         ids=["keep1", "none"])
@pytest.mark.parametrize("image", [True, False], ids=["image+video", "video"])
def test_a_video_at_budget_off_equals_stock(stock, case, settings, image):
    """Nothing reduced: the processor writes the stock count, and logits and greedy generate are the stock model's,
    with and without an image before the video."""
    model = apply_pitome(stock, **settings)
    processor = case.processor_for(model.config) if image else None
    assert case.processor_for(model.config).num_video_tokens_for(VIDEO_FRAMES) == VIDEO_FRAMES * FRAME_TOKENS + 1
    x = _with_video(case, processor, image=image)
    x_stock = _with_video(case, case.stock_processor, image=image) if image else x
    assert torch.equal(x["input_ids"], x_stock["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, stock(**x_stock).logits, rtol=0, atol=0)
        assert torch.equal(model.generate(**x, max_new_tokens=3, do_sample=False),
                           stock.generate(**x_stock, max_new_tokens=3, do_sample=False))


@pytest.mark.parametrize("settings", [dict(keep_ratio=0.3), dict(keep_ratio=0.8), dict(visual_tokens=1),
                                      dict(visual_tokens=3, visual_selection="dart"), dict(keep_ratio=1.0)])
def test_the_processors_video_count_is_the_models(case, stock, settings):
    """For videos of 1, 2 and 3 frames: the `<video>` tokens the processor writes (`replace_video_token`,
    `_get_num_multimodal_tokens`) are the tokens the model's video features hold."""
    model = apply_pitome(stock, **settings)
    processor = case.processor_for(model.config)
    for frames in (1, 2, 3):
        pixels = torch.randn(2, frames, 3, 16, 16, generator=torch.Generator().manual_seed(frames))
        with torch.no_grad():
            features = model.model.get_video_features(pixels).pooler_output
        want = features.shape[1]
        assert features.shape[0] == 2
        assert processor.replace_video_token({"pixel_values_videos": pixels}, 1) == "<video>" * want
        assert processor._get_num_multimodal_tokens(video_sizes=[(frames, 16, 16)]).num_video_tokens == [want]
    keep = 4 - int(np.floor(4 - 4 * settings["keep_ratio"])) if "keep_ratio" in settings else settings["visual_tokens"]
    assert want == 3 * keep + 1


def test_video_budgets_and_prompts_the_family_cannot_take_are_refused_with_one_line(case, stock):
    pixels = torch.randn(1, VIDEO_FRAMES, 3, 16, 16)
    with pytest.raises(ValueError, match=r"visual_tokens=5 does not fit a video frame, which has 4 pooled features: "
                                         r"allowed values are 1\.\.4 for videos \(the budget is per frame\)") as info:
        apply_pitome(stock, visual_tokens=5).model.get_video_features(pixels)
    assert "\n" not in str(info.value)
    model = apply_pitome(stock, visual_tokens=2)
    with pytest.raises(ValueError, match=r"the prompt has 9 <video> tokens where the reduced model gives 5 .*"
                                         r"PiToMeLlavaOnevisionProcessor") as info:
        with torch.no_grad():
            model(**_with_video(case, None, image=False))
    assert "\n" not in str(info.value)


def test_a_new_image_continuing_a_cache_equals_the_whole_conversation(case, stock):
    """A second turn with a new image, continuing the first turn's cache, gives the tokens of one generate over the
    whole conversation (both images, each reduced as in its own turn)."""
    model = apply_pitome(stock, keep_ratio=0.4)
    processor = case.processor_for(model.config)
    images = case.images()
    x1 = dict(processor(text=["w1 <image> w2 w3"], images=[[images[0]]], return_tensors="pt"))
    x2 = dict(processor(text=["w9 <image> w8"], images=[[images[3]]], return_tensors="pt"))
    with torch.no_grad():
        first = model.generate(**x1, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
        ids = torch.cat([first.sequences, x2["input_ids"]], 1)
        second = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=x2["pixel_values"],
                                image_sizes=x2["image_sizes"], cache=first.cache, max_new_tokens=3, do_sample=False)
        tiles = max(x1["pixel_values"].shape[1], x2["pixel_values"].shape[1])
        pad = lambda p: torch.cat([p, p.new_zeros(1, tiles - p.shape[1], *p.shape[2:])], 1)  # noqa: E731
        whole = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                               pixel_values=torch.cat([pad(x1["pixel_values"]), pad(x2["pixel_values"])]),
                               image_sizes=torch.cat([x1["image_sizes"], x2["image_sizes"]]), max_new_tokens=3,
                               do_sample=False)
    assert torch.equal(second, whole)


def test_processor_counts_and_settings(case):
    config = PiToMeLlavaOnevisionConfig(**llava_onevision_config().to_dict() | {"model_type": "pitome_llava_onevision"},
                                        visual_tokens=5)
    proc = case.processor_for(config)
    assert proc.merge_settings["visual_tokens"] == 5 and proc.to_dict()["merge_settings"] == proc.merge_settings
    x = case.batch(proc)
    assert [(row == ONEVISION_IMAGE).sum().item() for row in x["input_ids"]] == [5 + 4, 6 + 6, 5 + 4]
    assert proc._get_num_multimodal_tokens(image_sizes=[[16, 16], [30, 30]]).num_image_tokens == [9, 13]


# ------------------------------------------------------------------------------------------------------------------
def test_budgets_the_family_cannot_give_are_refused_with_one_line(stock):
    x = dict(pixel_values=torch.randn(1, 5, 3, 16, 16), image_sizes=torch.tensor([[30, 30]]))
    with pytest.raises(ValueError, match=r"visual_tokens=81 does not fit .* allowed values are 2\.\.80"):
        apply_pitome(stock, visual_tokens=81).model.get_image_features(**x)
    with pytest.raises(ValueError, match=r"visual_tokens=1 does not fit .* allowed values are 2\.\.80"):
        apply_pitome(stock, visual_tokens=1).model.get_image_features(**x)

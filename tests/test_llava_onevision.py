"""PiToMe LLaVA-OneVision (issue #21): what is specific to reducing AnyRes visual tokens at the language model's input.

The contract suite (tests/test_contract.py) covers loading, save/load, bad settings on every path, FLOPs, remote code;
tests/test_language_input_reduction.py what every family reducing at the language model's input shares (stock
equality, size-weighted means, decoding with the cache, the proportional-attention bias, the shared refusals). Here:
the budgets per image of a batch (images of different sizes: different crop grids; a several-image prompt: no crops),
newlines kept in place, base and crops never merged together, the survivors' positions against the stock model's,
decoding positions, the processor, and the family's own refusals. No torchvision here: the stock processor is built
without a video processor.
"""

from __future__ import annotations

import warnings

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


def _with_video(case, processor, image=True):
    """One prompt: an image (when `image`), then a video of 2 frames (9 stock `<video>` tokens: 2 x 2 x 2 pooled
    features and a newline; the video processor needs torchvision, absent here, so the video is given as pixels and
    its tokens written out), then text."""
    video = torch.randn(1, 2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    if image:
        x = dict(processor(text=["w1 <image> w2"], images=[[case.images()[0]]], return_tensors="pt"))
    else:
        x = {"input_ids": torch.tensor([[5]])}
    ids = torch.cat([x["input_ids"], torch.tensor([[7] + [ONEVISION_VIDEO] * 9 + [8, 9]])], 1)
    x.update(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=video)
    return x


def test_an_image_and_a_video_in_one_prompt(case, stock):
    """The image is reduced, the video is not (stock features, stock count): the video's tokens get the stock video
    features at their stock positions, the text after both its stock positions; generate gives the greedy tokens of
    full forwards; that videos are not reduced is said (a UserWarning)."""
    model = apply_pitome(stock, keep_ratio=0.4)
    x, x_stock = _with_video(case, case.processor_for(model.config)), _with_video(case, case.stock_processor)
    embeds, embeds_stock = {}, {}

    def recorder(store):
        def hook(module, args, kwargs):
            store.setdefault("x", kwargs["inputs_embeds"])
        return hook

    hooks = [m.model.language_model.register_forward_pre_hook(recorder(store), with_kwargs=True)
             for m, store in ((model, embeds), (stock, embeds_stock))]
    seen, handle = prefill_positions(model)
    with torch.no_grad(), pytest.warns(UserWarning, match="videos are not reduced"):
        out = model(**x)
        stock(**x_stock)
        generated = model.generate(**x, max_new_tokens=3, do_sample=False)
        ids = x["input_ids"]
        for _ in range(3):
            step = {**x, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
            ids = torch.cat([ids, model(**step, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], 1)
    for h in (*hooks, handle):
        h.remove()
    assert out.token_counts.tolist() == [[32, 14]]  # the image: base and one crop, 16 - floor(16 - 6.4) = 7 each
    video, video_stock = x["input_ids"][0] == ONEVISION_VIDEO, x_stock["input_ids"][0] == ONEVISION_VIDEO
    assert int(video.sum()) == 9
    assert torch.equal(embeds["x"][0, video], embeds_stock["x"][0, video_stock])
    after, after_stock = video.nonzero()[0, 0] - 1, video_stock.nonzero()[0, 0] - 1  # the text token before the video
    stock_pos = torch.arange(x_stock["input_ids"].shape[1])
    assert torch.equal(seen["position_ids"][0, after:], stock_pos[after_stock:])  # video and text after: stock
    assert torch.equal(generated, ids)


def test_a_video_only_prompt_runs_as_stock_and_says_videos_are_not_reduced(stock):
    model = apply_pitome(stock, keep_ratio=0.4)
    x = _with_video(None, None, image=False)
    with torch.no_grad():
        with pytest.warns(UserWarning, match="PiToMe LLaVA-OneVision: videos are not reduced"):
            logits = model(**x).logits
        torch.testing.assert_close(logits, stock(**x).logits, rtol=0, atol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing reduced, nothing said
            apply_pitome(stock, keep_ratio=1.0)(**x)


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

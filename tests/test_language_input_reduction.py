"""What every family that reduces visual tokens at the language model's input must do (tests/vlm_cases.py: Qwen2.5-VL,
LLaVA-OneVision), on inputs built by the stock and the PiToMe processors: stock equality where nothing is reduced
(eager and sdpa, logits and greedy generate), merged tokens as size-weighted means of the stock features, decoding with
the cache against full forwards, the proportional-attention bias, and the refusals every such family shares. What is
specific to a family (budgets and positions, AnyRes newlines, videos, the processor's counts) is in its own test file.
"""

from __future__ import annotations

import pytest
import torch

from pitome_hf import apply_pitome

from .helpers import prefill_positions, with_attn
from .vlm_cases import CASES


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return CASES[request.param]()


# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("settings", [dict(keep_ratio=1.0), dict(merge_method="none", visual_tokens=3)],
                         ids=["keep1", "none"])
def test_unreduced_equals_stock_on_stock_processor_inputs(case, settings, attn):
    base = with_attn(case.stock, attn)
    model = apply_pitome(base, **settings)
    x = case.batch(case.stock_processor)
    assert case.batch(case.processor_for(model.config))["input_ids"].tolist() == x["input_ids"].tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, base(**x).logits, rtol=0, atol=0)
        want = base.generate(**x, max_new_tokens=6, do_sample=False)
        got = model.generate(**x, max_new_tokens=6, do_sample=False)
    with_attn(case.stock, "eager")
    assert torch.equal(got, want)


@pytest.mark.parametrize("index", range(6))
def test_a_merged_token_is_the_size_weighted_mean_of_what_it_absorbed(case, index):
    """Merging (merge methods, VisionZip-style): each output token is the mean of the stock tokens it holds, every
    stock token held by one. A pure selection (DivPrune, DART): each output is a stock token unchanged (size 1), the
    others are held by none (-1)."""
    settings = case.mean_settings[index]
    pure = settings.get("visual_selection") in ("divprune", "dart")
    model = apply_pitome(case.stock, **settings)
    with torch.no_grad():
        full = case.features(case.stock, torch.Generator().manual_seed(3)).pooler_output
        out = case.features(model, torch.Generator().manual_seed(3))
    for feats, reduced, sizes, token_map, kept in zip(full, out.pooler_output, out.token_sizes, out.token_maps,
                                                       out.kept_indices):
        members = [token_map == j for j in range(reduced.shape[0])]
        want = torch.stack([feats[m].mean(0) for m in members])  # every stock token has size 1
        torch.testing.assert_close(reduced, want, rtol=1e-5, atol=1e-6)
        assert sizes.tolist() == [float(m.sum()) for m in members]
        assert sizes.sum() == (reduced.shape[0] if pure else feats.shape[0])
        assert torch.equal(token_map[kept], torch.arange(reduced.shape[0]))  # the survivor is in its own group
        assert bool((kept.diff() > 0).all())  # stock order
        if pure:
            assert torch.equal(reduced, feats[kept]) and int((token_map == -1).sum()) == feats.shape[0] - len(kept)
    assert (torch.cat(out.token_sizes) > 1).any() != pure


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_generate_with_the_cache_equals_greedy_full_forwards(case, attn):
    """Decoding steps (positions continued from the prompt's, the size bias of cached visual keys) give the tokens
    that full forwards without a cache give, on a left-padded batch of different image sizes."""
    model = with_attn(apply_pitome(case.stock, keep_ratio=0.4), attn)
    x = case.batch(case.processor_for(model.config))
    eos = case.stock.config.text_config.eos_token_id
    with torch.no_grad():
        generated = model.generate(**x, max_new_tokens=4, do_sample=False)
        ids, mask = x["input_ids"], x["attention_mask"]
        for _ in range(4):
            logits = model(**case.step_inputs(x, ids, mask), use_cache=False).logits
            done = (ids[:, x["input_ids"].shape[1]:] == eos).any(1, keepdim=True)
            step = logits[:, -1].argmax(-1, keepdim=True).masked_fill(done, 0)  # generate pads after EOS
            ids = torch.cat([ids, step], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    with_attn(case.stock, "eager")
    assert torch.equal(generated, ids)


def test_proportional_attention_adds_log_size_to_visual_keys(case):
    """With proportional attention the logits differ from the same reduction without it; the eager and sdpa language
    models agree on a padded batch, given the same reduced features (`mm_encoder_outputs`: two vision kernels' float32
    rounding can flip a near tie of the merge, which is not what is compared here); the features given so equal the
    model's own."""
    on = apply_pitome(case.stock, visual_tokens=3)
    off = apply_pitome(case.stock, visual_tokens=3, proportional_attention=False)
    x = case.batch(case.processor_for(on.config))
    valid = x["attention_mask"].bool()
    with torch.no_grad():
        text, encoded = case.encoded_inputs(on, x)
        a = on(**text, mm_encoder_outputs={"image": encoded}).logits
        b = off(**text, mm_encoder_outputs={"image": encoded}).logits
        c = with_attn(apply_pitome(case.stock, visual_tokens=3), "sdpa")(**text, mm_encoder_outputs={"image": encoded})
        torch.testing.assert_close(a, on(**x).logits)
    with_attn(case.stock, "eager")
    assert (a - b)[valid].abs().max() > 1e-4
    torch.testing.assert_close(a[valid], c.logits[valid], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
def test_bad_settings_and_prompts_are_refused_with_one_line(case):
    for name, value in (("visual_tokens", 0), ("visual_tokens", 2.5), ("keep_ratio", 0.0), ("keep_ratio", 1.5)):
        with pytest.raises(ValueError, match=name):
            case.config_class(**{name: value})
    with pytest.raises(ValueError, match="merge_method=.*per-layer list"):
        case.config_class(merge_method=["tome"])
    with pytest.raises(ValueError, match="visual_selection"):
        case.config_class(visual_selection="fastv")
    model = apply_pitome(case.stock, visual_tokens=3)
    with pytest.raises(ValueError, match=case.stock_prompt_refusal) as info:
        with torch.no_grad():
            model(**case.batch(case.stock_processor))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2' cannot add"):
        with_attn(apply_pitome(case.stock, visual_tokens=3), "flash_attention_2")(
            **case.batch(case.processor_for(model.config)))
    with_attn(case.stock, "eager")


# ------------------------------------------------------------------------------------------------------------------
# generate strategies that expand the batch, assisted decoding, inputs_embeds, a cache reused across calls (issue #31)
def _expanded_order(case, prompts, expand):
    """The batch's visual inputs in the order generate gives them to the expanded rows: each prompt's inputs repeated
    `expand` times."""
    groups, start = [], 0
    for p in prompts:
        groups.append(list(range(start, start + len(case.per_prompt[p]))))
        start += len(case.per_prompt[p])
    return [i for group in groups for _ in range(expand) for i in group]


@pytest.mark.parametrize("settings", [dict(visual_tokens=4), dict(keep_ratio=0.4)], ids=["tokens4", "keep0.4"])
@pytest.mark.parametrize("prompts", ["one", "all"])
def test_expanded_generation_gives_each_row_its_source_rows_reduction(case, settings, prompts):
    """Beam search and several returned sequences repeat each prompt (after its visual inputs are encoded): every
    expanded row gets its source row's reduction. The beam-search prefill equals the unexpanded forward row by row
    (logits, survivors, sizes, positions); sampling with top_k=1 and two sequences per prompt returns the greedy
    result twice; a batch's beam search gives each prompt what its own beam search gives."""
    model = apply_pitome(case.stock, **settings)
    prompts = [0] if prompts == "one" else list(range(len(case.texts)))
    x = case.batch(case.processor_for(model.config), prompts)
    order = _expanded_order(case, prompts, 2)
    with torch.no_grad():
        seen, handle = prefill_positions(model)
        want = model(**case.step_inputs(x, x["input_ids"], x["attention_mask"]))  # positions as generate makes them
        handle.remove()
        calls = []
        hook = model.register_forward_hook(lambda module, args, out: calls.append(out))
        seen_beams, handle = prefill_positions(model)
        beams = model.generate(**x, num_beams=2, max_new_tokens=4, do_sample=False)
        hook.remove(), handle.remove()
        greedy = model.generate(**x, max_new_tokens=4, do_sample=False)
        sampled = model.generate(**x, max_new_tokens=4, do_sample=True, top_k=1, num_return_sequences=2)
        alone = [model.generate(**case.batch(case.processor_for(model.config), [p]), num_beams=2, max_new_tokens=4,
                                do_sample=False) for p in prompts]
    prefill, visual = calls[0], want.image_outputs
    torch.testing.assert_close(prefill.logits[:, -1], want.logits[:, -1].repeat_interleave(2, 0), rtol=1e-5, atol=1e-5)
    for name in ("kept_indices", "token_sizes", "token_maps"):
        got = getattr(prefill.image_outputs, name)
        assert len(got) == len(order) and all(torch.equal(g, getattr(visual, name)[i]) for g, i in zip(got, order))
    assert torch.equal(prefill.token_counts, want.token_counts[order])
    positions, positions_beams = seen["position_ids"], seen_beams["position_ids"]
    if positions.ndim == 3:  # M-RoPE (t, h, w); generate adds a text row first
        positions, positions_beams = positions[-3:], positions_beams[-3:]
    assert torch.equal(positions_beams, positions.repeat_interleave(2, -2))
    assert torch.equal(sampled, greedy.repeat_interleave(2, 0))
    length = x["input_ids"].shape[1]
    for row, single in enumerate(alone):
        assert torch.equal(beams[row, length:], single[0, single.shape[1] - beams.shape[1] + length:])


def test_unreduced_beam_search_equals_stock(case):
    model = apply_pitome(case.stock, keep_ratio=1.0)
    x = case.batch(case.stock_processor)
    with torch.no_grad():
        want = case.stock.generate(**x, num_beams=2, num_return_sequences=2, max_new_tokens=4, do_sample=False)
        got = model.generate(**x, num_beams=2, num_return_sequences=2, max_new_tokens=4, do_sample=False)
    assert torch.equal(got, want)


@pytest.mark.parametrize("assistant", ["stock", "itself", "prompt_lookup"])
def test_assisted_decoding_equals_greedy(case, assistant):
    """Assisted decoding (one prompt: transformers' own limit) verifies the drafts with forwards of several new tokens
    (the prefill holds the prompt and a first draft): it gives the greedy tokens, whichever model drafts."""
    model = apply_pitome(case.stock, keep_ratio=0.4)
    x = case.batch(case.processor_for(model.config), [0])
    extra = {"stock": dict(assistant_model=case.stock), "itself": dict(assistant_model=model),
             "prompt_lookup": dict(prompt_lookup_num_tokens=2)}[assistant]
    with torch.no_grad():
        greedy = model.generate(**x, max_new_tokens=6, do_sample=False)
        assisted = model.generate(**x, **extra, max_new_tokens=6, do_sample=False)
    assert torch.equal(assisted, greedy)


def test_inputs_embeds_work_as_stock_without_reduced_inputs_and_are_refused_with_them(case):
    """Text-only inputs_embeds, and unreduced images given as inputs_embeds, generate as stock; reduced images cannot
    be placed without input_ids (with or without proportional attention): refused in one line."""
    stock_inputs = case.batch(case.stock_processor)
    embed = case.stock.get_input_embeddings()
    text = torch.tensor([[5, 6, 7, 8, 9]])
    unreduced = apply_pitome(case.stock, keep_ratio=1.0)
    with torch.no_grad():
        for model in (apply_pitome(case.stock, keep_ratio=0.4), unreduced):
            assert torch.equal(model.generate(inputs_embeds=embed(text), max_new_tokens=3, do_sample=False),
                               case.stock.generate(inputs_embeds=embed(text), max_new_tokens=3, do_sample=False))
        rest = {k: v for k, v in stock_inputs.items() if k != "input_ids"}
        want = case.stock.generate(inputs_embeds=embed(stock_inputs["input_ids"]), **rest, max_new_tokens=3,
                                   do_sample=False)
        assert torch.equal(unreduced.generate(inputs_embeds=embed(stock_inputs["input_ids"]), **rest, max_new_tokens=3,
                                              do_sample=False), want)
        for settings in (dict(keep_ratio=0.4), dict(keep_ratio=0.4, proportional_attention=False)):
            model = apply_pitome(case.stock, **settings)
            x = case.batch(case.processor_for(model.config))
            rest = {k: v for k, v in x.items() if k != "input_ids"}
            with pytest.raises(ValueError, match="inputs_embeds with images or videos is not supported") as info:
                model.generate(inputs_embeds=embed(x["input_ids"]), **rest, max_new_tokens=2)
            assert "\n" not in str(info.value)


def test_generate_continues_a_cache_from_an_earlier_call(case):
    """A second generate that continues the first one's cache with the grown sequence (no visual inputs: the cache
    holds them, with their sizes and positions) gives the tokens one longer generate gives; the visual inputs given
    again with that cache are refused in one line (the stock model refuses them too), reduced or not."""
    for settings in (dict(keep_ratio=0.4), dict(keep_ratio=1.0)):
        model = apply_pitome(case.stock, **settings)
        x = case.batch(case.processor_for(model.config))
        with torch.no_grad():
            whole = model.generate(**x, max_new_tokens=5, do_sample=False)
            first = model.generate(**x, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
            ids = first.sequences
            mask = torch.cat([x["attention_mask"], torch.ones_like(ids[:, x["input_ids"].shape[1]:])], 1)
            grown = case.step_inputs(x, ids, mask)
            text = {k: v for k, v in grown.items() if k in ("input_ids", "attention_mask", "mm_token_type_ids")}
            assert torch.equal(model.generate(**text, cache=first.cache, max_new_tokens=3, do_sample=False), whole)
            cache = model.generate(**x, max_new_tokens=2, do_sample=False, return_dict_in_generate=True).cache
            grown.pop("position_ids", None)
            with pytest.raises(ValueError, match=r"cache \(past_key_values\)") as info:
                model.generate(**grown, cache=cache, max_new_tokens=1, do_sample=False)
        assert "\n" not in str(info.value)

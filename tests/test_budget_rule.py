"""The budget rule has one owner, `merging.tokens_kept` (issue #32): how many of an input's n tokens a budget keeps.

* a keep ratio rho keeps n - floor(n - n * rho), the floor taken in float64 (100 * 0.55 is 55.00000000000001 there:
  0.55 of 100 keeps 56, not 55);
* a visual-token count K keeps K per image (per temporal patch of a video), refused outside its range.

The counts below are written out as numbers, and every caller is held to them: a layer's budget (`layer_budget`,
clamped to floor(T/2)) and the token schedule, the keep-ratio count of the families that reduce at the language
model's input (`ratio_keep`), Qwen2.5-VL's count (config and processor), LLaVA-OneVision's per-image budget (base and
crops), and the reductions' own check of the count they are given.
"""

from __future__ import annotations

import pytest
import torch

from pitome_hf.modeling.configuration_pitome_llava_onevision import onevision_image_budget
from pitome_hf.modeling.configuration_pitome_qwen2_5_vl import PiToMeQwen2_5_VLConfig, qwen_visual_token_count
from pitome_hf.modeling.language_input_reduction import ratio_keep, reduction_settings
from pitome_hf.modeling.merge_config import MergeSettings, count_settings, token_schedule
from pitome_hf.modeling.merging import LayerValues, layer_budget, tokens_kept
from pitome_hf.modeling.processing_pitome_qwen2_5_vl import PiToMeQwen2_5_VLProcessor
from pitome_hf.modeling.visual_reduction import reduce_to_budget, visionzip_select

# (n, keep ratio, tokens kept): n - floor(n - n * rho) in float64, written out
RATIO_CASES = [
    (1, 0.9, 1), (2, 0.5, 1), (10, 0.9, 9), (16, 0.5, 8), (49, 0.9, 45), (64, 0.25, 16), (100, 0.55, 56),
    (180, 0.55, 100), (196, 0.9, 177), (196, 0.2, 40), (576, 0.9, 519), (576, 0.925, 533), (1024, 0.5, 512),
    (0, 0.5, 0),
]
# (n tokens of one input, K, temporal units, tokens kept or None: refused)
COUNT_CASES = [(64, 1, 1, 1), (64, 16, 1, 16), (64, 64, 1, 64), (64, 65, 1, None), (64, 16, 2, 32), (64, 32, 2, 64),
               (64, 33, 2, None), (30, 10, 3, 30), (30, 11, 3, None)]


@pytest.mark.parametrize("n, rho, kept", RATIO_CASES)
def test_the_keep_ratio_rule_through_every_caller(n, rho, kept):
    assert tokens_kept(n, rho) == tokens_kept(n, repr(float(rho))) == kept  # the repr MergeSettings passes
    # a layer: the same count merged away, clamped to floor(T/2); MergeSettings.budget and the schedule agree
    r = min(n - kept, n // 2)
    assert layer_budget(n, 0, keep_ratio=rho) == r
    settings = MergeSettings(keep_ratio=rho, num_layers=1, num_prefix=0)
    assert settings.budget(n, 0) == r and token_schedule(settings, num_tokens=n) == [n, n - r]
    # the reduction at the language model's input: unclamped
    if rho < 1.0:
        config = PiToMeQwen2_5_VLConfig(keep_ratio=rho)
        assert ratio_keep(reduction_settings(config), n) == kept
        if n:
            # Qwen2.5-VL: n merged tokens (2 x 2 patches each) of a (1, 2, 2n) grid, model config and processor
            assert qwen_visual_token_count(config, (1, 2, 2 * n)) == kept
            processor = object.__new__(PiToMeQwen2_5_VLProcessor)  # the count needs no tokenizer
            processor.merge_settings = count_settings(config)
            assert processor.num_visual_tokens((1, 2, 2 * n), 2) == kept


def test_onevision_parts_keep_by_the_rule():
    """LLaVA-OneVision keeps the rule's count of the base and of the crops, each on its own."""
    config = PiToMeQwen2_5_VLConfig(keep_ratio=0.55)  # any object with the merge fields
    layout = dict(tile=40, patches=10, pinpoints=[[40, 40], [40, 80], [80, 40], [80, 80]], aspect="anyres_max_9")
    budget = onevision_image_budget(config, (80, 80), False, **layout)
    assert budget.base == 100 and budget.keep_base == 56  # 100 * 0.55 in float64
    assert (budget.rows, budget.cols, budget.keep_crops) == (20, 20, 221)  # 400 - floor(400 - 220.00000000000003)
    single = onevision_image_budget(config, (80, 80), True, **layout)
    assert (single.keep_base, single.keep_crops) == (56, 0)


@pytest.mark.parametrize("n, k, per, kept", COUNT_CASES)
def test_the_visual_token_count_rule_through_every_caller(n, k, per, kept):
    if kept is None:
        with pytest.raises(ValueError, match=rf"visual-token budget {k} is out of range: it must be in 1\.\.{n // per} "):
            tokens_kept(n, None, k, per=per)
    else:
        assert tokens_kept(n, None, k, per=per) == kept
    # Qwen2.5-VL: a (t, h, w) grid of `per` temporal patches, n merged tokens in all
    config = PiToMeQwen2_5_VLConfig(visual_tokens=k)
    grid = (per, 2, 2 * n // per)
    if kept is None:
        with pytest.raises(ValueError, match=rf"visual_tokens={k} asks for {k * per} visual tokens, but an input of "
                           rf"grid \(t, h, w\) = \({per}, 2, {2 * n // per}\) has only {n}: allowed values are "
                           rf"1\.\.{n // per} for this input\."):
            qwen_visual_token_count(config, grid)
    else:
        assert qwen_visual_token_count(config, grid) == kept
    # the reductions take only a count the input can meet
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    layer = LayerValues(method="pitome", margin=0.9, alpha=1.0, energy="exp", split="alternate", keep_order=True)
    want = k * per
    if want <= n:
        assert reduce_to_budget(x, x, want, layer)[0].shape[0] == want
        assert visionzip_select(x, x, torch.rand(n), want)[0].shape[0] == want
    else:
        for reduce in (lambda: reduce_to_budget(x, x, want, layer), lambda: visionzip_select(x, x, torch.rand(n), want)):
            with pytest.raises(ValueError, match=rf"the visual-token budget {want} is out of range: it must be in "
                               rf"1\.\.{n} for this input\."):
                reduce()


def test_onevision_count_range_and_its_message():
    """LLaVA-OneVision splits K between base and crops (each keeps at least one): K in 2..n with crops, 1..n without."""
    layout = dict(tile=40, patches=10, pinpoints=[[40, 40], [40, 80], [80, 40], [80, 80]], aspect="anyres_max_9")
    stock = onevision_image_budget(PiToMeQwen2_5_VLConfig(merge_method="none"), (80, 80), False, **layout)
    n = stock.base + stock.rows * stock.cols
    for k, least in ((1, 2), (n + 1, 2)):
        with pytest.raises(ValueError, match=rf"visual_tokens={k} does not fit an image of 80 x 80 px, which has {n} "
                           rf"features \(100 base \+ {n - 100} crops\): allowed values are {least}\.\.{n} for this image\."):
            onevision_image_budget(PiToMeQwen2_5_VLConfig(visual_tokens=k), (80, 80), False, **layout)
    full = onevision_image_budget(PiToMeQwen2_5_VLConfig(visual_tokens=n), (80, 80), False, **layout)
    assert full.keep_base + full.keep_crops == n
    single = onevision_image_budget(PiToMeQwen2_5_VLConfig(visual_tokens=1), (80, 80), True, **layout)
    assert (single.keep_base, single.keep_crops) == (1, 0)
    with pytest.raises(ValueError, match=r"allowed values are 1\.\.100 for this image"):
        onevision_image_budget(PiToMeQwen2_5_VLConfig(visual_tokens=101), (80, 80), True, **layout)

# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of PiToMe Qwen2.5-VL: a `Qwen2_5_VLConfig` plus the visual-token reduction settings.

Where the tokens are reduced (the design decision, see modeling_pitome_qwen2_5_vl.py for the whole of it): once per
image (or video), at the language model's input, after the vision tower's 2x2 patch merger. The vision tower runs
as stock (its window attention groups and the merger need the full grid). The merge settings therefore describe a
single reduction point: `merge_num_hidden_layers` is 1 (layer index 0 for the margin schedule, `merge_layers` and
per-layer lists).

Budgets, per image (per video), one of the two (giving both is refused, and the one given replaces the other:
`merge_fields.resolve_budgets`):
* `visual_tokens=K`: K visual tokens per image; a video of t temporal patches gets K * t. A K larger than the
  image's own count is refused.
* otherwise `keep_ratio=rho`: n - floor(n - n * rho) of the n stock tokens (`merging.tokens_kept`, the float64 rule
  `merging.layer_budget` clamps to floor(n/2); unclamped here: the reduction runs several bipartite steps when it must).
* `merge_method="none"` (or `merge_layers` without 0) reduces nothing.

`visual_selection` picks the reduction: "merge" (the `merge_method`: pitome, tome or pitome_bsm, by energy or
bipartite matching, size-weighted) or "visionzip" (dominant tokens by the attention they receive in the vision
tower's last block, plus contextual tokens merging the rest; `visual_reduction.visionzip_plan`), which runs no merge
method: next to it merge_method is "pitome" (on, the default) or "none", another is refused.

`qwen_visual_token_count` is the one count function: the processor (how many `<|image_pad|>` / `<|video_pad|>` it
writes) and the model (how many features it keeps) both call it.
"""

from transformers import Qwen2_5_VLConfig

from .language_input_reduction import VisualBudgetConfigMixin, reduces, reduction_settings
from .merging import tokens_kept


def qwen_visual_token_count(config, grid_thw, spatial_merge_size: int = None) -> int:
    """Visual tokens the language model receives for one image or video of grid (t, h, w) patches.

    `config`: a PiToMe Qwen2.5-VL config, or any object with the merge fields (the processor's view); a stock config
    (no merge fields) reduces nothing. Raises ValueError when `visual_tokens` asks for more tokens than the image has."""
    t, h, w = (int(v) for v in grid_thw)
    if spatial_merge_size is None:
        spatial_merge_size = config.vision_config.spatial_merge_size
    n = t * h * w // (spatial_merge_size ** 2)
    if not hasattr(config, "keep_ratio"):
        return n
    settings = reduction_settings(config)
    if not reduces(settings):
        return n
    K = settings.visual_tokens  # K per temporal patch, or None: the keep ratio (`merging.tokens_kept`, the rule)
    return tokens_kept(n, settings.number("keep_ratio"), K, per=t, refusal=lambda least, most: (
        f"visual_tokens={K} asks for {K * t} visual tokens, but an input of grid (t, h, w) = ({t}, {h}, {w}) has only "
        f"{n}: allowed values are {least}..{most} for this input."))


def qwen2_5_vl_dummy_inputs(config) -> dict:
    """One prompt with one image of 4 x 4 merged tokens (before any reduction) at the model's own patch size: the
    input `pitome-hf push` checks a folder with."""
    import torch

    vision = config.vision_config
    side = 4 * vision.spatial_merge_size
    n = qwen_visual_token_count(config, (1, side, side))
    text = [1, 2], [3, 4, 5]
    ids = torch.tensor([[*text[0], config.vision_start_token_id, *[config.image_token_id] * n,
                         config.vision_end_token_id, *text[1]]])
    g = torch.Generator().manual_seed(0)
    patch = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": (ids == config.image_token_id).int(),
            "pixel_values": torch.randn(side * side, patch, generator=g), "image_grid_thw": torch.tensor([[1, side, side]])}


class PiToMeQwen2_5_VLConfig(VisualBudgetConfigMixin, Qwen2_5_VLConfig):
    r"""A [`Qwen2_5_VLConfig`] with visual-token reduction at the language model's input.

    Besides the merge fields (`MergeConfigMixin`; `visual_tokens` is read here), `visual_selection`: "merge"
    (PiToMe / ToMe / pitome_bsm by `merge_method`) or "visionzip" (dominant + contextual tokens). Example:

    ```python
    >>> config = PiToMeQwen2_5_VLConfig(visual_tokens=64)  # 64 visual tokens per image
    >>> qwen_visual_token_count(config, (1, 32, 32))
    64
    ```
    """

    model_type = "pitome_qwen2_5_vl"
    stock_model_types = ("qwen2_5_vl",)
    auto_map_classes = {
        "AutoModel": "modeling_pitome_qwen2_5_vl.PiToMeQwen2_5_VLModel",
        "AutoModelForImageTextToText": "modeling_pitome_qwen2_5_vl.PiToMeQwen2_5_VLForConditionalGeneration",
        "AutoProcessor": "processing_pitome_qwen2_5_vl.PiToMeQwen2_5_VLProcessor",
    }
    family_name = "PiToMe Qwen2.5-VL"


__all__ = ["PiToMeQwen2_5_VLConfig", "qwen2_5_vl_dummy_inputs", "qwen_visual_token_count"]

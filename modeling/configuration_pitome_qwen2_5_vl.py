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

`qwen_visual_token_count` (qwen_reduction.py, shared by the Qwen families) is the one count function: the processor
(how many `<|image_pad|>` / `<|video_pad|>` it
writes) and the model (how many features it keeps) both call it.
"""

from transformers import Qwen2_5_VLConfig

from .language_input_reduction import VisualBudgetConfigMixin
from .qwen_reduction import qwen_dummy_inputs, qwen_visual_token_count


qwen2_5_vl_dummy_inputs = qwen_dummy_inputs  # the name the registry has used


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

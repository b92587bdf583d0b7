# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of PiToMe Qwen3-VL: a `Qwen3VLConfig` plus the visual-token reduction settings.

As for Qwen2.5-VL (configuration_pitome_qwen2_5_vl.py has the budget rules): one reduction point, at the language
model's input, once per image, after the vision tower's 2x2 patch merger. What differs:

* **Videos: a budget per temporal patch** (`frames_apart`). The stock processor writes each temporal patch of a video
  as its own run of `<|video_pad|>` between timestamp text (`<1.0 seconds><|vision_start|>...<|vision_end|>`), and
  the stock positions treat each run as an image of its own. So each temporal patch is reduced on its own, to
  `visual_tokens` (a video of t temporal patches gets K * t) or by the keep ratio: every frame's survivors stay
  between their own timestamps, and no token of one frame is merged into another's (which its timestamp would then
  misdate).
* **DeepStack**: the tower's DeepStack features follow the same reduction (modeling_pitome_qwen3_vl.py).
"""

from transformers import Qwen3VLConfig

from .language_input_reduction import VisualBudgetConfigMixin
from .qwen_reduction import qwen_visual_token_count  # noqa: F401 (the docstring's example)


class PiToMeQwen3VLConfig(VisualBudgetConfigMixin, Qwen3VLConfig):
    r"""A [`Qwen3VLConfig`] with visual-token reduction at the language model's input (budgets per image and per
    temporal patch of a video). Example:

    ```python
    >>> config = PiToMeQwen3VLConfig(visual_tokens=64)  # 64 visual tokens per image, 64 per temporal patch
    >>> qwen_visual_token_count(config, (4, 32, 32))
    256
    ```
    """

    model_type = "pitome_qwen3_vl"
    stock_model_types = ("qwen3_vl",)
    auto_map_classes = {
        "AutoModel": "modeling_pitome_qwen3_vl.PiToMeQwen3VLModel",
        "AutoModelForImageTextToText": "modeling_pitome_qwen3_vl.PiToMeQwen3VLForConditionalGeneration",
        "AutoProcessor": "processing_pitome_qwen3_vl.PiToMeQwen3VLProcessor",
    }
    family_name = "PiToMe Qwen3-VL"
    frames_apart = True  # a class attribute, never saved


__all__ = ["PiToMeQwen3VLConfig"]

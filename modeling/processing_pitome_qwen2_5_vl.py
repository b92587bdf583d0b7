# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe Qwen2.5-VL processor: a `Qwen2_5_VLProcessor` that writes the budgeted number of visual tokens.

Each image (video) becomes `qwen_visual_token_count(settings, grid)` `<|image_pad|>` (`<|video_pad|>`) tokens: the
same function the model uses (qwen_reduction.py). The processor keeps the merge fields the count
depends on (`COUNT_FIELDS`: merge_method, keep_ratio, merge_r, merge_layers, protected_tokens, visual_tokens) in one
`merge_settings` parameter (ProcessorMixin saves only `__init__` parameters), so processor_config.json is
self-contained; build it from a model config with `PiToMeQwen2_5_VLProcessor.from_model_config`.
"""

from transformers import Qwen2_5_VLProcessor

from .qwen_reduction import QwenBudgetProcessorMixin


class PiToMeQwen2_5_VLProcessor(QwenBudgetProcessorMixin, Qwen2_5_VLProcessor):
    r"""[`Qwen2_5_VLProcessor`] for PiToMe Qwen2.5-VL: the budgeted number of `<|image_pad|>` / `<|video_pad|>`
    (one run per video; `qwen_reduction.QwenBudgetProcessorMixin`).

    Args beyond Qwen2_5_VLProcessor's (saved in processor_config.json; keep them equal to the model config's):
        merge_settings: the merge fields the token count depends on (`merge_config.COUNT_FIELDS`), as a dict;
            missing ones take the table's defaults.
    """


PiToMeQwen2_5_VLProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["PiToMeQwen2_5_VLProcessor"]

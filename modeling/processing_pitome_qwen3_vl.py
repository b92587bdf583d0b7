# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe Qwen3-VL processor: a `Qwen3VLProcessor` that writes the budgeted number of visual tokens: per image, and
per temporal patch of a video (the stock timestamps and frame runs kept, each run at the per-frame count). The count
is `qwen_reduction.qwen_visual_token_count`, the function the model uses. Qwen3.5 uses this processor too."""

from transformers import Qwen3VLProcessor

from .qwen_reduction import QwenBudgetProcessorMixin


class PiToMeQwen3VLProcessor(QwenBudgetProcessorMixin, Qwen3VLProcessor):
    r"""[`Qwen3VLProcessor`] for PiToMe Qwen3-VL and Qwen3.5.

    Args beyond Qwen3VLProcessor's (saved in processor_config.json; keep them equal to the model config's):
        merge_settings: the merge fields the token count depends on (`merge_config.COUNT_FIELDS`), as a dict;
            missing ones take the table's defaults.
    """

    frames_apart = True


PiToMeQwen3VLProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["PiToMeQwen3VLProcessor"]

# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of PiToMe Qwen3.5: a `Qwen3_5Config` plus the visual-token reduction settings.

Qwen3.5's vision tower is Qwen3-VL's without DeepStack, and its processor is Qwen3-VL's: the budgets are Qwen3-VL's
(configuration_pitome_qwen3_vl.py: per image, and per temporal patch of a video, `frames_apart`). Its language model
is hybrid (Gated DeltaNet linear-attention layers and full-attention layers): modeling_pitome_qwen3_5.py says what
each kind of layer does with a merged token's size.
"""

from transformers import Qwen3_5Config

from .language_input_reduction import VisualBudgetConfigMixin


class PiToMeQwen3_5Config(VisualBudgetConfigMixin, Qwen3_5Config):
    r"""A [`Qwen3_5Config`] with visual-token reduction at the language model's input (budgets per image and per
    temporal patch of a video)."""

    model_type = "pitome_qwen3_5"
    stock_model_types = ("qwen3_5",)
    auto_map_classes = {
        "AutoModel": "modeling_pitome_qwen3_5.PiToMeQwen3_5Model",
        "AutoModelForImageTextToText": "modeling_pitome_qwen3_5.PiToMeQwen3_5ForConditionalGeneration",
        "AutoProcessor": "processing_pitome_qwen3_vl.PiToMeQwen3VLProcessor",
    }
    family_name = "PiToMe Qwen3.5"
    frames_apart = True  # a class attribute, never saved


__all__ = ["PiToMeQwen3_5Config"]

# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe Qwen3-VL: Qwen3-VL whose language model receives a budgeted number of visual tokens per image and per
temporal patch of a video.

The machinery is Qwen2.5-VL's (`qwen_reduction.QwenReducedModelMixin`: where, how, positions, proportional attention,
prompts); see modeling_pitome_qwen2_5_vl.py for the design. What Qwen3-VL adds:

* **DeepStack.** The vision tower also emits features of some of its blocks (`deepstack_visual_indexes`), merged 2x2
  like the final ones, which the language model adds to the visual tokens' hidden states after its first layers, at
  `visual_pos_masks`. Each DeepStack list follows the same reduction as the final features
  (`visual_reduction.follow_reduction`): the same survivors, and a merged token's DeepStack row is the mean of the
  rows of the same stock tokens, i.e. the same size-weighted mean as its features (for a pure selection, the
  survivor's stock row). The stock forward then builds `visual_pos_masks` from the placeholders, which mark exactly
  the kept tokens, and adds row i to kept token i.
* **Positions.** Interleaved M-RoPE; survivors keep their stock (t, h, w) ids, text keeps its ids (`rope_deltas` and
  `generate` as stock). Each temporal patch of a video is its own placeholder run (timestamps between frames), so a
  budget is per temporal patch (configuration_pitome_qwen3_vl.py says why).
* **The metric.** The last vision block's keys (before rotary embedding, mean over heads, the four patches of a merged
  token concatenated), read by hooks; Qwen3-VL's tower has no window attention, so its token order is the merged
  tokens' order.
* **The mask.** Its language model takes a prepared 4-D mask directly (the proportional-attention bias).

Weights and parameter names are the stock model's; at keep ratio 1.0 or `merge_method="none"` every path is the stock
one.
"""

from __future__ import annotations

from transformers.models.qwen3_vl.modeling_qwen3_vl import (
    Qwen3VLForConditionalGeneration,
    Qwen3VLModel,
    apply_rotary_pos_emb_vision,
)

from .configuration_pitome_qwen3_vl import PiToMeQwen3VLConfig
from .language_input_reduction import ReducedGenerationMixin
from .merge_state import inherit_conversion_mappings
from .qwen_reduction import Qwen3GenerationMixin, QwenReducedModelMixin

inherit_conversion_mappings({"PiToMeQwen3VLForConditionalGeneration": ("Qwen3VLForConditionalGeneration", "qwen3_vl"),
                             "PiToMeQwen3VLModel": ("Qwen3VLModel", "qwen3_vl")})


class PiToMeQwen3VLModel(QwenReducedModelMixin, Qwen3VLModel):
    """[`Qwen3VLModel`] whose language model receives the budgeted visual tokens, DeepStack features reduced alike."""

    config_class = PiToMeQwen3VLConfig
    # the stock video features call get_image_features (ours would reduce twice): both read the stock image function
    stock_image_features = Qwen3VLModel.get_image_features
    stock_video_features = Qwen3VLModel.get_image_features
    apply_vision_rope = staticmethod(apply_rotary_pos_emb_vision)
    processor_name = "PiToMeQwen3VLProcessor"

    def _language_masks(self, mask, attention_mask, ref, past):
        return mask  # Qwen3-VL's language model reads a prepared 4-D mask as given


class PiToMeQwen3VLForConditionalGeneration(Qwen3GenerationMixin, ReducedGenerationMixin,
                                            Qwen3VLForConditionalGeneration):
    """[`Qwen3VLForConditionalGeneration`] with visual-token reduction; `generate` as for Qwen2.5-VL (see
    `ReducedGenerationMixin`: the DeepStack lists are expanded with the rest of the reduction)."""

    config_class = PiToMeQwen3VLConfig
    model_class = PiToMeQwen3VLModel


PiToMeQwen3VLConfig.register_for_auto_classes(PiToMeQwen3VLModel, PiToMeQwen3VLForConditionalGeneration)

__all__ = ["PiToMeQwen3VLForConditionalGeneration", "PiToMeQwen3VLModel"]

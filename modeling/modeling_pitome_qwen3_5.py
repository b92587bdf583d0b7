# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe Qwen3.5: Qwen3.5 whose language model receives a budgeted number of visual tokens per image and per temporal
patch of a video.

The reduction, the positions and the prompts are Qwen3-VL's (`qwen_reduction.QwenReducedModelMixin`, without DeepStack:
Qwen3.5's tower has none). What Qwen3.5 adds is its hybrid language model: Gated DeltaNet linear-attention layers
(three of every four) and full-attention layers.

**Token size in the two kinds of layer (the decision).** Proportional attention adds log(size) to the attention
logits of each merged visual key, so that a softmax gives a merged token the mass its members had together. That acts
in the **full-attention layers** only (an additive float mask, eager and sdpa, kept on the cache for decoding, as in
the other families). The **linear-attention layers see each merged token once, as it is**, with no size term: a Gated
DeltaNet layer has no softmax over keys where log(size) could act; its state is a decayed, delta-rule-corrected sum of
key-value products in which a token's weight is its own learned gate and beta. The closest analogue, writing a token of
size s into the state s times, would also apply its decay s times, i.e. decay the rest of the context as if s tokens
had passed, which is not what merging means either. So the linear layers get the stock padding mask, as stock, and a
merged token is one step of their recurrence (tests/test_qwen3_5.py checks both: the linear layers' inputs are the
same with and without proportional attention, the full-attention layers' are not).
"""

from __future__ import annotations

from transformers.masking_utils import create_recurrent_attention_mask
from transformers.models.qwen3_5.modeling_qwen3_5 import (
    Qwen3_5ForConditionalGeneration,
    Qwen3_5Model,
    apply_rotary_pos_emb_vision,
)

from .configuration_pitome_qwen3_5 import PiToMeQwen3_5Config
from .language_input_reduction import ReducedGenerationMixin
from .merge_state import inherit_conversion_mappings
from .qwen_reduction import Qwen3GenerationMixin, QwenReducedModelMixin

inherit_conversion_mappings({"PiToMeQwen3_5ForConditionalGeneration": ("Qwen3_5ForConditionalGeneration", "qwen3_5"),
                             "PiToMeQwen3_5Model": ("Qwen3_5Model", "qwen3_5")})


class PiToMeQwen3_5Model(QwenReducedModelMixin, Qwen3_5Model):
    """[`Qwen3_5Model`] whose language model receives the budgeted visual tokens."""

    config_class = PiToMeQwen3_5Config
    # the stock video features call get_image_features (ours would reduce twice): both read the stock image function
    stock_image_features = Qwen3_5Model.get_image_features
    stock_video_features = Qwen3_5Model.get_image_features
    apply_vision_rope = staticmethod(apply_rotary_pos_emb_vision)
    processor_name = "PiToMeQwen3VLProcessor"

    def _language_masks(self, mask, attention_mask, ref, past):
        """The size mask for the full-attention layers; the linear-attention layers get the stock padding mask."""
        return {"full_attention": mask,
                "linear_attention": create_recurrent_attention_mask(self.config.text_config, ref, attention_mask)}


class PiToMeQwen3_5ForConditionalGeneration(Qwen3GenerationMixin, ReducedGenerationMixin,
                                            Qwen3_5ForConditionalGeneration):
    """[`Qwen3_5ForConditionalGeneration`] with visual-token reduction; `generate` as for Qwen3-VL."""

    config_class = PiToMeQwen3_5Config
    model_class = PiToMeQwen3_5Model


PiToMeQwen3_5Config.register_for_auto_classes(PiToMeQwen3_5Model, PiToMeQwen3_5ForConditionalGeneration)

__all__ = ["PiToMeQwen3_5ForConditionalGeneration", "PiToMeQwen3_5Model"]

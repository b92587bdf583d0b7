# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe Qwen2.5-VL: Qwen2.5-VL whose language model receives a budgeted number of visual tokens per image/video.

Design (issue #21):

* **Where.** At the language model's input, once per image or video, after the vision tower's 2x2 patch merger. The
  vision tower runs unchanged: its window attention works on fixed index groups and the merger concatenates each
  2x2 block, so both need the full grid. The prefill cost is mostly the language model reading the visual tokens,
  which is what a reduction at its input removes. `get_image_features` / `get_video_features` return, per input,
  `qwen_visual_token_count(config, grid)` tokens, in their original order.
* **How.** "merge" (`merge_method` pitome, tome or pitome_bsm): `visual_reduction.reduce_to_budget`, bipartite steps
  of merging.py's selections and its size-weighted `apply_plan` until the budget is met. "visionzip":
  `visual_reduction.visionzip_select` (dominant tokens by the attention they receive in the vision tower's last
  block, the rest merged into contextual tokens). The metric (`merge_metric`): "keys", the last vision block's
  attention keys before rotary embedding, mean over heads, the four patches of each merged token concatenated; or
  "hidden", the merged features themselves. The last block's queries, keys and attention groups are read by hooks
  on that block while it runs (nothing of the stock vision tower is copied or changed).
* **Positions.** A surviving token keeps its stock M-RoPE (t, h, w) position; a merged token takes its
  destination's (the survivor it was merged into). Text after an image continues exactly as in the stock model
  (its positions depend on the grid, not on the survivors), so `rope_deltas` and `generate`'s bookkeeping (the next
  position is the last one plus one) stay right. `get_rope_index` computes the stock positions of the full grid
  (the stock `get_vision_position_ids`) and gathers them at the survivors. Before the vision tower has run
  (`generate` prepares positions first) the survivors are unknown: provisional positions are written for the visual
  tokens; the forward that computes (or receives, as `mm_encoder_outputs`) the reduced features replaces them.
* **Token size in the language model's attention.** On by default (`proportional_attention`, as in the paper and in
  every other family here): log(size) is added to the attention logits of each visual key, as an additive float
  mask (eager and sdpa; flash attention is refused while it is on), in the prefill and in every decoding step (the
  per-key bias is kept on the cache object). Why: a merged token stands for `size` stock tokens; off the shelf, the
  language model was trained to spend attention on all of them, and the bias gives the merged token the softmax
  mass its members had when they were identical (ToMe's argument). `proportional_attention=False` turns it off
  (then no mask is changed, and flash attention works).
* **Prompts.** Built by `PiToMeQwen2_5_VLProcessor` (the budgeted number of `<|image_pad|>` / `<|video_pad|>`); a
  prompt built by the stock processor is refused with the count it should have.

Weights and parameter names are the stock model's; at keep ratio 1.0 or `merge_method="none"` every path is the stock
one.
"""

from __future__ import annotations

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLModel,
    apply_rotary_pos_emb_vision,
)

from .configuration_pitome_qwen2_5_vl import PiToMeQwen2_5_VLConfig
from .language_input_reduction import ReducedGenerationMixin
from .merge_state import inherit_conversion_mappings
from .qwen_reduction import QwenGenerationHooks, QwenReducedModelMixin, QwenVisualOutput

# Qwen2.5-VL checkpoints on the Hub store transformers-4 names (model.layers.*, visual.*): give our classes the stock
# classes' renamings. overwrite=True: remote code may import this file twice.
inherit_conversion_mappings({"PiToMeQwen2_5_VLForConditionalGeneration": "Qwen2_5_VLForConditionalGeneration",
                             "PiToMeQwen2_5_VLModel": "Qwen2_5_VLModel"})

PiToMeVisualOutput = QwenVisualOutput  # the name this file has exported


class PiToMeQwen2_5_VLModel(QwenReducedModelMixin, Qwen2_5_VLModel):
    """[`Qwen2_5_VLModel`] whose language model receives the budgeted visual tokens (see the module docstring; the
    machinery is `qwen_reduction.QwenReducedModelMixin`)."""

    config_class = PiToMeQwen2_5_VLConfig
    stock_image_features = Qwen2_5_VLModel.get_image_features
    stock_video_features = Qwen2_5_VLModel.get_video_features
    apply_vision_rope = staticmethod(apply_rotary_pos_emb_vision)
    timed_videos = True
    processor_name = "PiToMeQwen2_5_VLProcessor"

    def _stock_order(self, grid_thw):
        """The window attention's token order back to the merged tokens' order."""
        from transformers.vision_utils import get_vision_window_index

        visual = self.visual
        window_index, _ = get_vision_window_index(grid_thw, spatial_merge_size=visual.spatial_merge_size,
                                                  window_size=visual.window_size, patch_size=visual.patch_size)
        return torch.argsort(window_index)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=None, pixel_values=None, pixel_values_videos=None, image_grid_thw=None, video_grid_thw=None,
                mm_token_type_ids=None, second_per_grid_ts=None, mm_encoder_outputs=None, **kwargs):
        """The stock signature (with `second_per_grid_ts`); see `QwenReducedModelMixin.forward`."""
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               cache=cache, inputs_embeds=inputs_embeds, use_cache=use_cache,
                               pixel_values=pixel_values, pixel_values_videos=pixel_values_videos,
                               image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
                               mm_token_type_ids=mm_token_type_ids, second_per_grid_ts=second_per_grid_ts,
                               mm_encoder_outputs=mm_encoder_outputs, **kwargs)


class PiToMeQwen2_5_VLForConditionalGeneration(QwenGenerationHooks, ReducedGenerationMixin,
                                               Qwen2_5_VLForConditionalGeneration):
    """[`Qwen2_5_VLForConditionalGeneration`] with visual-token reduction. `generate` (KV cache, batches of
    different image sizes with left padding, several images per prompt, videos, beam search and several returned
    sequences, assisted decoding, a cache continued with text by a later call) works as stock; see
    `ReducedGenerationMixin`. Reduced images or videos continuing a cache are refused (`_refuse_continuation`)."""

    config_class = PiToMeQwen2_5_VLConfig
    model_class = PiToMeQwen2_5_VLModel

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                labels=None, use_cache=None, pixel_values=None, pixel_values_videos=None, image_grid_thw=None,
                video_grid_thw=None, mm_token_type_ids=None, second_per_grid_ts=None, logits_to_keep=0,
                mm_encoder_outputs=None, **kwargs):
        """The stock forward (through `PiToMeQwen2_5_VLModel`), plus `token_counts`."""
        return self._counted(super().forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache, pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos, image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids, second_per_grid_ts=second_per_grid_ts, logits_to_keep=logits_to_keep,
            mm_encoder_outputs=mm_encoder_outputs, **kwargs))


PiToMeQwen2_5_VLConfig.register_for_auto_classes(PiToMeQwen2_5_VLModel, PiToMeQwen2_5_VLForConditionalGeneration)

__all__ = ["PiToMeQwen2_5_VLForConditionalGeneration", "PiToMeQwen2_5_VLModel"]

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

from contextlib import nullcontext
from dataclasses import dataclass
from itertools import accumulate
from typing import Optional

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLModel,
    apply_rotary_pos_emb_vision,
)

from .configuration_pitome_qwen2_5_vl import PiToMeQwen2_5_VLConfig, qwen_visual_token_count
from .language_input_reduction import (
    KEY_BIAS, ReducedInputModelMixin, ReducedGenerationMixin, ReducedVisualOutput, capture, flash_check, reduces,
    reduction_settings,
)
from .merge_state import inherit_conversion_mappings
from .visual_reduction import attention_received, reduce_input

# Qwen2.5-VL checkpoints on the Hub store transformers-4 names (model.layers.*, visual.*): give our classes the stock
# classes' renamings. overwrite=True: remote code may import this file twice.
inherit_conversion_mappings({"PiToMeQwen2_5_VLForConditionalGeneration": "Qwen2_5_VLForConditionalGeneration",
                             "PiToMeQwen2_5_VLModel": "Qwen2_5_VLModel"})


@dataclass
class PiToMeVisualOutput(ReducedVisualOutput):
    """`ReducedVisualOutput` plus `grid_thw`, the inputs' grids; `kept_indices` are row-major in the merged grid."""

    per_input_fields = ReducedVisualOutput.per_input_fields + ("grid_thw",)  # a class attribute, not a field
    grid_thw: Optional[torch.Tensor] = None


def _read_attention_inputs(store, args, kwargs):
    """The last vision block's attention groups (cu_seqlens) and rotary embedding, read as it is called."""
    store["cu_seqlens"] = kwargs.get("cu_seqlens", args[1] if len(args) > 1 else None)
    store["rope"] = kwargs.get("position_embeddings")


def _last_block_capture(visual):
    """Read the last vision block's attention while it runs: its qkv projection's output and its inputs."""
    attn = visual.blocks[-1].attn
    return capture({"qkv": attn.qkv}, pre_hook=(attn, _read_attention_inputs))


class PiToMeQwen2_5_VLModel(ReducedInputModelMixin, Qwen2_5_VLModel):
    """[`Qwen2_5_VLModel`] whose language model receives the budgeted visual tokens (see the module docstring)."""

    config_class = PiToMeQwen2_5_VLConfig
    supports_gradient_checkpointing = False

    # ---------------------------------------------------------------- vision: the reduction
    def get_image_features(self, pixel_values, image_grid_thw=None, **kwargs):
        return self._reduced_features(pixel_values, image_grid_thw, Qwen2_5_VLModel.get_image_features, **kwargs)

    def get_video_features(self, pixel_values_videos, video_grid_thw=None, **kwargs):
        return self._reduced_features(pixel_values_videos, video_grid_thw, Qwen2_5_VLModel.get_video_features,
                                      **kwargs)

    def _reduced_features(self, pixels, grid_thw, stock_fn, **kwargs):
        return_dict = kwargs.pop("return_dict", True)
        settings = reduction_settings(self.config)
        active = reduces(settings)
        if active:
            flash_check(self.config, settings)
        counts = [qwen_visual_token_count(self.config, g) for g in grid_thw.tolist()]  # refuses a bad budget first
        visionzip = settings.visual_selection == "visionzip"
        with (_last_block_capture(self.visual) if active else nullcontext({})) as captured:
            out = stock_fn(self, pixels, grid_thw, return_dict=True, **kwargs)
        features = list(out.pooler_output)
        stock_counts = [f.shape[0] for f in features]
        result = PiToMeVisualOutput(last_hidden_state=out.last_hidden_state, pooler_output=tuple(features),
                                    hidden_states=out.hidden_states, attentions=out.attentions, grid_thw=grid_thw)
        result.token_counts = torch.tensor([[n, k] for n, k in zip(stock_counts, counts)], device=grid_thw.device)
        if not active:
            return result if return_dict else result.to_tuple()
        metric, received = self._metric(captured, grid_thw, torch.cat(features), visionzip)
        starts = [0, *accumulate(stock_counts)]
        result.set_reduced([
            reduce_input(feature, metric[a:b], k, settings, received=received[a:b] if visionzip else None)
            for feature, k, a, b in zip(features, counts, starts, starts[1:])])
        return result if return_dict else result.to_tuple()

    def _metric(self, captured, grid_thw, merged, need_received):
        """(metric (tokens, c) in the merged tokens' original order, attention received (tokens,) or None)."""
        from transformers.vision_utils import get_vision_window_index

        visual = self.visual
        window_index, _ = get_vision_window_index(grid_thw, spatial_merge_size=visual.spatial_merge_size,
                                                  window_size=visual.window_size, patch_size=visual.patch_size)
        reverse = torch.argsort(window_index)
        unit = visual.spatial_merge_unit
        attn = visual.blocks[-1].attn
        qkv = captured["qkv"].detach()
        N = qkv.shape[0]
        q, k, _ = qkv.reshape(N, 3, attn.num_heads, -1).unbind(1)
        if self.config.merge_metric == "keys":
            metric = k.float().mean(dim=1).reshape(N // unit, -1)[reverse]
        else:
            metric = merged.detach()
        received = None
        if need_received:
            cos, sin = captured["rope"]
            q_rot, k_rot = apply_rotary_pos_emb_vision(q, k, cos, sin)
            mass = attention_received(q_rot, k_rot, captured["cu_seqlens"], attn.scaling)
            received = mass.reshape(N // unit, unit).sum(dim=1)[reverse]
        return metric, received

    # ---------------------------------------------------------------- positions
    def get_rope_index(self, input_ids, mm_token_type_ids=None, image_grid_thw=None, video_grid_thw=None,
                       second_per_grid_ts=None, attention_mask=None, kept_indices=None, **kwargs):
        """Stock M-RoPE positions of the full grid, gathered at the survivors (`kept_indices`: {"image": [...],
        "video": [...]}, one index tensor per input). Without them (positions prepared before the vision tower runs)
        a reduced input's visual tokens get provisional positions (its first k grid positions), replaced by the
        forward that reduces; text positions are exact either way. Inputs the prompt gives in full take the stock
        positions."""
        if not reduces(reduction_settings(self.config)):
            return super().get_rope_index(input_ids, mm_token_type_ids, image_grid_thw=image_grid_thw,
                                          video_grid_thw=video_grid_thw, second_per_grid_ts=second_per_grid_ts,
                                          attention_mask=attention_mask, **kwargs)
        if mm_token_type_ids is None or mm_token_type_ids.shape != input_ids.shape:
            # assisted decoding verifies candidates past the prompt's token types: the types are input_ids'
            mm_token_type_ids = self._token_types(input_ids)
        sms = self.config.vision_config.spatial_merge_size
        tokens_per_second = self.config.vision_config.tokens_per_second
        kept_indices = kept_indices or {}
        grids = {1: list(image_grid_thw) if image_grid_thw is not None else [],
                 2: list(video_grid_thw) if video_grid_thw is not None else []}
        kept = {1: list(kept_indices.get("image") or []), 2: list(kept_indices.get("video") or [])}
        seconds = list(second_per_grid_ts) if second_per_grid_ts is not None else None
        item = {1: 0, 2: 0}
        device = input_ids.device
        position_ids = torch.zeros(3, *input_ids.shape, dtype=input_ids.dtype, device=device)
        deltas = []
        for b in range(input_ids.shape[0]):
            types = mm_token_type_ids[b]
            valid = attention_mask[b].bool() if attention_mask is not None else torch.ones_like(types, dtype=torch.bool)
            types = types[valid].tolist()
            pieces, current, i = [], 0, 0
            while i < len(types):
                j = i
                while j < len(types) and types[j] == types[i]:
                    j += 1
                kind, length = types[i], j - i
                if kind == 0:
                    pieces.append(torch.arange(length, device=device).view(1, -1).expand(3, -1) + current)
                    current += length
                else:
                    index = item[kind]
                    item[kind] += 1
                    if index >= len(grids[kind]):
                        name = "image" if kind == 1 else "video"
                        raise ValueError(f"PiToMe Qwen2.5-VL: the prompt holds more {name}s than {name}_grid_thw "
                                         f"gives ({len(grids[kind])}).")
                    grid = grids[kind][index]
                    interval = 1
                    if kind == 2:
                        interval = tokens_per_second * (seconds[index] if seconds is not None else 1)
                    full = self.get_vision_position_ids(current, grid, 1, sms, interval, device=device)
                    if length == full.shape[1]:
                        pieces.append(full)
                    elif length < full.shape[1]:
                        survivors = kept[kind][index] if index < len(kept[kind]) else None
                        if survivors is None:
                            survivors = torch.arange(length, device=device)  # provisional
                        if survivors.numel() != length:
                            self._refuse_prompt(kind, length, survivors.numel())
                        pieces.append(full[:, survivors.to(device)])
                    else:
                        self._refuse_prompt(kind, length, full.shape[1])
                    current += max(int(grid[1]), int(grid[2])) // sms
                i = j
            positions = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long, device=device)
            position_ids[:, b, valid] = positions.to(position_ids.dtype)
            deltas.append((positions.max() + 1 - len(types)) if positions.numel() else torch.tensor(0, device=device))
        return position_ids, torch.stack([torch.as_tensor(d, device=device) for d in deltas]).view(-1, 1)

    def _token_types(self, input_ids):
        return ((input_ids == self.config.image_token_id).int()
                + 2 * (input_ids == self.config.video_token_id).int())

    def _refuse_prompt(self, kind, tokens, expected):
        pad = "<|image_pad|>" if kind == 1 else "<|video_pad|>"
        raise ValueError(
            f"PiToMe Qwen2.5-VL: the prompt has {tokens} {pad} tokens where the reduced model gives {expected} "
            f"{'image' if kind == 1 else 'video'} features (visual_tokens={self.config.visual_tokens}, "
            f"keep_ratio={self.config.keep_ratio}, merge_method={self.config.merge_method!r}): build prompts with "
            "PiToMeQwen2_5_VLProcessor (AutoProcessor.from_pretrained(<this checkpoint>, trust_remote_code=True)), "
            "whose settings match this model's config, not with the stock Qwen2_5_VLProcessor."
        )

    def _refuse_continuation(self):
        raise ValueError(
            "PiToMe Qwen2.5-VL: reduced images or videos continuing a cache (past_key_values) are not supported "
            "(M-RoPE positions need the whole prompt with every grid; the stock generate cannot place them either): "
            "continue a cached conversation with text only, or generate anew from the whole conversation.")

    def get_placeholder_mask(self, input_ids, inputs_embeds, image_features=None, video_features=None):
        """As stock, but a prompt with another number of visual tokens is refused naming the right processor."""
        if input_ids is not None:
            for kind, token, features in ((1, self.config.image_token_id, image_features),
                                          (2, self.config.video_token_id, video_features)):
                if features is not None and int((input_ids == token).sum()) != features.shape[0]:
                    self._refuse_prompt(kind, int((input_ids == token).sum()), features.shape[0])
        return super().get_placeholder_mask(input_ids, inputs_embeds, image_features=image_features,
                                            video_features=video_features)

    # ---------------------------------------------------------------- the forward
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=None, pixel_values=None, pixel_values_videos=None, image_grid_thw=None, video_grid_thw=None,
                mm_token_type_ids=None, second_per_grid_ts=None, mm_encoder_outputs=None, **kwargs):
        """Stock forward, after encoding (and reducing) the visual inputs here: the survivors' positions and the
        token sizes' attention bias are set before the language model runs."""
        settings, cache, return_dict = self._forward_start(cache, kwargs)
        stock_args = dict(use_cache=use_cache, image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
                          mm_token_type_ids=mm_token_type_ids, second_per_grid_ts=second_per_grid_ts)
        past = cache.get_seq_length() if cache is not None else 0
        given = {"image": pixel_values is not None or (mm_encoder_outputs or {}).get("image") is not None,
                 "video": pixel_values_videos is not None or (mm_encoder_outputs or {}).get("video") is not None}
        visual = (("images", self.config.image_token_id, given["image"]),
                  ("videos", self.config.video_token_id, given["video"]))
        if not reduces(settings):
            self._check_visual_inputs(input_ids, past, visual, reduced=False)
            out = super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  cache=cache, inputs_embeds=inputs_embeds, pixel_values=pixel_values,
                                  pixel_values_videos=pixel_values_videos, mm_encoder_outputs=mm_encoder_outputs,
                                  **stock_args, **kwargs)
            return self._with_counts(out, return_dict)
        flash_check(self.config, settings)
        if (pixel_values is not None or pixel_values_videos is not None) and mm_encoder_outputs is not None:
            raise ValueError("give pixel_values/pixel_values_videos or mm_encoder_outputs, not both.")
        encoded = dict(mm_encoder_outputs or {})
        if pixel_values is not None:
            encoded["image"] = self.get_image_features(pixel_values, image_grid_thw, return_dict=True, **kwargs)
        if pixel_values_videos is not None:
            encoded["video"] = self.get_video_features(pixel_values_videos, video_grid_thw, return_dict=True, **kwargs)
        image, video = encoded.get("image"), encoded.get("video")
        reduced = any(getattr(o, "kept_indices", None) is not None for o in (image, video) if o is not None)
        self._check_visual_inputs(input_ids, past, visual, reduced)
        if reduced and past > 0:
            self._refuse_continuation()
        if reduced:
            image_grid = image_grid_thw if image_grid_thw is not None else getattr(image, "grid_thw", None)
            video_grid = video_grid_thw if video_grid_thw is not None else getattr(video, "grid_thw", None)
            positions, deltas = self.get_rope_index(
                input_ids, mm_token_type_ids, image_grid_thw=image_grid, video_grid_thw=video_grid,
                second_per_grid_ts=second_per_grid_ts, attention_mask=attention_mask,
                kept_indices={"image": getattr(image, "kept_indices", None),
                              "video": getattr(video, "kept_indices", None)})
            self.rope_deltas = deltas
            if position_ids is not None and position_ids.ndim == 3 and position_ids.shape[0] == 4:
                positions = torch.cat([position_ids[:1], positions], dim=0)  # generate's text row kept
            position_ids = positions
        mask, key_bias = self._language_mask(
            settings, input_ids, inputs_embeds, attention_mask, cache, past,
            ((1, self.config.image_token_id, image), (2, self.config.video_token_id, video)))
        out = super().forward(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, cache=cache,
                              inputs_embeds=inputs_embeds, mm_encoder_outputs=encoded or None, **stock_args, **kwargs)
        if key_bias is not None and out.cache is not None:
            setattr(out.cache, KEY_BIAS, key_bias)
        return self._with_counts(out, return_dict)


class PiToMeQwen2_5_VLForConditionalGeneration(ReducedGenerationMixin, Qwen2_5_VLForConditionalGeneration):
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

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        """As stock; with images or videos to reduce, continuing a cache that already holds tokens is refused in one
        line (the forward's refusal, before the stock code fails on the grids)."""
        cache = model_kwargs.get("cache")
        visual = any(model_kwargs.get(k) is not None for k in ("pixel_values", "pixel_values_videos",
                                                                  "mm_encoder_outputs"))
        if visual and cache is not None and cache.get_seq_length() > 0 and reduces(reduction_settings(self.config)):
            self.model._refuse_continuation()
        return super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)


PiToMeQwen2_5_VLConfig.register_for_auto_classes(PiToMeQwen2_5_VLModel, PiToMeQwen2_5_VLForConditionalGeneration)

__all__ = ["PiToMeQwen2_5_VLForConditionalGeneration", "PiToMeQwen2_5_VLModel"]

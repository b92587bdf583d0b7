# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe LLaVA-OneVision: LLaVA-OneVision whose language model receives a budgeted number of visual tokens per image.

Design (issue #21, as the Qwen2.5-VL family):

* **Where.** At the language model's input, once per image, after the projector and the stock AnyRes packing (base
  image, then the crops unpadded, interpolated under `vision_aspect_ratio`, with newline tokens). The SigLIP tower,
  the projector and the packing run as stock (`LlavaOnevisionModel.get_image_features`); the reduction works on the
  packed features.
* **AnyRes.** The base image's features and the crops' features are reduced *separately* (the base is the only
  view of the whole image: it always keeps its share, and no crop token is merged with a base token, which cover
  the same place at another scale). Each part is reduced to its own budget (`onevision_image_budget` in
  configuration_pitome_llava_onevision.py: `visual_tokens` split between base and crops in proportion to their stock
  counts, or the keep ratio applied to each part). An image of a several-image prompt has no crops (stock): its base
  is reduced alone.
* **Newline tokens** are not image features: they are never merged, never counted in a budget, and stay in place:
  in the output (stock order), each crop row's newline follows the survivors of that row and precedes those of the
  next; the image's trailing newline (no crops) stays last. The processor writes features kept + newlines `<image>`
  tokens per image.
* **How.** "merge" (`merge_method` pitome, tome or pitome_bsm): `visual_reduction.reduce_to_budget`; "visionzip":
  `visual_reduction.visionzip_select` (dominant tokens by the attention mass they receive, the rest merged into
  contextual tokens). SigLIP has no CLS, so "received" is `attention_received`: in the feature layer's attention (each
  tile, the base or one crop, attends within itself), mean over heads, sum over the tile's queries. The metric
  (`merge_metric`): "keys", the feature layer's attention keys (mean over heads); or "hidden", the projected features.
  Keys and attention received are per SigLIP tile; they are packed as the features are (the stock
  `pack_image_features`, without newline: unpadded, and bilinearly interpolated where the stock packing
  interpolates), so each feature has its own metric. They are read by hooks on the feature layer's q/k projections.
  Survivors keep their order; a merged token is the size-weighted mean of what it absorbed.
* **Positions.** LLaVA-OneVision's language model (Qwen2) uses 1-D rotary positions. A surviving token keeps the
  position it has in the stock model (the stock image block gathered at the survivors; a merged token takes its
  destination's); text after an image keeps its stock position too, so the question stands as far from every part of
  the image as in the stock model. The language model is given these position ids in the prefill; the shift (stock
  tokens dropped, per row) is kept on the cache object and added in every decoding step to the positions `generate`
  (or the default `past + arange`) gives, so decoding continues exactly where the stock model's would.
* **Token size in the language model's attention**: log(size) on each visual key, an additive float mask kept on the
  cache for every decoding step (eager and sdpa; flash attention refused while it is on); `proportional_attention=
  False` turns it off (then flash attention works). As in the Qwen family (shared: language_input_reduction.py).
* **Videos** (`get_video_features`): after the SigLIP tower, the projector and the stock 2x2 pooling of every frame,
  each frame's pooled features are reduced separately to the frame budget (`onevision_video_budget`: `visual_tokens`
  K per frame, or the keep ratio of each frame), by the same selections; the video's one newline token (after the last
  frame) is kept in place. The metric and the attention received are per frame, pooled as the stock pools the
  features. Survivors keep their stock positions and the text after a video its stock ones, as for images.
* **Prompts.** Built by `PiToMeLlavaOnevisionProcessor` (the budgeted number of `<image>` and `<video>` tokens); a
  prompt built by the stock processor is refused with the count it should have.

`token_counts` (images, then videos, 2): [features, features the language model receives] per image and per video
(newlines excluded).
Weights and parameter names are the stock model's; at keep ratio 1.0 or `merge_method="none"` every path is the stock
one.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from transformers.models.llava_onevision.modeling_llava_onevision import (
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionModel,
    image_size_to_num_patches,
)

from .configuration_pitome_llava_onevision import (
    PiToMeLlavaOnevisionConfig, onevision_config_budget, onevision_config_video_budget,
)
from .language_input_reduction import (
    KEY_BIAS, ReducedInputModelMixin, ReducedGenerationMixin, ReducedVisualOutput, capture, flash_check, reduces,
    reduction_settings,
)
from .merge_state import inherit_conversion_mappings
from .visual_reduction import attention_received, joined, reduce_input

# stock checkpoints store transformers-4 names: our model_type and model class take the stock ones' renamings
inherit_conversion_mappings({PiToMeLlavaOnevisionConfig.model_type: "llava_onevision",
                             "PiToMeLlavaOnevisionModel": "LlavaOnevisionModel"})

_POSITION_SHIFT = "_pitome_position_shift"  # attribute of the cache object: (B, 1) stock tokens dropped per row


class PiToMeLlavaOnevisionModel(ReducedInputModelMixin, LlavaOnevisionModel):
    """[`LlavaOnevisionModel`] whose language model receives the budgeted visual tokens (see the module docstring)."""

    config_class = PiToMeLlavaOnevisionConfig
    supports_gradient_checkpointing = False

    # ---------------------------------------------------------------- images: the reduction
    def _budgets(self, image_sizes, batch_num_images, aspect, strategy):
        if batch_num_images is None:
            multi = [False] * len(image_sizes)
        else:
            multi = [int(n) != 1 for n in batch_num_images.tolist() for _ in range(int(n))]
        return [onevision_config_budget(self.config, size, m, aspect=aspect, select_strategy=strategy)
                for size, m in zip(image_sizes.tolist(), multi)], multi

    def _feature_attention(self, layer):
        """The attention module of the SigLIP layer whose output is the feature layer (the last one of a list)."""
        layers = self.vision_tower.encoder.layers
        index = (layer if isinstance(layer, int) else list(layer)[-1]) % (len(layers) + 1)
        if index == 0 and self.config.merge_metric == "keys":
            raise ValueError("merge_metric='keys' needs a feature layer after an attention block (the feature layer "
                             "is the embeddings); use merge_metric='hidden'.")
        return layers[max(index, 1) - 1].self_attn

    def get_image_features(self, pixel_values, image_sizes, vision_feature_layer=None,
                           vision_feature_select_strategy=None, vision_aspect_ratio=None, batch_num_images=None,
                           **kwargs):
        return_dict = kwargs.pop("return_dict", True)
        config = self.config
        layer = config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or config.vision_feature_select_strategy
        aspect = vision_aspect_ratio or config.vision_aspect_ratio
        settings = reduction_settings(config)
        active = reduces(settings)
        if active:
            flash_check(config, settings)
        budgets, multi = self._budgets(image_sizes, batch_num_images, aspect, strategy)  # refuses a bad budget first
        visionzip = active and settings.visual_selection == "visionzip"
        attention = self._feature_attention(layer) if active else None
        hooks = capture({"q": attention.q_proj, "k": attention.k_proj}) if active else nullcontext({})
        with hooks as captured:
            out = LlavaOnevisionModel.get_image_features(
                self, pixel_values, image_sizes, vision_feature_layer=layer, vision_feature_select_strategy=strategy,
                vision_aspect_ratio=aspect, batch_num_images=batch_num_images, return_dict=True, **kwargs)
        features = list(out.pooler_output)
        result = ReducedVisualOutput(last_hidden_state=out.last_hidden_state, pooler_output=tuple(features),
                                     hidden_states=out.hidden_states, attentions=out.attentions)
        result.token_counts = torch.tensor([[b.base + b.rows * b.cols, b.keep_base + b.keep_crops] for b in budgets],
                                           device=features[0].device)
        if not active:
            return result if return_dict else result.to_tuple()
        for feature, budget in zip(features, budgets):
            if feature.shape[0] != budget.stock_tokens:
                raise ValueError(f"an image's packed features ({feature.shape[0]}) differ from its layout "
                                 f"({budget.stock_tokens}): check image_sizes and batch_num_images.")
        metric, received = self._packed_metric(captured, attention, image_sizes, multi, aspect, features, budgets,
                                               visionzip)
        result.set_reduced([self._reduce_image(feature, budget, metric[i], received[i] if visionzip else None, settings)
                            for i, (feature, budget) in enumerate(zip(features, budgets))])
        return result if return_dict else result.to_tuple()

    def get_video_features(self, pixel_values_videos, vision_feature_layer=None, vision_feature_select_strategy=None,
                           **kwargs):
        """The stock video features (tower, projector, 2x2 pooling, one newline after the last frame), each frame's
        pooled features reduced to the frame budget (`onevision_video_budget`), the newline kept last. `pooler_output`
        is one (videos, tokens, C) tensor, as stock (the videos of a batch have the same frames)."""
        return_dict = kwargs.pop("return_dict", True)
        config = self.config
        layer = config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or config.vision_feature_select_strategy
        settings = reduction_settings(config)
        active = reduces(settings)
        if active:
            flash_check(config, settings)
        videos, frames = pixel_values_videos.shape[:2]
        budget = onevision_config_video_budget(config, frames)  # refuses a bad budget first
        visionzip = active and settings.visual_selection == "visionzip"
        attention = self._feature_attention(layer) if active else None
        hooks = capture({"q": attention.q_proj, "k": attention.k_proj}) if active else nullcontext({})
        with hooks as captured:
            out = LlavaOnevisionModel.get_video_features(
                self, pixel_values_videos, vision_feature_layer=layer, vision_feature_select_strategy=strategy,
                return_dict=True, **kwargs)
        features = out.pooler_output
        result = ReducedVisualOutput(last_hidden_state=out.last_hidden_state, pooler_output=features,
                                     hidden_states=out.hidden_states, attentions=out.attentions)
        result.token_counts = torch.tensor([[frames * budget.frame_tokens, frames * budget.keep_frame]] * videos,
                                           device=features.device)
        if not active:
            return result if return_dict else result.to_tuple()
        if features.shape[1] != budget.stock_tokens:
            raise ValueError(f"a video's pooled features ({features.shape[1]}) differ from its layout "
                             f"({budget.stock_tokens}: {frames} frames of {budget.frame_tokens} and a newline).")
        metric, received = self._frame_metric(captured, attention, features, frames, visionzip)
        m = budget.frame_tokens
        parts = []
        for v in range(videos):
            pieces = [reduce_input(features[v, f * m:(f + 1) * m], metric[v, f * m:(f + 1) * m], budget.keep_frame,
                                   settings, received=received[v, f * m:(f + 1) * m] if visionzip else None)
                      for f in range(frames)]
            newline = torch.zeros(1, dtype=torch.long, device=features.device)
            pieces.append((features[v, -1:], torch.ones(1, device=features.device), newline, newline))
            parts.append(joined(pieces, [m] * frames + [1]))
        result.set_reduced(parts)
        result.pooler_output = torch.stack(result.pooler_output)  # as stock: (videos, tokens, C)
        return result if return_dict else result.to_tuple()

    def _frame_metric(self, captured, attention, features, frames, need_received):
        """Per video (videos, frames * pooled, c): the metric of every pooled frame feature, and the attention each
        receives (videos, frames * pooled) or None; the feature layer's keys and attention mass per frame, pooled as the
        stock pools the features (`apply_pooling`)."""
        videos = features.shape[0]
        received = None
        if self.config.merge_metric == "keys":
            k = captured["k"].detach()
            T, P, _ = k.shape
            metric = self.apply_pooling(k.float().reshape(T, P, attention.num_heads, -1).mean(dim=2))
            metric = metric.reshape(videos, -1, metric.shape[-1])
        else:
            metric = features.detach()[:, :-1]
        if need_received:
            q, k = captured["q"].detach(), captured["k"].detach()
            T, P, _ = k.shape
            heads = attention.num_heads
            mass = attention_received(q.reshape(T * P, heads, -1), k.reshape(T * P, heads, -1),
                                      torch.arange(0, T * P + 1, P), attention.scale)
            received = self.apply_pooling(mass.reshape(T, P, 1)).reshape(videos, -1)
        return metric, received

    def _packed_metric(self, captured, attention, image_sizes, multi, aspect, features, budgets, need_received):
        """Per image: the metric (features, c) and the attention received (features,) or None, in the packed
        features' order (newlines excluded)."""
        vision = self.config.vision_config
        tiles = [1 if m else image_size_to_num_patches(size, self.config.image_grid_pinpoints, vision.image_size)
                 for size, m in zip(image_sizes.tolist(), multi)]
        received = [None] * len(features)
        if self.config.merge_metric == "keys":
            k = captured["k"].detach()
            T, P, C = k.shape
            per_tile = k.float().reshape(T, P, attention.num_heads, -1).mean(dim=2)
            metric = self.pack_image_features(torch.split(per_tile, tiles), image_sizes, None, aspect)[0]
        else:
            metric = [f.detach()[self._is_feature(b, f.shape[0], f.device)] for f, b in zip(features, budgets)]
        if need_received:
            q, k = captured["q"].detach(), captured["k"].detach()
            T, P, C = k.shape
            heads = attention.num_heads
            mass = attention_received(q.reshape(T * P, heads, -1), k.reshape(T * P, heads, -1),
                                      torch.arange(0, T * P + 1, P), attention.scale)
            received = [r[:, 0] for r in self.pack_image_features(torch.split(mass.reshape(T, P, 1), tiles),
                                                                  image_sizes, None, aspect)[0]]
        return metric, received

    @staticmethod
    def _newlines(budget, device):
        """Stock indices (in the packed image) of the newline tokens."""
        if not budget.rows:
            return torch.tensor([budget.base], device=device)
        return budget.base + torch.arange(budget.rows, device=device) * (budget.cols + 1) + budget.cols

    def _is_feature(self, budget, n, device):
        """(n,) True at the image features of a packed image, False at its newlines."""
        is_feature = torch.ones(n, dtype=torch.bool, device=device)
        is_feature[self._newlines(budget, device)] = False
        return is_feature

    def _reduce_image(self, feature, budget, metric, received, settings):
        """One image: the base's and the crops' features reduced separately, newlines kept in place. Returns
        (tokens, sizes, kept stock indices, token map), in stock order."""
        device = feature.device
        n = feature.shape[0]
        newlines = self._newlines(budget, device)
        stock = torch.arange(n, device=device)[self._is_feature(budget, n, device)]  # features: base, then crops
        parts = [(slice(0, budget.base), budget.keep_base),
                 (slice(budget.base, budget.base + budget.rows * budget.cols), budget.keep_crops)]
        xs, ss, idxs, members = [], [], [], torch.empty(n, dtype=torch.long, device=device)
        offset = 0
        for part, keep in parts:
            index = stock[part]
            if index.numel() == 0:
                continue
            x, s, kept, tmap = reduce_input(feature[index], metric[part], keep, settings,
                                            received=None if received is None else received[part])
            xs.append(x), ss.append(s), idxs.append(index[kept])
            members[index] = torch.where(tmap >= 0, tmap + offset, tmap)  # a dropped token (pure selection): -1
            offset += x.shape[0]
        xs.append(feature[newlines]), ss.append(torch.ones(newlines.numel(), device=device)), idxs.append(newlines)
        members[newlines] = offset + torch.arange(newlines.numel(), device=device)
        candidates = torch.cat(idxs)
        order = torch.argsort(candidates)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=device)
        token_map = torch.where(members >= 0, rank[members.clamp_min(0)], members)
        return torch.cat(xs)[order], torch.cat(ss).float()[order], candidates[order], token_map

    # ---------------------------------------------------------------- prompts and positions
    def _refuse_prompt(self, kind, tokens, expected):
        raise ValueError(
            f"PiToMe LLaVA-OneVision: the prompt has {tokens} {'<image>' if kind == 1 else '<video>'} tokens where the "
            f"reduced model gives {expected} "
            f"(visual_tokens={self.config.visual_tokens}, keep_ratio={self.config.keep_ratio}, "
            f"merge_method={self.config.merge_method!r}): build prompts with PiToMeLlavaOnevisionProcessor "
            "(AutoProcessor.from_pretrained(<this checkpoint>, trust_remote_code=True)), whose settings match this "
            "model's config, not with the stock LlavaOnevisionProcessor."
        )

    def get_placeholder_mask(self, input_ids, inputs_embeds, image_features=None, video_features=None):
        """As stock, but a prompt with another number of image or video tokens is refused naming the right
        processor."""
        for kind, token, features in ((1, self.config.image_token_id, image_features),
                                      (2, self.config.video_token_id, video_features)):
            if input_ids is not None and features is not None:
                tokens = int((input_ids == token).sum())
                if tokens != features.shape[0]:
                    self._refuse_prompt(kind, tokens, features.shape[0])
        return super().get_placeholder_mask(input_ids, inputs_embeds, image_features=image_features,
                                            video_features=video_features)

    def _position_shift(self, input_ids, visual):
        """(B, L) shift from the reduced prompt's positions to the stock ones, and (B, 1) stock tokens dropped per
        row: an image (video) token gets (its stock index - its index among its input's outputs) plus the tokens
        dropped by the inputs before it; a text token the tokens dropped by the inputs before it. `visual`: ((kind,
        placeholder token id, reduced output), ...), the reduced images and videos."""
        shift = torch.zeros(input_ids.numel(), dtype=torch.long, device=input_ids.device)
        dropped = torch.zeros_like(shift)
        for kind, token, output in visual:
            positions = (input_ids == token).flatten().nonzero()[:, 0]
            kept = list(output.kept_indices)
            counts = [k.numel() for k in kept]
            if positions.numel() != sum(counts):
                self._refuse_prompt(kind, positions.numel(), sum(counts))
            if not kept:
                continue
            stock = [int(m.numel()) for m in output.token_maps]
            shift[positions] = torch.cat([k.to(shift.device) - torch.arange(k.numel(), device=shift.device)
                                          for k in kept])
            last = positions[torch.tensor(counts, device=shift.device).cumsum(0) - 1]
            dropped[last] = torch.tensor([n - k for n, k in zip(stock, counts)], device=shift.device)
        dropped = dropped.view_as(input_ids)
        shift = shift.view_as(input_ids) + dropped.cumsum(1) - dropped
        return shift, dropped.sum(1, keepdim=True)

    # ---------------------------------------------------------------- the forward
    def forward(self, input_ids=None, pixel_values=None, image_sizes=None, pixel_values_videos=None,
                image_sizes_videos=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                vision_feature_layer=None, vision_feature_select_strategy=None, vision_aspect_ratio=None,
                batch_num_images=None, use_cache=None, mm_encoder_outputs=None, **kwargs):
        """Stock forward, after encoding (and reducing) the images here: the survivors' stock positions and the
        token sizes' attention bias are set before the language model runs."""
        settings, cache, return_dict = self._forward_start(cache, kwargs)
        stock_args = dict(image_sizes_videos=image_sizes_videos, vision_feature_layer=vision_feature_layer,
                          vision_feature_select_strategy=vision_feature_select_strategy,
                          vision_aspect_ratio=vision_aspect_ratio, batch_num_images=batch_num_images,
                          use_cache=use_cache)
        past = cache.get_seq_length() if cache is not None else 0
        visual = (("images", self.config.image_token_id,
                   pixel_values is not None or (mm_encoder_outputs or {}).get("image") is not None),
                  ("videos", self.config.video_token_id,
                   pixel_values_videos is not None or (mm_encoder_outputs or {}).get("video") is not None))
        if not reduces(settings):
            self._check_visual_inputs(input_ids, past, visual, reduced=False)
            out = super().forward(input_ids=input_ids, pixel_values=pixel_values, image_sizes=image_sizes,
                                  pixel_values_videos=pixel_values_videos, attention_mask=attention_mask,
                                  position_ids=position_ids, cache=cache, inputs_embeds=inputs_embeds,
                                  mm_encoder_outputs=mm_encoder_outputs, **stock_args, **kwargs)
            return self._with_counts(out, return_dict)
        flash_check(self.config, settings)
        if (pixel_values is not None or pixel_values_videos is not None) and mm_encoder_outputs is not None:
            raise ValueError("give pixel_values/pixel_values_videos or mm_encoder_outputs, not both.")
        encoded = dict(mm_encoder_outputs or {})
        if pixel_values is not None:
            encoded["image"] = self.get_image_features(
                pixel_values, image_sizes, vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy, vision_aspect_ratio=vision_aspect_ratio,
                batch_num_images=batch_num_images, return_dict=True)
        if pixel_values_videos is not None:  # encoded here too: the stock forward takes pixels or encodings, not both
            encoded["video"] = self.get_video_features(
                pixel_values_videos, vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy, return_dict=True)
        image, video = encoded.get("image"), encoded.get("video")
        outputs = [(kind, token, out) for kind, token, out in ((1, self.config.image_token_id, image),
                                                              (2, self.config.video_token_id, video))
                   if getattr(out, "kept_indices", None) is not None]
        reduced = bool(outputs)
        self._check_visual_inputs(input_ids, past, visual, reduced)
        shift = getattr(cache, _POSITION_SHIFT, None) if (cache is not None and past > 0) else None
        new_shift = shift
        if reduced or shift is not None:
            ref = input_ids if input_ids is not None else inputs_embeds
            batch, length = ref.shape[:2]
            if position_ids is None:
                position_ids = torch.arange(past, past + length, device=ref.device)[None].expand(batch, -1)
            offset = torch.zeros(batch, length, dtype=torch.long, device=ref.device)
            if shift is not None:
                offset = offset + shift.to(ref.device)
            if reduced:
                visual_shift, dropped = self._position_shift(input_ids, outputs)
                offset = offset + visual_shift
                new_shift = dropped if shift is None else shift.to(ref.device) + dropped
            position_ids = position_ids + offset
        mask, key_bias = self._language_mask(settings, input_ids, inputs_embeds, attention_mask, cache, past,
                                             ((1, self.config.image_token_id, image),
                                              (2, self.config.video_token_id, video)))
        out = super().forward(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, cache=cache,
                              inputs_embeds=inputs_embeds, mm_encoder_outputs=encoded or None, **stock_args, **kwargs)
        if out.cache is not None:
            if key_bias is not None:
                setattr(out.cache, KEY_BIAS, key_bias)
            if new_shift is not None:
                setattr(out.cache, _POSITION_SHIFT, new_shift)
        return self._with_counts(out, return_dict)


class PiToMeLlavaOnevisionForConditionalGeneration(ReducedGenerationMixin, LlavaOnevisionForConditionalGeneration):
    """[`LlavaOnevisionForConditionalGeneration`] with visual-token reduction. `generate` (KV cache, batches of
    different image sizes with left padding, several images per prompt, beam search and several returned sequences,
    assisted decoding, a cache continued by a later call) works as stock; see `ReducedGenerationMixin`."""

    config_class = PiToMeLlavaOnevisionConfig
    model_class = PiToMeLlavaOnevisionModel

    def forward(self, input_ids=None, pixel_values=None, image_sizes=None, pixel_values_videos=None,
                image_sizes_videos=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                vision_feature_layer=None, vision_feature_select_strategy=None, vision_aspect_ratio=None,
                batch_num_images=None, labels=None, use_cache=None, logits_to_keep=0, mm_encoder_outputs=None,
                **kwargs):
        """The stock forward (through `PiToMeLlavaOnevisionModel`), plus `token_counts`."""
        return self._counted(super().forward(
            input_ids=input_ids, pixel_values=pixel_values, image_sizes=image_sizes,
            pixel_values_videos=pixel_values_videos, image_sizes_videos=image_sizes_videos,
            attention_mask=attention_mask, position_ids=position_ids, cache=cache, inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer, vision_feature_select_strategy=vision_feature_select_strategy,
            vision_aspect_ratio=vision_aspect_ratio, batch_num_images=batch_num_images, labels=labels,
            use_cache=use_cache, logits_to_keep=logits_to_keep, mm_encoder_outputs=mm_encoder_outputs, **kwargs))


PiToMeLlavaOnevisionConfig.register_for_auto_classes(PiToMeLlavaOnevisionModel,
                                                     PiToMeLlavaOnevisionForConditionalGeneration)

__all__ = ["PiToMeLlavaOnevisionForConditionalGeneration", "PiToMeLlavaOnevisionModel"]

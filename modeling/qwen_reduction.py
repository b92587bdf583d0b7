# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""What the Qwen vision-language families share (Qwen2.5-VL, Qwen3-VL, Qwen3.5): the one count function, the model
mixin that reduces each image's (video's) visual tokens at the language model's input and keeps the survivors at their
stock M-RoPE positions, and the processor mixin that writes the budgeted number of placeholders.

A family states what differs (class attributes of its model, config and processor):

* `frames_apart` (config and processor): each temporal patch of a video is its own placeholder run, between timestamp
  text (`<0.5 seconds><|vision_start|><|video_pad|>...<|vision_end|>` per frame: Qwen3-VL, Qwen3.5). Then a budget is
  **per temporal patch**: each is reduced on its own to `visual_tokens` (or by the keep ratio), so that every frame's
  survivors stay between their own timestamps, where the stock prompt puts them, and the text that dates a frame
  still dates the same tokens. Qwen2.5-VL writes one run per video (its time is in the M-RoPE t ids): its budget is
  `visual_tokens * t` for the whole run.
* `stock_image_features` / `stock_video_features` (model): the stock functions whose output is reduced.
* `apply_vision_rope` (model): the tower's rotary embedding of q and k (VisionZip-style selection reads the attention
  the last block's keys receive); `_stock_order(grid_thw)`: the permutation from the tower's token order back to the
  merged tokens' order (Qwen2.5-VL's window attention reorders; None otherwise).
* `timed_videos` (model): Qwen2.5-VL's `second_per_grid_ts` (video t ids spaced by seconds); the others space frames by
  one.
* DeepStack (Qwen3-VL): the tower's `deepstack_features` (one list per DeepStack level, one tensor per input) follow
  the same reduction as the final features (`visual_reduction.follow_reduction`: the same survivors, a merged token's
  row is the mean of the rows of the tokens it holds), so `visual_pos_masks`, which the stock forward builds from the
  placeholders, marks exactly the kept tokens and each DeepStack row lands on its own token.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import accumulate
from types import SimpleNamespace
from typing import Optional

import torch

from .language_input_reduction import (
    KEY_BIAS, ReducedInputModelMixin, ReducedVisualOutput, capture, flash_check, reduces, reduction_settings,
)
from .merge_config import count_settings
from .merging import tokens_kept
from .visual_reduction import attention_received, follow_reduction, joined, reduce_input


# ----------------------------------------------------------------------------------------------------------------
# The count (processor and model both call it)
# ----------------------------------------------------------------------------------------------------------------
def qwen_visual_token_count(config, grid_thw, spatial_merge_size: int = None) -> int:
    """Visual tokens the language model receives for one image or video of grid (t, h, w) patches.

    `config`: a PiToMe Qwen config, or any object with the merge fields (the processor's view); a stock config (no
    merge fields) reduces nothing. With `frames_apart` (Qwen3-VL, Qwen3.5) each temporal patch is counted on its own.
    Raises ValueError when `visual_tokens` asks for more tokens than the input has."""
    t, h, w = (int(v) for v in grid_thw)
    if spatial_merge_size is None:
        spatial_merge_size = config.vision_config.spatial_merge_size
    if getattr(config, "frames_apart", False) and t > 1:
        return t * qwen_visual_token_count(config, (1, h, w), spatial_merge_size)
    n = t * h * w // (spatial_merge_size ** 2)
    if not hasattr(config, "keep_ratio"):
        return n
    settings = reduction_settings(config)
    if not reduces(settings):
        return n
    K = settings.visual_tokens  # K per temporal patch, or None: the keep ratio (`merging.tokens_kept`, the rule)
    return tokens_kept(n, settings.number("keep_ratio"), K, per=t, refusal=lambda least, most: (
        f"visual_tokens={K} asks for {K * t} visual tokens, but an input of grid (t, h, w) = ({t}, {h}, {w}) has only "
        f"{n}: allowed values are {least}..{most} for this input."))


def qwen_dummy_inputs(config) -> dict:
    """One prompt with one image of 4 x 4 merged tokens (before any reduction) at the model's own patch size: the
    input `pitome-hf push` checks a folder with."""
    vision = config.vision_config
    side = 4 * vision.spatial_merge_size
    n = qwen_visual_token_count(config, (1, side, side))
    text = [1, 2], [3, 4, 5]
    ids = torch.tensor([[*text[0], config.vision_start_token_id, *[config.image_token_id] * n,
                         config.vision_end_token_id, *text[1]]])
    g = torch.Generator().manual_seed(0)
    patch = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "mm_token_type_ids": (ids == config.image_token_id).int(),
            "pixel_values": torch.randn(side * side, patch, generator=g), "image_grid_thw": torch.tensor([[1, side, side]])}


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class QwenVisualOutput(ReducedVisualOutput):
    """`ReducedVisualOutput` plus `grid_thw` (the inputs' grids; `kept_indices` are row-major in the merged grid, frame
    after frame) and `deepstack_features` (Qwen3-VL: per level, one tensor per input, reduced like the features)."""

    per_input_fields = ReducedVisualOutput.per_input_fields + ("grid_thw",)  # class attributes, not fields
    per_level_fields = ("deepstack_features",)
    grid_thw: Optional[torch.Tensor] = None
    deepstack_features: Optional[list] = None


def _read_attention_inputs(store, args, kwargs):
    """The last vision block's attention groups (cu_seqlens) and rotary embedding, read as it is called."""
    store["cu_seqlens"] = kwargs.get("cu_seqlens", args[1] if len(args) > 1 else None)
    store["rope"] = kwargs.get("position_embeddings")


def _last_block_capture(visual):
    """Read the last vision block's attention while it runs: its qkv projection's output and its inputs."""
    attn = visual.blocks[-1].attn
    return capture({"qkv": attn.qkv}, pre_hook=(attn, _read_attention_inputs))


class QwenReducedModelMixin(ReducedInputModelMixin):
    """The PiToMe part of a Qwen vision-language model (put before the stock model class): reduced features, survivor
    positions, the forward. See the module docstring for what a family sets."""

    stock_image_features = None
    stock_video_features = None
    apply_vision_rope = None
    timed_videos = False
    processor_name = "the family's PiToMe processor"
    supports_gradient_checkpointing = False

    # ---------------------------------------------------------------- vision: the reduction
    def get_image_features(self, pixel_values, image_grid_thw=None, **kwargs):
        return self._reduced_features(pixel_values, image_grid_thw, type(self).stock_image_features, **kwargs)

    def get_video_features(self, pixel_values_videos, video_grid_thw=None, **kwargs):
        return self._reduced_features(pixel_values_videos, video_grid_thw, type(self).stock_video_features, **kwargs)

    def _stock_order(self, grid_thw):
        return None

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
        deepstack = getattr(out, "deepstack_features", None)
        result = QwenVisualOutput(last_hidden_state=out.last_hidden_state, pooler_output=tuple(features),
                                  hidden_states=out.hidden_states, attentions=out.attentions, grid_thw=grid_thw,
                                  deepstack_features=None if deepstack is None else [tuple(d) for d in deepstack])
        result.token_counts = torch.tensor([[n, k] for n, k in zip(stock_counts, counts)], device=grid_thw.device)
        if not active:
            return result if return_dict else result.to_tuple()
        metric, received = self._metric(captured, grid_thw, torch.cat(features), visionzip)
        starts = [0, *accumulate(stock_counts)]
        parts = []
        for feature, k, a, grid in zip(features, counts, starts, grid_thw.tolist()):
            frames = int(grid[0]) if getattr(self.config, "frames_apart", False) else 1
            m = feature.shape[0] // frames
            parts.append(joined([
                reduce_input(feature[f * m:(f + 1) * m], metric[a + f * m:a + (f + 1) * m], k // frames, settings,
                             received=received[a + f * m:a + (f + 1) * m] if visionzip else None)
                for f in range(frames)], [m] * frames))
        result.set_reduced(parts)
        if deepstack is not None:
            result.deepstack_features = [tuple(follow_reduction(level[i], part[3], part[1])
                                               for i, part in enumerate(parts)) for level in deepstack]
        return result if return_dict else result.to_tuple()

    def _metric(self, captured, grid_thw, merged, need_received):
        """(metric (tokens, c) in the merged tokens' original order, attention received (tokens,) or None)."""
        visual = self.visual
        reverse = self._stock_order(grid_thw)
        unit = visual.spatial_merge_unit
        attn = visual.blocks[-1].attn
        qkv = captured["qkv"].detach()
        N = qkv.shape[0]
        q, k, _ = qkv.reshape(N, 3, attn.num_heads, -1).unbind(1)
        if self.config.merge_metric == "keys":
            metric = k.float().mean(dim=1).reshape(N // unit, -1)
            metric = metric if reverse is None else metric[reverse]
        else:
            metric = merged.detach()
        received = None
        if need_received:
            cos, sin = captured["rope"]
            q_rot, k_rot = type(self).apply_vision_rope(q, k, cos, sin)
            mass = attention_received(q_rot, k_rot, captured["cu_seqlens"], attn.scaling)
            received = mass.reshape(N // unit, unit).sum(dim=1)
            received = received if reverse is None else received[reverse]
        return metric, received

    # ---------------------------------------------------------------- positions
    def get_rope_index(self, input_ids, mm_token_type_ids=None, image_grid_thw=None, video_grid_thw=None,
                       second_per_grid_ts=None, attention_mask=None, kept_indices=None, **kwargs):
        """Stock M-RoPE positions of the full grid, gathered at the survivors (`kept_indices`: {"image": [...],
        "video": [...]}, one index tensor per input). Without them (positions prepared before the vision tower runs)
        a reduced input's visual tokens get provisional positions (its first k grid positions), replaced by the
        forward that reduces; text positions are exact either way. Inputs the prompt gives in full take the stock
        positions. With `frames_apart` each temporal patch of a video is a run of its own (as stock)."""
        stock_args = dict(image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw, attention_mask=attention_mask)
        if self.timed_videos:
            stock_args["second_per_grid_ts"] = second_per_grid_ts
        if not reduces(reduction_settings(self.config)):
            return super().get_rope_index(input_ids, mm_token_type_ids, **stock_args, **kwargs)
        if mm_token_type_ids is None or mm_token_type_ids.shape != input_ids.shape:
            # assisted decoding verifies candidates past the prompt's token types: the types are input_ids'
            mm_token_type_ids = self._token_types(input_ids)
        sms = self.config.vision_config.spatial_merge_size
        kept_indices = kept_indices or {}
        grids = {1: list(image_grid_thw) if image_grid_thw is not None else [],
                 2: list(video_grid_thw) if video_grid_thw is not None else []}
        kept = {1: list(kept_indices.get("image") or []), 2: list(kept_indices.get("video") or [])}
        seconds = list(second_per_grid_ts) if second_per_grid_ts is not None else None
        intervals = {1: [1] * len(grids[1]), 2: [self._video_interval(i, seconds) for i in range(len(grids[2]))]}
        if getattr(self.config, "frames_apart", False):
            grids[2], kept[2], intervals[2] = self._frames(grids[2], kept[2])
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
                        raise ValueError(f"{self.config.family_name}: the prompt holds more {name}s (or frames) than "
                                         f"{name}_grid_thw gives ({len(grids[kind])}).")
                    grid = grids[kind][index]
                    full = self.get_vision_position_ids(current, grid, 1, sms, intervals[kind][index], device=device)
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

    def _video_interval(self, index, seconds):
        if not self.timed_videos:
            return 1
        return self.config.vision_config.tokens_per_second * (seconds[index] if seconds is not None else 1)

    def _frames(self, grids, kept):
        """Videos split into their temporal patches (as the stock positions split them): one grid (1, h, w) and the
        survivors of that frame (indices within it) per temporal patch."""
        sms = self.config.vision_config.spatial_merge_size
        out_grids, out_kept = [], []
        for index, grid in enumerate(grids):
            t, h, w = (int(v) for v in grid)
            m = h * w // (sms * sms)
            survivors = kept[index] if index < len(kept) else None
            for f in range(t):
                out_grids.append(torch.tensor([1, h, w]))
                if survivors is not None:
                    inside = survivors[(survivors >= f * m) & (survivors < (f + 1) * m)]
                    out_kept.append(inside - f * m)
        return out_grids, (out_kept if len(out_kept) == len(out_grids) else []), [1] * len(out_grids)

    def _token_types(self, input_ids):
        return ((input_ids == self.config.image_token_id).int()
                + 2 * (input_ids == self.config.video_token_id).int())

    def _refuse_prompt(self, kind, tokens, expected):
        pad = "<|image_pad|>" if kind == 1 else "<|video_pad|>"
        raise ValueError(
            f"{self.config.family_name}: the prompt has {tokens} {pad} tokens where the reduced model gives {expected} "
            f"{'image' if kind == 1 else 'video'} features (visual_tokens={self.config.visual_tokens}, "
            f"keep_ratio={self.config.keep_ratio}, merge_method={self.config.merge_method!r}): build prompts with "
            f"{self.processor_name} (AutoProcessor.from_pretrained(<this checkpoint>, trust_remote_code=True)), "
            "whose settings match this model's config, not with the stock processor."
        )

    def _refuse_continuation(self):
        raise ValueError(
            f"{self.config.family_name}: reduced images or videos continuing a cache (past_key_values) are not "
            "supported (M-RoPE positions need the whole prompt with every grid; the stock generate cannot place them "
            "either): continue a cached conversation with text only, or generate anew from the whole conversation.")

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
                mm_token_type_ids=None, mm_encoder_outputs=None, **kwargs):
        """Stock forward, after encoding (and reducing) the visual inputs here: the survivors' positions and the
        token sizes' attention bias are set before the language model runs."""
        settings, cache, return_dict = self._forward_start(cache, kwargs)
        second_per_grid_ts = kwargs.pop("second_per_grid_ts", None)
        stock_args = dict(use_cache=use_cache, image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
                          mm_token_type_ids=mm_token_type_ids)
        if self.timed_videos:
            stock_args["second_per_grid_ts"] = second_per_grid_ts
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


class QwenGenerationHooks:
    """For a Qwen generation class (first, before `ReducedGenerationMixin` and the stock class): with images or videos to
    reduce, continuing a cache that already holds tokens is refused in one line (the forward's refusal, before the
    stock code fails on the grids)."""

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        cache = model_kwargs.get("cache")
        visual = any(model_kwargs.get(k) is not None for k in ("pixel_values", "pixel_values_videos",
                                                                  "mm_encoder_outputs"))
        if visual and cache is not None and cache.get_seq_length() > 0 and reduces(reduction_settings(self.config)):
            self.model._refuse_continuation()
        return super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)


class Qwen3GenerationMixin(QwenGenerationHooks):
    """The generation class's forward of the Qwen3 families (Qwen3-VL, Qwen3.5: the same stock signature): the stock
    forward through the family's PiToMe model, plus `token_counts`. Put it first, before `ReducedGenerationMixin`."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                labels=None, pixel_values=None, pixel_values_videos=None, image_grid_thw=None, video_grid_thw=None,
                mm_token_type_ids=None, logits_to_keep=0, mm_encoder_outputs=None, **kwargs):
        return self._counted(super().forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, labels=labels, pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos, image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids, logits_to_keep=logits_to_keep, mm_encoder_outputs=mm_encoder_outputs,
            **kwargs))


# ----------------------------------------------------------------------------------------------------------------
# The processor
# ----------------------------------------------------------------------------------------------------------------
class QwenBudgetProcessorMixin:
    """For a Qwen processor (put before the stock processor class): each image (video) becomes
    `qwen_visual_token_count(settings, grid)` placeholders, the function the model uses. The merge fields the count
    depends on (`merge_config.COUNT_FIELDS`) are kept in one `merge_settings` parameter (ProcessorMixin saves only
    `__init__` parameters), so processor_config.json is self-contained; build one from a model config with
    `from_model_config`. `frames_apart`: the stock processor writes one run per temporal patch of a video (between
    timestamps), and each run gets the per-frame count."""

    frames_apart = False

    def __init__(self, image_processor=None, tokenizer=None, video_processor=None, chat_template=None,
                 merge_settings=None, **kwargs):
        self.merge_settings = count_settings(merge_settings, f"{type(self).__name__} merge_settings")
        super().__init__(image_processor, tokenizer, video_processor, chat_template=chat_template, **kwargs)

    @classmethod
    def from_model_config(cls, config, image_processor, tokenizer, video_processor=None, **kwargs):
        """A processor whose settings are those of a PiToMe model config."""
        return cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                   merge_settings=count_settings(config), **kwargs)

    def _settings(self):
        return SimpleNamespace(**self.merge_settings, default_protected_tokens=0, frames_apart=self.frames_apart)

    def num_visual_tokens(self, grid_thw, merge_size: int) -> int:
        """Visual tokens the model receives for one input of grid (t, h, w)."""
        return qwen_visual_token_count(self._settings(), grid_thw, spatial_merge_size=merge_size)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        grid = image_inputs["image_grid_thw"][image_idx]
        return self.image_token * self.num_visual_tokens(grid, self.image_processor.merge_size)

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        grid = video_inputs["video_grid_thw"][video_idx]
        merge = self.video_processor.merge_size
        if not self.frames_apart:
            return self.video_token * self.num_visual_tokens(grid, merge)
        # the stock text (timestamps, one run per temporal patch), each run at the per-frame count
        stock = super().replace_video_token(video_inputs, video_idx, **kwargs)
        t, h, w = (int(v) for v in grid)
        per_frame = self.num_visual_tokens((1, h, w), merge)
        run = "(?:" + re.escape(self.video_token) + "){" + str(h * w // merge ** 2) + "}"
        return re.sub(run, lambda _: self.video_token * per_frame, stock)

    def _get_num_multimodal_tokens(self, image_sizes=None, video_sizes=None, **kwargs):
        data = super()._get_num_multimodal_tokens(image_sizes=image_sizes, video_sizes=video_sizes, **kwargs)
        merge = self.image_processor.merge_size
        if image_sizes is not None:
            data.num_image_tokens = [self.num_visual_tokens((1, 1, n * merge * merge), merge)
                                     for n in data.num_image_tokens]
        if video_sizes is not None and getattr(data, "num_video_tokens", None) is not None:
            merge_v, tp = self.video_processor.merge_size, self.video_processor.temporal_patch_size
            data.num_video_tokens = [
                self.num_visual_tokens((-(-int(size[0]) // tp), 1, n * merge_v * merge_v // -(-int(size[0]) // tp)),
                                       merge_v)
                for size, n in zip(video_sizes, data.num_video_tokens)]
        return data


__all__ = ["Qwen3GenerationMixin", "QwenBudgetProcessorMixin", "QwenGenerationHooks", "QwenReducedModelMixin", "QwenVisualOutput",
           "qwen_dummy_inputs", "qwen_visual_token_count"]

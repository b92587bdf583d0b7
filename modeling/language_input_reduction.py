# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""What the VLM families that reduce visual tokens at the language model's input share (Qwen2.5-VL,
LLaVA-OneVision): the one reduction point's settings and budget rule, the config mixin, the outputs, the hooks that read
the vision tower's attention while it runs, the proportional-attention bias of the language model (log(size) on each
visual key, an additive float mask kept on the cache), and the generation class's construction and token counts.

The reduction itself (which tokens merge) is `visual_reduction.py`; each family's modeling file says where its
features come from and how its positions are kept.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import torch
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling, MultimodalBaseModelOutputWithPast, MultimodalCausalLMOutputWithPast,
)
from transformers.utils import ModelOutput

from .merge_config import MergeConfigMixin, MergeSettings, settings_of
from .merge_state import PROPORTIONAL_ATTENTION_BACKENDS
from .merging import tokens_kept

KEY_BIAS = "_pitome_key_bias"  # attribute of the cache object: (B, keys) log(size) of every cached key


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ReducedVisualOutput(BaseModelOutputWithPooling):
    """The visual features with the reduction: `pooler_output` one (k_i, C) tensor per image or video;
    `kept_indices` for each the stock index of each output token (the survivor, i.e. the destination of what it
    absorbed); `token_sizes` how many stock tokens each holds; `token_maps` for each stock token the output token
    holding it; `token_counts` (inputs, 2): [stock features, features kept]. `per_input_fields` names the fields with
    one entry per input, which `generate` repeats for each expanded row (`ReducedGenerationMixin`)."""

    # a class attribute, not a dataclass field (no annotation)
    per_input_fields = ("pooler_output", "kept_indices", "token_sizes", "token_maps", "token_counts")

    kept_indices: Optional[tuple] = None
    token_sizes: Optional[tuple] = None
    token_maps: Optional[tuple] = None
    token_counts: Optional[torch.Tensor] = None

    def set_reduced(self, parts) -> None:
        """Store the reduction of each input: `parts` one (tokens, sizes, kept indices, token map) per input."""
        tokens, sizes, kept, maps = zip(*parts)
        self.pooler_output, self.token_sizes, self.kept_indices, self.token_maps = tokens, sizes, kept, maps


@dataclass
class ReducedModelOutput(MultimodalBaseModelOutputWithPast):
    """The stock multimodal output plus `token_counts` (visual inputs, 2): [stock tokens, tokens the language model
    received] for each image, then each video, of this forward (None when no visual input was reduced)."""

    token_counts: Optional[torch.Tensor] = None


@dataclass
class ReducedCausalLMOutput(MultimodalCausalLMOutputWithPast):
    """The stock multimodal causal-LM output plus `token_counts` (see `ReducedModelOutput`)."""

    token_counts: Optional[torch.Tensor] = None


def token_counts_of(out) -> Optional[torch.Tensor]:
    """The rows [stock, kept] of every reduced image, then video, of a multimodal output (None without any)."""
    counts = [o.token_counts for o in (out.image_outputs, out.video_outputs)
              if o is not None and getattr(o, "token_counts", None) is not None]
    return torch.cat(counts) if counts else None


@contextmanager
def capture(outputs: dict, pre_hook=None):
    """Read the vision tower while it runs: the output of each module of `outputs` ({name: module}) is stored under
    its name, and `pre_hook` (module, fn(store, args, kwargs)) reads a module's inputs. Hooks only; removed on exit.
    Yields the store."""
    store = {}
    handles = [module.register_forward_hook(lambda m, a, out, name=name: store.__setitem__(name, out))
               for name, module in outputs.items()]
    if pre_hook is not None:
        module, read = pre_hook
        handles.append(module.register_forward_pre_hook(lambda m, a, k: read(store, a, k), with_kwargs=True))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------------------------------------------------
# Settings and budgets
# ----------------------------------------------------------------------------------------------------------------
def reduction_settings(config) -> MergeSettings:
    """The merge settings of the one reduction point (num_layers = 1; cached on a PiToMe config)."""
    return settings_of(config, num_layers=1)


def reduces(settings: MergeSettings) -> bool:
    """Whether the settings reduce anything at all (before looking at an image's size)."""
    if settings.method_at(0) == "none" or (settings.merge_layers is not None and 0 not in settings.merge_layers):
        return False
    return settings.visual_tokens is not None or settings.number("keep_ratio") < 1.0


def ratio_keep(settings: MergeSettings, n: int) -> int:
    """Tokens kept of n by the keep ratio: n - floor(n - n * rho) (`merging.tokens_kept`, the rule `layer_budget`
    clamps to floor(n/2); unclamped here: the reduction runs several bipartite steps when it must)."""
    return tokens_kept(n, settings.number("keep_ratio"))


class VisualBudgetConfigMixin(MergeConfigMixin):
    """The merge settings of a family that reduces at one point, the language model's input: one layer (index 0 of
    the margin schedule, `merge_layers` and per-layer lists), no protected prefix, `visual_tokens` read, one
    `merge_method` (not a per-layer list), and `visual_selection` (a row of the merge-field table like `visual_tokens`:
    the families that reduce at the language model's input read both). `family_name` names the family in messages."""

    default_protected_tokens = 0  # no CLS: every visual token may merge
    family_merge_fields = ("visual_tokens", "visual_selection")
    required_merge_settings = {
        "keep_order": (True, "the language model reads the visual tokens in order, at their stock positions"),
        "merge_r": (None, "budgets are visual_tokens per image or keep_ratio"),
    }
    family_name = "this family"

    # One reduction point (read by `MergeSettings` and `apply_pitome`). Not a field: never saved.
    merge_num_hidden_layers = 1

    def __post_init__(self, **kwargs):
        kwargs.pop("merge_num_hidden_layers", None)
        super().__post_init__(**kwargs)

    def _check_own_fields(self, values: dict) -> None:  # run before the table's checks, on every path
        super()._check_own_fields(values)
        method = values.get("merge_method")
        if isinstance(method, (list, tuple)) and values.get("merge_preset", self.__dict__.get("merge_preset")) is None:
            raise ValueError(
                f"merge_method={list(method)!r} is a per-layer list, but {self.family_name} reduces at one point: "
                "give one method ('pitome', 'tome', 'pitome_bsm' or 'none'); a preset's one-entry list is accepted."
            )
        layers = values.get("merge_layers")
        if isinstance(layers, (list, tuple)) and not set(layers) <= {0}:
            raise ValueError(
                f"merge_layers={list(layers)!r} names layers, but {self.family_name} reduces at one point (index 0): "
                "give None or [0] (reduce) or [] (reduce nothing)."
            )


# ----------------------------------------------------------------------------------------------------------------
# The model: its forward, the proportional attention in the language model, its generation class
# ----------------------------------------------------------------------------------------------------------------
def flash_check(config, settings) -> None:
    impl = getattr(config.text_config, "_attn_implementation", None) or getattr(config, "_attn_implementation", None)
    if settings.proportional_attention and impl not in (None, *PROPORTIONAL_ATTENTION_BACKENDS):
        raise ValueError(
            f"attn_implementation={impl!r} cannot add the proportional-attention bias that merging uses. Use one of "
            f"{PROPORTIONAL_ATTENTION_BACKENDS}, or set proportional_attention=False in the config."
        )


class ReducedInputModelMixin:
    """For a multimodal model whose `language_model` reads reduced visual tokens: the forward's start
    (`_forward_start`), the proportional-attention mask (`_language_mask`: log(size) of every key, kept on the cache
    across decoding steps, as an additive float mask) and the output with `token_counts` (`_with_counts`). The model
    says how a prompt with the wrong number of visual tokens is refused (`_refuse_prompt(kind, tokens, expected)`)."""

    def _key_bias(self, input_ids, inputs_embeds, cache, past, visual):
        """(B, past + new) log(size) of every key (0 for text and unmerged tokens), or None when all sizes are 1.
        `visual`: ((kind, placeholder token id, output with `token_sizes` or None), ...)."""
        stored = getattr(cache, KEY_BIAS, None) if (cache is not None and past > 0) else None
        ref = input_ids if input_ids is not None else inputs_embeds
        batch, length = ref.shape[:2]
        new = torch.zeros(batch, length, dtype=torch.float32, device=ref.device)
        any_sizes = False
        for kind, token, output in visual:
            sizes = getattr(output, "token_sizes", None) if output is not None else None
            if sizes is None:
                continue
            if input_ids is None:
                self._check_visual_inputs(None, 0, (), reduced=True)
            where = input_ids == token
            logs = torch.log(torch.cat(sizes).to(ref.device))
            if int(where.sum()) != logs.numel():
                self._refuse_prompt(kind, int(where.sum()), logs.numel())
            new[where] = logs
            any_sizes = True
        if stored is None and not any_sizes:
            return None
        if stored is None:
            stored = torch.zeros(batch, past, dtype=torch.float32, device=ref.device)
        return torch.cat([stored[:, :past].to(ref.device), new], dim=1)

    def _check_visual_inputs(self, input_ids, past, visual, reduced):
        """Refuse in one line the visual inputs a forward cannot place. `visual`: ((name, placeholder token id, given),
        ...), `reduced`: whether some visual input of this forward is reduced.

        * Reduced inputs without input_ids (`inputs_embeds`): their survivors' positions and sizes are placed at the
          placeholder tokens of input_ids. Text-only `inputs_embeds` (and unreduced inputs) work as stock.
        * With a cache that already holds tokens (`past > 0`), visual inputs whose placeholders are not among the new
          input_ids: given again when continuing from `past_key_values`, whose cache already holds them (the stock
          model refuses them too, as a count mismatch)."""
        family = self.config.family_name
        if reduced and input_ids is None:
            raise ValueError(
                f"{family}: reduced images and videos are placed at their placeholder tokens in input_ids (positions, "
                "sizes), so inputs_embeds with images or videos is not supported: pass input_ids (text-only "
                "inputs_embeds work as stock).")
        if past > 0 and input_ids is not None:
            for name, token, given in visual:
                if given and not bool((input_ids == token).any()):
                    raise ValueError(
                        f"{family}: {name} given while continuing from a cache (past_key_values) that already holds "
                        f"the prompt: the new tokens have no placeholder for them; pass images and videos only with "
                        "the tokens that hold them (a cached conversation continues with its new tokens alone).")

    def _forward_start(self, cache, kwargs):
        """(the reduction's settings, the cache (also given as `past_key_values`), return_dict), popped from
        `kwargs`."""
        if "past_key_values" in kwargs and cache is None:
            cache = kwargs.pop("past_key_values")
        return reduction_settings(self.config), cache, kwargs.pop("return_dict", None)

    def _language_mask(self, settings, input_ids, inputs_embeds, attention_mask, cache, past, visual):
        """(the attention mask the language model gets, the key bias to keep on the cache or None): the size mask
        when proportional attention is on and some visual token has a size, else `attention_mask` as given."""
        if not settings.proportional_attention:
            return attention_mask, None
        key_bias = self._key_bias(input_ids, inputs_embeds, cache, past, visual)
        if key_bias is None:
            return attention_mask, None
        return self._size_mask(input_ids, inputs_embeds, attention_mask, past, key_bias), key_bias

    def _with_counts(self, out, return_dict=None):
        out = ReducedModelOutput(**out, token_counts=token_counts_of(out))
        return out.to_tuple() if return_dict is False else out

    def _size_mask(self, input_ids, inputs_embeds, attention_mask, past, key_bias):
        """The additive float mask (B, 1, Q, K): causal, padding, plus log(size) on each visual key."""
        if attention_mask is not None and (isinstance(attention_mask, dict) or attention_mask.ndim != 2):
            raise ValueError("proportional attention needs a 2-D attention_mask (got a prepared mask); set "
                             "proportional_attention=False in the config to use prepared masks or static caches.")
        if getattr(self.language_model, "has_sliding_layers", False):
            raise ValueError("proportional attention is not implemented for sliding-window layers; set "
                             "proportional_attention=False in the config.")
        ref = input_ids if input_ids is not None else inputs_embeds
        batch, length = ref.shape[:2]
        dtype = self.language_model.embed_tokens.weight.dtype if inputs_embeds is None else inputs_embeds.dtype
        keys = past + length
        q_pos = torch.arange(past, keys, device=ref.device)[:, None]
        allowed = (torch.arange(keys, device=ref.device)[None, :] <= q_pos)[None]
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, -keys:].bool()
        mask = torch.zeros(batch, length, keys, dtype=dtype, device=ref.device)
        mask = mask.masked_fill(~allowed, torch.finfo(dtype).min) + key_bias[:, None, :].to(dtype)
        return self._language_masks(mask[:, None], attention_mask, ref, past)

    def _language_masks(self, mask, attention_mask, ref, past):
        """What the language model's forward takes as its attention mask, given the 4-D float mask of its attention
        layers: by default the mapping {"full_attention": mask} (a language model that reads a prepared mapping); a
        family whose language model takes a prepared 4-D mask directly, or has other layer kinds, says so here."""
        return {"full_attention": mask}


class ReducedGenerationMixin:
    """The generation class of a family that reduces at the language model's input: the stock one built around the
    family's PiToMe model (`model_class`), its output with `token_counts`, and `generate`'s batch expansion (beams,
    `num_return_sequences`) applied to the whole reduction, not the features alone. Put it before the stock class; the
    family's `forward` keeps the stock signature (generate reads it) and returns `self._counted(super().forward(...))`.
    What `generate` cannot do with reduced inputs is refused in one line by the model (`_check_visual_inputs`)."""

    model_class = None
    supports_gradient_checkpointing = False

    def __init__(self, config):
        mro = type(self).__mro__
        stock = mro[mro.index(ReducedGenerationMixin) + 1]
        super(stock, self).__init__(config)  # the stock class's parent's: no stock model is built
        self.model = self.model_class(config)
        self.lm_head = torch.nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def _expand_multimodal_outputs(self, input_ids, mm_encoder_output, expand_size=1, inputs_embeds=None):
        """As stock, for every per-input field of a reduced output (`ReducedVisualOutput.per_input_fields`: features,
        survivors, sizes, token maps, counts, ...), not the features alone: `generate` repeats each prompt's visual
        inputs for the rows it expands the prompt into (beams, `num_return_sequences`), so each expanded row gets its
        source row's reduction, i.e. the same survivors, positions and sizes. Which inputs belong to which row is the
        stock grouping (placeholder counts per row), read off stand-ins that carry each input's index. What the forward
        then keeps per row on the cache (the key bias, OneVision's position shift) is the same for all rows of a prompt,
        so beam search reordering rows within a prompt's beams needs nothing more."""
        others = {}
        for modality, output in mm_encoder_output.items():
            fields = getattr(output, "per_input_fields", None)
            if fields is None or getattr(output, "pooler_output", None) is None:
                others[modality] = output
                continue
            probe = SimpleNamespace(pooler_output=[torch.full((len(f),), i)
                                                   for i, f in enumerate(output.pooler_output)])
            super()._expand_multimodal_outputs(input_ids, {modality: probe}, expand_size=expand_size,
                                               inputs_embeds=inputs_embeds)
            order = [int(p[0]) for p in probe.pooler_output]
            for name in fields:
                value = getattr(output, name, None)
                if isinstance(value, torch.Tensor):
                    setattr(output, name, value[torch.tensor(order, device=value.device)])
                elif value is not None:
                    setattr(output, name, tuple(value[i] for i in order))
            for name in getattr(output, "per_level_fields", ()):  # one per-input sequence per level (DeepStack)
                value = getattr(output, name, None)
                if value is not None:
                    setattr(output, name, [tuple(level[i] for i in order) for level in value])
        if others:
            super()._expand_multimodal_outputs(input_ids, others, expand_size=expand_size, inputs_embeds=inputs_embeds)
        return mm_encoder_output

    @staticmethod
    def _counted(out):
        if not isinstance(out, ModelOutput):
            return out
        return ReducedCausalLMOutput(**out, token_counts=token_counts_of(out))


__all__ = ["KEY_BIAS", "ReducedInputModelMixin", "ReducedCausalLMOutput", "ReducedGenerationMixin",
           "ReducedModelOutput", "ReducedVisualOutput", "VisualBudgetConfigMixin", "capture", "flash_check",
           "ratio_keep", "reduces", "reduction_settings", "token_counts_of"]

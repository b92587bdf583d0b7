# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""What one forward pass carries from layer to layer, and the pieces every model adapter shares.

* `merge_state_for(config)`: the one constructor of the per-forward state for every family (settings, attention
  backend check, protected prefix, padded batches for text).
* `MergeState` / `PaddedMergeState`: token sizes, the token map and the counts, updated by `step` after each layer's
  attention.
* `check_inputs`: a missing input or an empty batch refused at the entrance.
* `MergeOutputMixin`: the merge fields every PiToMe output carries (token_sizes, token_map, token_counts).
* `attention_with_keys` / `KeysAttentionMixin`: a q/k/v/o self-attention that also returns its keys (PiToMe's
  metric), shared by ViT, DINOv2, CLIP and SigLIP.
* `MergingLayerMixin`, `PreNormMergingLayerMixin`, `merging_layers`: the pieces of a merging encoder layer.
* `image_merge_state`, `merge_fields`, `classifier_output`: what the image models' forwards share.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .merge_config import MergeSettings, protected_prefix, settings_of
from .merging import merge_tokens, proportional_attention_bias, update_token_map

PROPORTIONAL_ATTENTION_BACKENDS = ("eager", "sdpa")


def inherit_conversion_mappings(mappings: dict) -> None:
    """The key mapping of checkpoints, one owner: transformers 5 renames checkpoint keys on load (transformers-4 names,
    moved levels) only for the classes and model_types it registered. `mappings` {our class name or model_type: the
    stock one, or a tuple of stock ones tried in order}: each of ours takes the first stock mapping that exists (none:
    the stock model renames nothing either). overwrite=True: remote code may import a modeling file twice."""
    from transformers import conversion_mapping

    for ours, stock in mappings.items():
        for name in (stock,) if isinstance(stock, str) else stock:
            mapping = conversion_mapping.get_checkpoint_conversion_mapping(name)
            if mapping:
                conversion_mapping.register_checkpoint_conversion_mapping(ours, mapping, overwrite=True)
                break


@dataclass
class MergeOutputMixin:
    """The merge information of a PiToMe output (mix in before the stock output class).

    token_sizes: (B, N_out) float, how many input tokens each output token stands for (0 on padding).
    token_map: (B, N_in) long, for each input token the index of the output token that holds it (when traced;
        -1 for padding).
    token_counts: (L + 1,) long (per sample (B, L + 1) for padded text), mergeable tokens entering layer 0 and after
        each layer.
    """

    token_sizes: Optional[torch.FloatTensor] = None
    token_map: Optional[torch.LongTensor] = None
    token_counts: Optional[torch.LongTensor] = None


class MergeState:
    """What one forward pass carries from layer to layer: token sizes, the token map, the count after each layer.

    Created by the model's forward, passed to its layers as a keyword argument, read back at the end. Nothing is
    stored on the model, so concurrent forwards cannot interfere.
    """

    def __init__(self, settings: MergeSettings, num_prefix: int):
        self.settings = settings
        self.num_prefix = num_prefix
        self.sizes: Optional[torch.Tensor] = None
        self.token_map: Optional[torch.Tensor] = None
        self.counts: list[int] = []
        self.merged = False

    def begin(self, x: torch.Tensor) -> None:
        B, N, _ = x.shape
        if N <= self.num_prefix:
            raise ValueError(f"the sequence has {N} tokens but {self.num_prefix} are protected: nothing to merge.")
        self.sizes = torch.ones(B, N, dtype=torch.float32, device=x.device)
        if self.settings.trace_source:
            self.token_map = torch.arange(N, device=x.device).expand(B, N).clone()
        self.counts = [N - self.num_prefix]

    def attention_mask(self, attention_mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
        """The mask a layer's attention should use: the proportional-attention bias once tokens have merged."""
        if not (self.merged and self.settings.proportional_attention):
            return attention_mask
        bias = proportional_attention_bias(self.sizes, dtype)
        return bias if attention_mask is None else attention_mask + bias

    def needs_metric(self, layer: int, num_tokens: int) -> bool:
        return self.settings.budget(num_tokens - self.num_prefix, layer) > 0

    def step(self, x: torch.Tensor, layer: int, keys: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Merge after layer `layer`'s attention. keys (B, H, N, d) are the layer's attention keys (metric "keys")."""
        if self.sizes is None:
            self.begin(x)
        T = x.shape[1] - self.num_prefix
        r = self.settings.budget(T, layer)
        if r > 0:
            if self.settings.merge_metric == "keys" and keys is not None:
                metric = keys.mean(dim=1)
            else:
                metric = x
            x, self.sizes, positions = merge_tokens(
                x, metric, self.sizes, r, self.settings.layer_values(layer), self.num_prefix
            )
            if self.token_map is not None:
                self.token_map = update_token_map(self.token_map, positions, self.num_prefix)
            self.merged = True
        self.counts.append(T - r)
        return x

    def counts_tensor(self) -> torch.Tensor:
        return torch.tensor(self.counts, dtype=torch.long)

    def output_fields(self) -> dict:
        """The `MergeOutputMixin` fields of a model output."""
        return {"token_sizes": self.sizes, "token_map": self.token_map, "token_counts": self.counts_tensor()}


class PaddedMergeState(MergeState):
    """A `MergeState` for padded batches of variable-length sequences (text encoders).

    `valid` (B, N) bool marks the real tokens (the attention mask; left or right padding). Every sample merges exactly
    as it would alone: its budget r comes from its own number of real mergeable tokens, padding never takes part (it
    is in no similarity or energy and is neither source nor destination), and the protected prefix is the sample's
    first `num_prefix` real tokens (CLS). Samples with the same number of real tokens are merged together in one
    batched call. After a layer in which any sample merges, every sample's real tokens are packed to the left (prefix
    first, original order kept) and the batch is padded to its longest sample; `valid` then says which are real.
    Padding has size 0, so `weighted_mean(x, sizes)` is the size-weighted mean over real tokens. `token_map` holds -1
    for original padding positions. `counts` holds one list per sample (mergeable real tokens before layer 0 and after
    each layer); `counts_tensor()` is (B, L + 1).
    """

    def __init__(self, settings: MergeSettings, num_prefix: int, valid: torch.Tensor):
        super().__init__(settings, num_prefix)
        if valid.dim() != 2:
            raise ValueError(f"valid must be a (batch, tokens) mask, got shape {tuple(valid.shape)}.")
        self.valid = valid.bool()

    def begin(self, x: torch.Tensor) -> None:
        B, N, _ = x.shape
        if self.valid.shape != (B, N):
            raise ValueError(f"the mask has shape {tuple(self.valid.shape)} but the sequence is {(B, N)}.")
        self.valid = self.valid.to(x.device)
        self.sizes = self.valid.float()
        if self.settings.trace_source:
            positions = torch.arange(N, device=x.device).expand(B, N)
            self.token_map = torch.where(self.valid, positions, torch.full_like(positions, -1))
        self.lengths = self.valid.sum(1).tolist()  # the forward's one host sync: real tokens per sample
        self.counts = [[t] for t in self._mergeable()]

    def _mergeable(self) -> list[int]:
        """Mergeable real tokens per sample, from the lengths kept on the host (no device read)."""
        return [max(n - self.num_prefix, 0) for n in self.lengths]

    def attention_mask(self, attention_mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
        """Before any merge: the model's own mask. After: an additive (B, 1, 1, N) float mask, the dtype's minimum on
        padding and log(size) (proportional attention) or 0 on real tokens."""
        if not self.merged:
            return attention_mask
        if self.settings.proportional_attention:
            real = torch.log(self.sizes.clamp_min(1.0)).to(dtype)
        else:
            real = torch.zeros_like(self.sizes, dtype=dtype)
        mask = torch.where(self.valid, real, torch.full_like(real, torch.finfo(dtype).min))
        return mask[:, None, None, :]

    def needs_metric(self, layer: int, num_tokens: int) -> bool:
        return any(self.settings.budget(t, layer) > 0 for t in self._mergeable())

    def step(self, x: torch.Tensor, layer: int, keys: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Merge after layer `layer`'s attention, each sample with its own budget. keys (B, H, N, d) or None."""
        if self.sizes is None:
            self.begin(x)
        B, N, C = x.shape
        p = self.num_prefix
        lengths = self.lengths  # on the host: budgets, groups and the new width need no device read
        mergeable = self._mergeable()
        budgets = [self.settings.budget(t, layer) for t in mergeable]
        if not any(budgets):
            for count, t in zip(self.counts, mergeable):
                count.append(t)
            return x
        if self.settings.merge_metric == "keys" and keys is not None:
            metric = keys.mean(dim=1)
        else:
            metric = x
        new_list = [n - r for n, r in zip(lengths, budgets)]
        new_lengths = torch.tensor(new_list, device=x.device)
        width = max(new_list)
        out = x.new_zeros(B, width, C)
        sizes = self.sizes.new_zeros(B, width)
        token_map = self.token_map
        for n in sorted(set(lengths)):
            members = [i for i, m in enumerate(lengths) if m == n]
            rows = torch.tensor(members, device=x.device)
            r = budgets[members[0]]
            # positions of each row's real tokens, in order (a stable sort puts the real ones first)
            idx = self.valid[rows].to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :n]
            xg = x[rows].gather(1, idx[..., None].expand(-1, -1, C))
            sg = self.sizes[rows].gather(1, idx)
            if r > 0:
                mg = metric[rows].gather(1, idx[..., None].expand(-1, -1, metric.shape[-1]))
                xg, sg, pos = merge_tokens(xg, mg, sg, r, self.settings.layer_values(layer), p)
                prefix = torch.arange(p, device=x.device).expand(len(rows), p)
                new_index = torch.cat([prefix, pos + p], dim=1)  # packed input index -> packed output index
            else:
                new_index = torch.arange(n, device=x.device).expand(len(rows), n)
            out[rows, : n - r] = xg
            sizes[rows, : n - r] = sg
            if token_map is not None:
                # current (padded) position -> output position, -1 for padding
                layout = torch.full((len(rows), N), -1, dtype=torch.long, device=x.device)
                layout.scatter_(1, idx, new_index)
                old = token_map[rows]
                token_map = token_map.index_put((rows,), torch.where(old >= 0, layout.gather(1, old.clamp_min(0)), old))
        self.token_map = token_map
        self.sizes = sizes
        self.valid = torch.arange(width, device=x.device)[None, :] < new_lengths[:, None]
        self.lengths = new_list
        self.merged = True
        for count, t, r in zip(self.counts, mergeable, budgets):
            count.append(t - r)
        return out

    def counts_tensor(self) -> torch.Tensor:
        return torch.tensor(self.counts, dtype=torch.long)


def check_inputs(model: str, **inputs: Optional[torch.Tensor]) -> None:
    """Refuse a missing input or an empty batch at the model's entrance, naming it (the stock models fail deep inside
    attention with a reshape error, or with an AttributeError on None)."""
    for name, value in inputs.items():
        if value is None:
            raise ValueError(f"{model}.forward needs {name}, got None.")
        if value.shape[0] == 0:
            raise ValueError(f"{name} has batch size 0 (shape {tuple(value.shape)}): give {model} at least one sample.")


def merge_state_for(
    config,
    *,
    settings: Optional[MergeSettings] = None,
    attn_implementation: Optional[str] = None,
    valid: Optional[torch.Tensor] = None,
) -> MergeState:
    """The per-forward merge state of every family, from a PiToMe config (or a view of one).

    settings: the settings to run (default: the config's; LLaVA restricts them to the layers before its feature
        layer). attn_implementation: the backend the merging layers use (default: the config's).
    valid: (B, N) bool mask of real tokens for padded batches (text): a `PaddedMergeState`, which needs an additive
        float mask (eager or sdpa) whenever anything merges. Otherwise a `MergeState`, which needs one only for
        proportional attention. The protected prefix is the settings' `num_prefix`.
    """
    settings = settings if settings is not None else settings_of(config)
    impl = attn_implementation or getattr(config, "_attn_implementation", None) or "eager"
    if settings.active and (settings.proportional_attention or valid is not None):
        if impl not in PROPORTIONAL_ATTENTION_BACKENDS:
            need = "the proportional-attention bias" if valid is None else "the shrinking padding mask"
            off = " or set proportional_attention=False in the config" if valid is None else " or merge_method='none'"
            raise ValueError(
                f"attn_implementation={impl!r} cannot add {need} that merging uses. Use one of "
                f"{PROPORTIONAL_ATTENTION_BACKENDS},{off}."
            )
    prefix = settings.num_prefix if settings.num_prefix is not None else protected_prefix(config)
    if valid is not None:
        return PaddedMergeState(settings, num_prefix=prefix, valid=valid)
    return MergeState(settings, num_prefix=prefix)


def unmerge(output, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Dense features back at full resolution: every original token gets the feature of the token that holds it.

    `output` is a PiToMe model output computed with `trace_source=True` (it carries `token_map`, (B, N0));
    `hidden` defaults to its `last_hidden_state` (B, N_out, C). Returns (B, N0, C), the protected prefix (CLS,
    registers) first, then the patches in their original order, ready for a segmentation or depth head or a feature
    map (reshape the patch part to (B, H/p, W/p, C)). At keep ratio 1.0 it equals the unmerged model's output.
    """
    token_map = getattr(output, "token_map", None)
    if token_map is None:
        raise ValueError("unmerge needs the token map: run the model with trace_source=True (e.g. "
                         "from_pretrained(..., trace_source=True) or model.config.trace_source = True).")
    hidden = output.last_hidden_state if hidden is None else hidden
    if token_map.min() < 0:  # padded text: -1 marks padding, which gets zeros
        safe = token_map.clamp_min(0)
        dense = hidden.gather(1, safe[..., None].expand(-1, -1, hidden.shape[-1]))
        return dense * (token_map >= 0)[..., None].to(dense.dtype)
    return hidden.gather(1, token_map[..., None].expand(-1, -1, hidden.shape[-1]))


def return_output(result, config, return_dict: Optional[bool]):
    """`result` (a ModelOutput) as a dict-like output or, with return_dict=False (or config.return_dict False), a tuple."""
    wanted = config.return_dict if return_dict is None else return_dict
    return result if wanted else result.to_tuple()


class KeysAttentionMixin:
    """A self-attention that also returns its key states (B, H, N, d), PiToMe's similarity metric (mixed in before the
    stock attention class by `keyed_attention_class`; `eager_attention` is the stock module's `eager_attention_forward`,
    the function the stock forward itself falls back to)."""

    eager_attention = None

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, self.eager_attention)
        return attention_with_keys(self, hidden_states, attention_mask, interface, **kwargs)


@functools.lru_cache(maxsize=None)
def keyed_attention_class(stock_class: type) -> type:
    """The one keyed-attention piece, for any stock q/k/v/o attention class: `KeysAttentionMixin` before it (one class
    per stock class, named PiToMe<stock name>), with the eager attention of the stock class's own file. A subclass, so
    transformers' output recorders (which match attention modules by isinstance) still see it, and its parameters are
    the stock module's."""
    eager = getattr(sys.modules[stock_class.__module__], "eager_attention_forward", None)
    if eager is None:
        raise TypeError(f"{stock_class.__module__} has no eager_attention_forward, so {stock_class.__name__} cannot "
                        "return its keys through KeysAttentionMixin; this adapter needs its own attention forward.")
    return type(f"PiToMe{stock_class.__name__}", (KeysAttentionMixin, stock_class),
                {"eager_attention": staticmethod(eager), "__module__": __name__})


class MergingLayerMixin:
    """A stock encoder layer whose attention module (attribute `attention_name`) also returns its keys (its class
    becomes `keyed_attention_class(stock class)`; weights and names unchanged) and which knows its index (for the
    schedule). Mix in before the stock layer class; the layer's forward is the family's (or
    `PreNormMergingLayerMixin`'s)."""

    attention_name = "self_attn"

    def __init__(self, config, layer_idx: int = 0):
        super().__init__(config)
        attention = getattr(self, self.attention_name)
        attention.__class__ = keyed_attention_class(type(attention))
        self.layer_idx = layer_idx


def merging_layers(config, layer_class) -> nn.ModuleList:
    """One `layer_class(config, index)` per layer of the config."""
    return nn.ModuleList([layer_class(config, i) for i in range(config.num_hidden_layers)])


class PreNormMergingLayerMixin(MergingLayerMixin):
    """The forward of a pre-norm encoder layer named like CLIP's and SigLIP's (`layer_norm1`, `self_attn`,
    `layer_norm2`, `mlp`): an edited copy of `CLIPEncoderLayer.forward` / `SiglipEncoderLayer.forward` that adds the
    proportional-attention bias before attention and merges after the attention residual (lines marked "differs").
    Mix in before the stock layer class."""

    def forward(self, hidden_states, attention_mask=None, merge_state: Optional[MergeState] = None, **kwargs):
        residual = hidden_states
        hidden_states = self.layer_norm1(hidden_states)
        if merge_state is not None:  # differs: proportional attention
            attention_mask = merge_state.attention_mask(attention_mask, hidden_states.dtype)
        hidden_states, _, keys = self.self_attn(hidden_states=hidden_states, attention_mask=attention_mask, **kwargs)
        hidden_states = residual + hidden_states
        if merge_state is not None:  # differs: the merge step
            hidden_states = merge_state.step(hidden_states, self.layer_idx, keys)

        residual = hidden_states
        hidden_states = self.layer_norm2(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class MergingEncoderMixin:
    """A stock encoder (CLIP's and SigLIP's: `layers`, run by the stock loop) built of `layer_class` merging layers;
    the merge state reaches them as a keyword. Mix in before the stock encoder class and set `layer_class`."""

    layer_class = None

    def __init__(self, config):
        nn.Module.__init__(self)
        self.config = config
        self.layers = merging_layers(config, self.layer_class)
        self.gradient_checkpointing = False


def attention_with_keys(module, hidden_states, attention_mask, attention_interface, **kwargs):
    """An edited copy of the stock q/k/v/o self-attention forward of ViT (`ViTAttention.forward`), DINOv2
    (`Dinov2Attention.forward`, `Dinov2WithRegistersAttention.forward`), CLIP (`CLIPAttention.forward`) and SigLIP
    (`SiglipAttention.forward`), run through `attention_interface`. Differences from the stock code: (1) it also
    returns the key states (B, H, N, d), PiToMe's similarity metric; (2) it reads either naming of the output
    projection (o_proj / out_proj), scale (scaling / scale) and dropout (attention_dropout / dropout); (3) extra kwargs
    reach the attention function (the stock SigLIP drops them). tests/test_contract.py pins the stock sources this was
    checked against. Returns (attn_output, attn_weights, key_states)."""
    out_proj = module.o_proj if hasattr(module, "o_proj") else module.out_proj  # differs: both namings
    scaling = module.scaling if hasattr(module, "scaling") else module.scale  # differs: both namings
    dropout = module.attention_dropout if hasattr(module, "attention_dropout") else module.dropout  # differs
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, module.head_dim)
    query_states = module.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    key_states = module.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    value_states = module.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    attn_output, attn_weights = attention_interface(
        module,
        query_states,
        key_states,
        value_states,
        attention_mask,
        dropout=0.0 if not module.training else dropout,
        scaling=scaling,
        **kwargs,
    )
    attn_output = out_proj(attn_output.reshape(*input_shape, -1).contiguous())
    return attn_output, attn_weights, key_states  # differs: the keys


def image_merge_state(model, pixel_values, attention_mask=None) -> MergeState:
    """The merge state of an image model's forward (ViT, DINOv2): the input checked, an attention mask refused when
    anything merges (merged tokens change the sequence)."""
    check_inputs(type(model).__name__, pixel_values=pixel_values)
    state = merge_state_for(model.config)
    if attention_mask is not None and state.settings.active:
        raise ValueError(
            f"attention_mask cannot be combined with token merging in {type(model).__name__} (merged tokens change "
            "the sequence); pass attention_mask=None or set merge_method='none'."
        )
    return state


def merge_fields(output) -> dict:
    """The `MergeOutputMixin` fields of an output (None where it has none)."""
    return {name: getattr(output, name, None) for name in ("token_sizes", "token_map", "token_counts")}


class DualEncoderMixin:
    """The forward of an image-text dual encoder whose vision tower merges (CLIPModel, SiglipModel): the stock forward,
    its output as `output_class` with the vision tower's merge information. Mix in before the stock model class."""

    output_class = None

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, return_dict=None, **kwargs):
        """input_ids (B_t, S), pixel_values (B_i, C, H, W) -> logits_per_image (B_i, B_t), embeds, merge info. The other
        stock arguments (position_ids, return_loss, interpolate_pos_encoding, ...) pass through `kwargs`."""
        check_inputs(type(self).__name__, input_ids=input_ids, pixel_values=pixel_values)
        outputs = super().forward(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                                  return_dict=True, **kwargs)
        result = self.output_class(**outputs, **merge_fields(outputs.vision_model_output))
        return return_output(result, self.config, return_dict)


def classifier_output(output_class, logits, loss, outputs, **extra):
    """A classifier's output from its base model's `outputs`: hidden states, attentions, the merge fields and
    `extra` fields (e.g. BERT's shrunk attention_mask)."""
    return output_class(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions,
                        **merge_fields(outputs), **extra)

# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe SigLIP: a Hugging Face SigLIP whose vision encoder layers merge tokens between attention and MLP.

Each vision layer runs: LayerNorm -> attention (with log(size) once tokens have merged) -> residual -> merge ->
LayerNorm -> MLP -> residual. SigLIP has no CLS token: every patch token can merge. The image embedding comes from
the attention-pooling head (a learned probe attending over all tokens); on merged tokens it attends with the bias
log(size), so a token standing for k patches counts k times, exactly as the k patches would. The text tower is the
stock `SiglipTextModel`. Weights and parameter names are the stock SigLIP's, so stock checkpoints load unchanged.

Classes: `PiToMeSiglipModel` (zero-shot classification, retrieval), `PiToMeSiglipVisionModel` (the vision tower).
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.siglip.modeling_siglip import (
    SiglipEncoder,
    SiglipEncoderLayer,
    SiglipModel,
    SiglipMultiheadAttentionPoolingHead,
    SiglipOutput,
    SiglipPreTrainedModel,
    SiglipTextModel,
    SiglipVisionEmbeddings,
    SiglipVisionModel,
)

from .configuration_pitome_siglip import PiToMeSiglipConfig, PiToMeSiglipVisionConfig
from .merge_config import settings_of
from .merge_state import (
    DualEncoderMixin, MergeOutputMixin, MergeState, MergingEncoderMixin, PreNormMergingLayerMixin, check_inputs,
    inherit_conversion_mappings, merge_state_for, return_output,
)

# transformers 5 drops the `vision_model.` level of a stand-alone SiglipVisionModel on load, for its own classes only.
inherit_conversion_mappings({"PiToMeSiglipVisionModel": "SiglipVisionModel"})


@dataclass
class PiToMeSiglipVisionOutput(MergeOutputMixin, BaseModelOutputWithPooling):
    """A `BaseModelOutputWithPooling` of the vision tower (pooler_output: the attention-pooling head's output) plus
    the merge information (`MergeOutputMixin`)."""


@dataclass
class PiToMeSiglipOutput(MergeOutputMixin, SiglipOutput):
    """A `SiglipOutput` (logits_per_image, logits_per_text, embeds, ...) plus the vision tower's merge information."""


class PiToMeSiglipEncoderLayer(PreNormMergingLayerMixin, SiglipEncoderLayer):
    """A SigLIP vision layer that merges tokens after attention + residual, before `layer_norm2` and the MLP."""


class PiToMeSiglipEncoder(MergingEncoderMixin, SiglipEncoder):
    """The stock SigLIP encoder loop over `PiToMeSiglipEncoderLayer`s (the merge state reaches them as a keyword)."""

    layer_class = PiToMeSiglipEncoderLayer


class PiToMeSiglipAttentionPoolingHead(SiglipMultiheadAttentionPoolingHead):
    """The stock attention-pooling head (an edited copy of `SiglipMultiheadAttentionPoolingHead.forward`); differs in
    one line: the probe's attention over merged tokens adds log(size) to each key's logit (`sizes` (B, N))."""

    def forward(self, hidden_state, sizes: Optional[torch.Tensor] = None):
        batch_size = hidden_state.shape[0]
        probe = self.probe.repeat(batch_size, 1, 1)
        bias = None
        if sizes is not None:  # differs: log(size) on every key, one row per (sample, head)
            bias = torch.log(sizes).to(hidden_state.dtype)[:, None, :]
            bias = bias.repeat_interleave(self.attention.num_heads, dim=0)
        hidden_state = self.attention(probe, hidden_state, hidden_state, attn_mask=bias)[0]

        residual = hidden_state
        hidden_state = self.layernorm(hidden_state)
        hidden_state = residual + self.mlp(hidden_state)
        return hidden_state[:, 0]


class PiToMeSiglipVisionModel(SiglipVisionModel):
    """[`SiglipVisionModel`] with PiToMe token merging. `pooler_output` is the attention-pooling head's output on the
    merged tokens (log-size bias); the output also carries `token_sizes`, `token_map` and `token_counts`.

    Stand-alone, the merge settings are its own config's; inside `PiToMeSiglipModel` they are the parent's config
    (`merge_config`)."""

    config_class = PiToMeSiglipVisionConfig
    _no_split_modules = ["SiglipVisionEmbeddings", "PiToMeSiglipEncoderLayer", "PiToMeSiglipAttentionPoolingHead"]
    # A checkpointed layer would run its merge twice on the shared per-forward state.
    supports_gradient_checkpointing = False

    def __init__(self, config):
        SiglipPreTrainedModel.__init__(self, config)
        self.config = config
        self.embeddings = SiglipVisionEmbeddings(config)
        self.encoder = PiToMeSiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.has_head = config.vision_use_head
        if self.has_head:
            self.head = PiToMeSiglipAttentionPoolingHead(config)
        self.use_head = False  # the stock forward must not pool: we pool below, with the token sizes
        self.merge_config = config
        self.post_init()

    def forward(self, pixel_values, interpolate_pos_encoding: Optional[bool] = False, return_dict=None, **kwargs):
        """pixel_values (B, C, H, W) -> last_hidden_state (B, T_L, hidden), pooler_output (B, hidden), merge info."""
        check_inputs(type(self).__name__, pixel_values=pixel_values)
        settings = settings_of(self.merge_config, num_layers=self.config.num_hidden_layers)
        state: MergeState = merge_state_for(self.merge_config, settings=settings,
                                            attn_implementation=getattr(self.config, "_attn_implementation", None))
        outputs = super().forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True,
                                  merge_state=state, **kwargs)
        pooled = None
        if self.has_head:
            pooled = self.head(outputs.last_hidden_state, state.sizes if state.merged else None)
        result = PiToMeSiglipVisionOutput(**{**outputs, "pooler_output": pooled}, **state.output_fields())
        return return_output(result, self.config, return_dict)


class PiToMeSiglipModel(DualEncoderMixin, SiglipModel):
    """[`SiglipModel`] with PiToMe token merging in the vision tower. The text tower, `get_text_features` and the
    sigmoid logits are the stock SigLIP's; works with the zero-shot-image-classification pipeline."""

    config_class = PiToMeSiglipConfig
    output_class = PiToMeSiglipOutput
    _no_split_modules = ["SiglipTextEmbeddings", "SiglipEncoderLayer", "SiglipVisionEmbeddings",
                         "PiToMeSiglipEncoderLayer", "PiToMeSiglipAttentionPoolingHead"]
    supports_gradient_checkpointing = False

    def __init__(self, config: PiToMeSiglipConfig):
        SiglipPreTrainedModel.__init__(self, config)
        self.text_model = SiglipTextModel._from_config(config.text_config)
        self.vision_model = PiToMeSiglipVisionModel._from_config(config.vision_config)
        self.vision_model.merge_config = config
        self.logit_scale = nn.Parameter(torch.randn(1))
        self.logit_bias = nn.Parameter(torch.randn(1))
        self.post_init()



PiToMeSiglipConfig.register_for_auto_classes(PiToMeSiglipModel)
PiToMeSiglipVisionConfig.register_for_auto_classes(PiToMeSiglipVisionModel)

__all__ = [
    "PiToMeSiglipAttentionPoolingHead",
    "PiToMeSiglipEncoderLayer",
    "PiToMeSiglipModel",
    "PiToMeSiglipOutput",
    "PiToMeSiglipVisionModel",
    "PiToMeSiglipVisionOutput",
]

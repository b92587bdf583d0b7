# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe DINOv2: a Hugging Face DINOv2 (with or without register tokens) whose layers merge tokens between
attention and MLP.

Each layer runs: LayerNorm -> attention (with the proportional-attention bias log(size) once tokens have merged) ->
layer scale -> residual -> merge (PiToMe or ToMe, see merging.py) -> LayerNorm -> MLP (or SwiGLU) -> layer scale ->
residual. The MLP and every later layer run on fewer tokens. CLS and the register tokens are protected (never merged).
The pooled output is the CLS token, as in stock DINOv2; the classification head's mean over patch tokens is
size-weighted. Weights and parameter names are exactly the stock DINOv2's, so stock checkpoints load unchanged.

Classes: `PiToMeDinov2Model`, `PiToMeDinov2ForImageClassification`, `PiToMeDinov2WithRegistersModel`.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.models.dinov2.modeling_dinov2 import (
    Dinov2Embeddings,
    Dinov2Encoder,
    Dinov2ForImageClassification,
    Dinov2Layer,
    Dinov2Model,
    Dinov2PreTrainedModel,
)
from transformers.models.dinov2_with_registers.modeling_dinov2_with_registers import (
    Dinov2WithRegistersEmbeddings,
    Dinov2WithRegistersEncoder,
    Dinov2WithRegistersLayer,
    Dinov2WithRegistersModel,
    Dinov2WithRegistersPreTrainedModel,
)

from .configuration_pitome_dinov2 import PiToMeDinov2Config, PiToMeDinov2WithRegistersConfig
from .merge_state import (
    MergeOutputMixin, MergeState, MergingLayerMixin, classifier_output, image_merge_state, inherit_conversion_mappings,
    merging_layers, return_output,
)
from .merging import weighted_mean

# transformers 5 renames DINOv2 parameters on load (attention.attention.query -> attention.q_proj, ...) only for its
# own classes: give ours the stock mappings. The classification model holds the base model, whose mapping is applied
# scoped, as for the stock classes. overwrite=True: remote code may import this file twice.
inherit_conversion_mappings({"PiToMeDinov2Model": "Dinov2Model",
                             "PiToMeDinov2WithRegistersModel": "Dinov2WithRegistersModel"})


@dataclass
class PiToMeDinov2ModelOutput(MergeOutputMixin, BaseModelOutputWithPooling):
    """A `BaseModelOutputWithPooling` plus the merge information (`MergeOutputMixin`) and `num_protected`, the number
    of leading tokens that never merge (CLS + registers)."""

    num_protected: Optional[int] = None


@dataclass
class PiToMeDinov2ImageClassifierOutput(MergeOutputMixin, ImageClassifierOutput):
    """An `ImageClassifierOutput` plus the merge information (`MergeOutputMixin`)."""


def patch_mean(output) -> torch.Tensor:
    """Size-weighted mean of the patch tokens of a PiToMe DINOv2 output (protected tokens excluded): (B, hidden).
    Equals the stock plain mean over patches when nothing merged."""
    p = output.num_protected
    return weighted_mean(output.last_hidden_state[:, p:], output.token_sizes[:, p:])


class _MergingDinov2LayerMixin(MergingLayerMixin):
    """A DINOv2 layer that merges tokens after attention + layer scale + residual, before `norm2` and the MLP."""

    attention_name = "attention"

    def forward(self, hidden_states, attention_mask=None, merge_state: Optional[MergeState] = None, **kwargs):
        residual = hidden_states
        hidden_states = self.norm1(hidden_states)
        if merge_state is not None:
            attention_mask = merge_state.attention_mask(attention_mask, hidden_states.dtype)
        hidden_states, _, keys = self.attention(hidden_states, attention_mask=attention_mask, **kwargs)
        hidden_states = self.drop_path(self.layer_scale1(hidden_states)) + residual
        if merge_state is not None:
            hidden_states = merge_state.step(hidden_states, self.layer_idx, keys)

        residual = hidden_states
        hidden_states = self.mlp(self.norm2(hidden_states))
        return self.drop_path(self.layer_scale2(hidden_states)) + residual


class _MergingDinov2EncoderMixin:
    """The stock DINOv2 encoder loop over merging layers (`layer_class`; the merge state reaches them as a keyword)."""

    layer_class = None

    def __init__(self, config):
        self.pretrained_class.__init__(self, config)
        self.layer = merging_layers(config, self.layer_class)
        self.post_init()


class _MergingDinov2ModelMixin:
    """What both DINOv2 models (with and without registers) share: the stock modules around a merging encoder
    (`embeddings_class`, `encoder_class`) and a forward that runs the stock forward with a merge state."""

    embeddings_class = encoder_class = None
    # A checkpointed layer would run its merge twice on the shared per-forward state.
    supports_gradient_checkpointing = False

    def __init__(self, config):
        self.pretrained_class.__init__(self, config)
        self.config = config
        self.embeddings = self.embeddings_class(config)
        self.encoder = self.encoder_class(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def forward(self, pixel_values: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                return_dict: Optional[bool] = None, **kwargs):
        """pixel_values (B, C, H, W) -> last_hidden_state (B, p + T_L, hidden), pooler_output (CLS), merge info."""
        state = image_merge_state(self, pixel_values, attention_mask)
        outputs = super().forward(pixel_values, attention_mask=attention_mask, return_dict=True, merge_state=state,
                                  **kwargs)  # bool_masked_pos and the other stock arguments pass through kwargs
        result = PiToMeDinov2ModelOutput(**outputs, **state.output_fields(), num_protected=state.num_prefix)
        return return_output(result, self.config, return_dict)


class PiToMeDinov2Layer(_MergingDinov2LayerMixin, Dinov2Layer):
    """A DINOv2 layer that merges tokens after attention + layer scale + residual."""


class PiToMeDinov2Encoder(_MergingDinov2EncoderMixin, Dinov2Encoder):
    pretrained_class, layer_class = Dinov2PreTrainedModel, PiToMeDinov2Layer


class PiToMeDinov2WithRegistersLayer(_MergingDinov2LayerMixin, Dinov2WithRegistersLayer):
    """A DINOv2-with-registers layer that merges tokens as `PiToMeDinov2Layer`."""


class PiToMeDinov2WithRegistersEncoder(_MergingDinov2EncoderMixin, Dinov2WithRegistersEncoder):
    pretrained_class, layer_class = Dinov2WithRegistersPreTrainedModel, PiToMeDinov2WithRegistersLayer


class PiToMeDinov2Model(_MergingDinov2ModelMixin, Dinov2Model):
    """[`Dinov2Model`] with PiToMe token merging. The output also carries `token_sizes`, `token_map`,
    `token_counts` and `num_protected`; `patch_mean(output)` is the size-weighted mean of the patch tokens."""

    config_class = PiToMeDinov2Config
    config: PiToMeDinov2Config
    _no_split_modules = ["Dinov2Embeddings", "PiToMeDinov2Layer"]
    pretrained_class, embeddings_class, encoder_class = Dinov2PreTrainedModel, Dinov2Embeddings, PiToMeDinov2Encoder


class PiToMeDinov2WithRegistersModel(_MergingDinov2ModelMixin, Dinov2WithRegistersModel):
    """[`Dinov2WithRegistersModel`] with PiToMe token merging; CLS and the register tokens are never merged."""

    config_class = PiToMeDinov2WithRegistersConfig
    config: PiToMeDinov2WithRegistersConfig
    _no_split_modules = ["Dinov2WithRegistersEmbeddings", "PiToMeDinov2WithRegistersLayer"]
    pretrained_class = Dinov2WithRegistersPreTrainedModel
    embeddings_class, encoder_class = Dinov2WithRegistersEmbeddings, PiToMeDinov2WithRegistersEncoder


class PiToMeDinov2ForImageClassification(Dinov2ForImageClassification):
    """[`Dinov2ForImageClassification`] with PiToMe token merging: the linear head reads CLS concatenated with the
    size-weighted mean of the patch tokens (the stock plain mean when nothing merges)."""

    config_class = PiToMeDinov2Config
    config: PiToMeDinov2Config
    _no_split_modules = ["Dinov2Embeddings", "PiToMeDinov2Layer"]
    supports_gradient_checkpointing = False

    def __init__(self, config: PiToMeDinov2Config):
        Dinov2PreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.dinov2 = PiToMeDinov2Model(config)
        self.classifier = (
            nn.Linear(config.hidden_size * 2, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def forward(self, pixel_values: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                return_dict: Optional[bool] = None, **kwargs):
        outputs = self.dinov2(pixel_values, return_dict=True, **kwargs)
        cls_token = outputs.last_hidden_state[:, 0]
        logits = self.classifier(torch.cat([cls_token, patch_mean(outputs)], dim=1))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        result = classifier_output(PiToMeDinov2ImageClassifierOutput, logits, loss, outputs)
        return return_output(result, self.config, return_dict)


PiToMeDinov2Config.register_for_auto_classes(PiToMeDinov2Model, PiToMeDinov2ForImageClassification)
PiToMeDinov2WithRegistersConfig.register_for_auto_classes(PiToMeDinov2WithRegistersModel)

__all__ = [
    "PiToMeDinov2ForImageClassification",
    "PiToMeDinov2ImageClassifierOutput",
    "PiToMeDinov2Layer",
    "PiToMeDinov2Model",
    "PiToMeDinov2ModelOutput",
    "PiToMeDinov2WithRegistersLayer",
    "PiToMeDinov2WithRegistersModel",
    "patch_mean",
]

# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe ViT: a Hugging Face ViT whose encoder layers merge tokens between attention and MLP.

Each layer runs: LayerNorm -> attention (with the proportional-attention bias log(size) once tokens have merged) ->
residual -> merge (PiToMe or ToMe, see merging.py) -> LayerNorm -> MLP -> residual. The MLP and every later layer
run on fewer tokens. Weights and parameter names are exactly the stock ViT's, so stock checkpoints load unchanged.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.models.vit.modeling_vit import (
    ViTEmbeddings,
    ViTForImageClassification,
    ViTLayer,
    ViTModel,
    ViTPooler,
    ViTPreTrainedModel,
)

from .configuration_pitome_vit import PiToMeViTConfig
from .merge_state import (
    MergeOutputMixin, MergeState, MergingLayerMixin, classifier_output, image_merge_state, inherit_conversion_mappings,
    merging_layers, return_output,
)
from .merging import weighted_mean

# transformers 5 renames ViT parameters on load only for its own classes: give ours the stock ViT's mapping, or a
# stock checkpoint would load with missing/unexpected keys and random weights. overwrite=True: remote code may
# import this file twice.
inherit_conversion_mappings({"PiToMeViTModel": "ViTModel"})


@dataclass
class PiToMeModelOutput(MergeOutputMixin, BaseModelOutputWithPooling):
    """A `BaseModelOutputWithPooling` plus the merge information (`MergeOutputMixin`)."""


@dataclass
class PiToMeImageClassifierOutput(MergeOutputMixin, ImageClassifierOutput):
    """An `ImageClassifierOutput` plus the merge information (`MergeOutputMixin`)."""


class PiToMeViTLayer(MergingLayerMixin, ViTLayer):
    """A ViT layer that merges tokens after attention + residual, before the second LayerNorm and the MLP."""

    attention_name = "attention"

    def forward(self, hidden_states, attention_mask=None, merge_state: Optional[MergeState] = None, **kwargs):
        residual = hidden_states
        hidden_states = self.layernorm_before(hidden_states)
        if merge_state is not None:
            attention_mask = merge_state.attention_mask(attention_mask, hidden_states.dtype)
        hidden_states, _, keys = self.attention(hidden_states, attention_mask, **kwargs)
        hidden_states = self.dropout(hidden_states) + residual
        if merge_state is not None:
            hidden_states = merge_state.step(hidden_states, self.layer_idx, keys)

        residual = hidden_states
        hidden_states = self.layernorm_after(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = self.dropout(hidden_states) + residual
        return hidden_states


class PiToMeViTModel(ViTModel):
    """[`ViTModel`] with PiToMe token merging. The output also carries `token_sizes`, `token_map`, `token_counts`."""

    config_class = PiToMeViTConfig
    config: PiToMeViTConfig
    _no_split_modules = ["ViTEmbeddings", "PiToMeViTLayer"]
    # A checkpointed layer would run its merge twice on the shared per-forward state.
    supports_gradient_checkpointing = False

    def __init__(self, config: PiToMeViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = False):
        ViTPreTrainedModel.__init__(self, config)
        self.config = config
        self.embeddings = ViTEmbeddings(config, use_mask_token=use_mask_token)
        self.layers = merging_layers(config, PiToMeViTLayer)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        self.post_init()

    def forward(self, pixel_values: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                return_dict: Optional[bool] = None, **kwargs):
        """pixel_values (B, C, H, W) -> last_hidden_state (B, p + T_L, hidden), pooler_output, merge information. The
        other stock arguments (bool_masked_pos, interpolate_pos_encoding, ...) pass through `kwargs`."""
        state = image_merge_state(self, pixel_values, attention_mask)
        outputs = super().forward(pixel_values, attention_mask=attention_mask, return_dict=True, merge_state=state,
                                  **kwargs)
        return return_output(PiToMeModelOutput(**outputs, **state.output_fields()), self.config, return_dict)


class PiToMeViTForImageClassification(ViTForImageClassification):
    """[`ViTForImageClassification`] with PiToMe token merging. The classifier reads the CLS token (never merged), or
    with `config.classifier_pooling="mean"` the size-weighted mean of the patch tokens (MAE classifiers)."""

    config_class = PiToMeViTConfig
    config: PiToMeViTConfig
    _no_split_modules = ["ViTEmbeddings", "PiToMeViTLayer"]
    supports_gradient_checkpointing = False

    def __init__(self, config: PiToMeViTConfig):
        ViTPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.vit = PiToMeViTModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(self, pixel_values: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                return_dict: Optional[bool] = None, **kwargs):
        """As `ViTForImageClassification.forward`; the other stock arguments (interpolate_pos_encoding, ...) reach the
        encoder through `kwargs`."""
        mean_pool = getattr(self.config, "classifier_pooling", "cls") == "mean"
        wants_hidden = kwargs.pop("output_hidden_states", None)
        outputs = self.vit(pixel_values, return_dict=True, output_hidden_states=True if mean_pool else wants_hidden,
                           **kwargs)
        if mean_pool:
            # MAE's global pool: mean of the last layer's patch tokens (weighted by size), then fc_norm (the layernorm)
            p = self.config.merge_settings().num_prefix
            last = outputs.hidden_states[-1][:, p:]
            sizes = outputs.token_sizes[:, p:] if outputs.token_sizes is not None else None
            pooled = self.vit.layernorm(weighted_mean(last, sizes))
            if not wants_hidden:
                outputs.hidden_states = None
        else:
            pooled = outputs.last_hidden_state[:, 0, :]
        logits = self.classifier(pooled)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return return_output(classifier_output(PiToMeImageClassifierOutput, logits, loss, outputs), self.config, return_dict)


PiToMeViTConfig.register_for_auto_classes(PiToMeViTModel, PiToMeViTForImageClassification)

__all__ = [
    "PiToMeImageClassifierOutput",
    "PiToMeModelOutput",
    "PiToMeViTForImageClassification",
    "PiToMeViTLayer",
    "PiToMeViTModel",
]

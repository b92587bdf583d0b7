# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe CLIP: a Hugging Face CLIP whose vision encoder layers merge tokens between attention and MLP.

Each vision layer runs: LayerNorm -> attention (with the proportional-attention bias log(size) once tokens have
merged) -> residual -> merge (PiToMe or ToMe, see merging.py) -> LayerNorm -> MLP -> residual. The MLP and every
later layer run on fewer tokens. The image embedding is the CLS token (never merged) after `post_layernorm` and the
projection, as in stock CLIP. The text tower is the stock `CLIPTextModel`: it never merges. Weights and parameter
names are exactly the stock CLIP's, so stock checkpoints load unchanged.

Classes: `PiToMeCLIPModel` (zero-shot classification, retrieval), `PiToMeCLIPVisionModel` (the vision tower, e.g.
for LLaVA), `PiToMeCLIPVisionModelWithProjection` (image embeddings only).
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import (
    CLIPEncoder,
    CLIPEncoderLayer,
    CLIPModel,
    CLIPOutput,
    CLIPPreTrainedModel,
    CLIPTextModel,
    CLIPVisionEmbeddings,
    CLIPVisionModel,
    CLIPVisionModelOutput,
    CLIPVisionModelWithProjection,
)

from .configuration_pitome_clip import PiToMeCLIPConfig, PiToMeCLIPVisionConfig
from .merge_config import settings_of
from .merge_state import (
    DualEncoderMixin, MergeOutputMixin, MergeState, MergingEncoderMixin, PreNormMergingLayerMixin, check_inputs,
    inherit_conversion_mappings, merge_fields, merge_state_for, return_output,
)

# transformers 5 renames checkpoint keys on load only for its own classes: a stand-alone CLIPVisionModel lost its
# `vision_model.` level in memory, but CLIP checkpoints (and transformers 4 vision checkpoints) store it. Give our
# vision tower the stock tower's mapping (it is also applied, scoped, where the tower sits inside PiToMeCLIPModel or
# PiToMeCLIPVisionModelWithProjection, exactly as for the stock classes). CLIPModel and
# CLIPVisionModelWithProjection have no mapping of their own; the text tower is the stock class and keeps its own.
# overwrite=True: remote code may import this file twice.
inherit_conversion_mappings({"PiToMeCLIPVisionModel": "CLIPVisionModel"})


@dataclass
class PiToMeCLIPVisionOutput(MergeOutputMixin, BaseModelOutputWithPooling):
    """A `BaseModelOutputWithPooling` of the vision tower plus the merge information (`MergeOutputMixin`)."""


@dataclass
class PiToMeCLIPVisionModelOutput(MergeOutputMixin, CLIPVisionModelOutput):
    """A `CLIPVisionModelOutput` (image_embeds, ...) plus the merge information (`MergeOutputMixin`)."""


@dataclass
class PiToMeCLIPOutput(MergeOutputMixin, CLIPOutput):
    """A `CLIPOutput` (logits_per_image, logits_per_text, embeds, ...) plus the vision tower's merge information."""


class PiToMeCLIPEncoderLayer(PreNormMergingLayerMixin, CLIPEncoderLayer):
    """A CLIP vision layer that merges tokens after attention + residual, before `layer_norm2` and the MLP."""


class PiToMeCLIPEncoder(MergingEncoderMixin, CLIPEncoder):
    """The stock CLIP encoder loop over `PiToMeCLIPEncoderLayer`s (the merge state reaches them as a keyword)."""

    layer_class = PiToMeCLIPEncoderLayer


class PiToMeCLIPVisionModel(CLIPVisionModel):
    """[`CLIPVisionModel`] with PiToMe token merging. The output (`PiToMeCLIPVisionOutput`) also carries
    `token_sizes`, `token_map` and `token_counts`; `last_hidden_state` is (B, 1 + T_L, hidden), `pooler_output` the
    CLS token after `post_layernorm` (B, hidden).

    Stand-alone, the merge settings are its own config's (`PiToMeCLIPVisionConfig`). Inside `PiToMeCLIPModel` and
    `PiToMeCLIPVisionModelWithProjection` they are the parent's config (`merge_config`), so changing the parent's
    `config.keep_ratio` changes how every entry point (forward, get_image_features, the tower itself) merges.
    """

    config_class = PiToMeCLIPVisionConfig
    _no_split_modules = ["CLIPVisionEmbeddings", "PiToMeCLIPEncoderLayer"]
    # A checkpointed layer would run its merge twice on the shared per-forward state.
    supports_gradient_checkpointing = False

    def __init__(self, config):
        CLIPPreTrainedModel.__init__(self, config)
        embed_dim = config.hidden_size
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)
        self.encoder = PiToMeCLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)
        self.merge_config = config
        self.post_init()

    def new_merge_state(self) -> MergeState:
        """A fresh per-forward merge state from `merge_config` (the tower's own backend is checked)."""
        settings = settings_of(self.merge_config, num_layers=self.config.num_hidden_layers)
        return merge_state_for(self.merge_config, settings=settings,
                               attn_implementation=getattr(self.config, "_attn_implementation", None))

    def forward(self, pixel_values: Optional[torch.Tensor] = None, return_dict: Optional[bool] = None, **kwargs):
        """pixel_values (B, C, H, W) -> last_hidden_state (B, p + T_L, hidden), pooler_output (B, hidden), merge info.
        The other stock arguments (interpolate_pos_encoding, ...) pass through `kwargs`."""
        check_inputs(type(self).__name__, pixel_values=pixel_values)
        state = self.new_merge_state()
        outputs = super().forward(pixel_values, return_dict=True, merge_state=state, **kwargs)
        return return_output(PiToMeCLIPVisionOutput(**outputs, **state.output_fields()), self.config, return_dict)


class PiToMeCLIPVisionModelWithProjection(CLIPVisionModelWithProjection):
    """[`CLIPVisionModelWithProjection`] with PiToMe token merging: image_embeds (B, projection_dim) plus the merge
    information."""

    config_class = PiToMeCLIPVisionConfig
    _no_split_modules = ["CLIPVisionEmbeddings", "PiToMeCLIPEncoderLayer"]
    supports_gradient_checkpointing = False

    def __init__(self, config):
        CLIPPreTrainedModel.__init__(self, config)
        self.vision_model = PiToMeCLIPVisionModel._from_config(config)
        self.vision_model.merge_config = config
        self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.post_init()

    def forward(self, pixel_values: Optional[torch.Tensor] = None, return_dict: Optional[bool] = None, **kwargs):
        vision_outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        result = PiToMeCLIPVisionModelOutput(
            image_embeds=self.visual_projection(vision_outputs.pooler_output),
            last_hidden_state=vision_outputs.last_hidden_state,
            hidden_states=vision_outputs.hidden_states,
            attentions=vision_outputs.attentions,
            **merge_fields(vision_outputs),
        )
        return return_output(result, self.config, return_dict)


class PiToMeCLIPModel(DualEncoderMixin, CLIPModel):
    """[`CLIPModel`] with PiToMe token merging in the vision tower. `get_image_features`, `get_text_features` and the
    logits are the stock CLIP's; the output (`PiToMeCLIPOutput`) also carries the vision tower's `token_sizes`,
    `token_map` and `token_counts`. Works with the zero-shot-image-classification pipeline."""

    config_class = PiToMeCLIPConfig
    config: PiToMeCLIPConfig
    output_class = PiToMeCLIPOutput
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings", "PiToMeCLIPEncoderLayer"]
    supports_gradient_checkpointing = False

    def __init__(self, config: PiToMeCLIPConfig):
        CLIPPreTrainedModel.__init__(self, config)
        text_config, vision_config = config.text_config, config.vision_config
        self.projection_dim = config.projection_dim
        self.text_embed_dim = text_config.hidden_size
        self.vision_embed_dim = vision_config.hidden_size
        self.text_model = CLIPTextModel._from_config(text_config)
        self.vision_model = PiToMeCLIPVisionModel._from_config(vision_config)
        self.vision_model.merge_config = config
        self.visual_projection = nn.Linear(self.vision_embed_dim, self.projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_embed_dim, self.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(self.config.logit_scale_init_value))
        self.post_init()



PiToMeCLIPConfig.register_for_auto_classes(PiToMeCLIPModel)
# No Auto class has a with-projection vision tower: a saved one maps AutoModel to itself (its own folder only).
PiToMeCLIPVisionConfig.register_for_auto_classes(PiToMeCLIPVisionModel, PiToMeCLIPVisionModelWithProjection)

__all__ = [
    "PiToMeCLIPEncoderLayer",
    "PiToMeCLIPModel",
    "PiToMeCLIPOutput",
    "PiToMeCLIPVisionModel",
    "PiToMeCLIPVisionModelOutput",
    "PiToMeCLIPVisionModelWithProjection",
    "PiToMeCLIPVisionOutput",
]

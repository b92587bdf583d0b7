# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe LLaVA: a Hugging Face LLaVA whose CLIP vision tower merges tokens, so fewer image tokens reach the
language model (54 instead of 576 for LLaVA-1.5 at keep ratio 0.9).

The vision tower is `PiToMeCLIPVisionModel`; it merges only in the layers before `vision_feature_layer`
(`llava_merge_settings`), and surviving tokens keep their spatial order. The projector and the language model are
the stock ones; weights and parameter names are the stock LLaVA's, so llava-hf checkpoints load unchanged. Prompts
must be built by `PiToMeLlavaProcessor`, which inserts the merged number of `<image>` tokens
(`llava_num_image_tokens`, the same schedule).
"""

from typing import Optional

import torch
from transformers import AutoModel
from transformers.models.clip.modeling_clip import CLIPVisionModel
from transformers.models.llava.modeling_llava import (
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaMultiModalProjector,
    LlavaPreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_pitome_llava import PiToMeLlavaConfig, llava_merge_settings, llava_num_image_tokens
from .merge_state import inherit_conversion_mappings, merge_state_for
from .modeling_pitome_clip import PiToMeCLIPVisionModel

# Stock llava-hf checkpoints store transformers-4 names (language_model.model.*, vision_tower.vision_model.*); give our
# classes the stock classes' renamings (the vision tower's own mapping is registered in modeling_pitome_clip.py).
# overwrite=True: remote code may import this file twice.
inherit_conversion_mappings({"PiToMeLlavaForConditionalGeneration": "llava",
                             "PiToMeLlavaModel": ("LlavaModel", "llava")})


class _FeatureLayerMergeView:
    """What the vision tower reads its merge settings from when called directly: the LLaVA config's settings,
    restricted to the layers before the feature layer (read live, so changing config.keep_ratio takes effect)."""

    def __init__(self, config):
        self._config = config

    def __getattr__(self, name):
        if name == "merge_layers":
            return list(llava_merge_settings(self._config).merge_layers)
        return getattr(self._config, name)


class PiToMeLlavaModel(LlavaModel):
    """[`LlavaModel`] with a PiToMe CLIP vision tower. `get_image_features` returns the merged image tokens
    (B images x n tokens, n = `llava_num_image_tokens(config)`), in the original spatial order."""

    config_class = PiToMeLlavaConfig
    _no_split_modules = ["LlamaDecoderLayer", "CLIPVisionEmbeddings", "PiToMeCLIPEncoderLayer"]
    supports_gradient_checkpointing = False

    def __init__(self, config):
        LlavaPreTrainedModel.__init__(self, config)
        self.vision_tower = PiToMeCLIPVisionModel._from_config(config.vision_config)
        self.vision_tower.merge_config = _FeatureLayerMergeView(config)
        self.multi_modal_projector = LlavaMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer=None,
        vision_feature_select_strategy: Optional[str] = None,
        image_sizes=None,
        **kwargs,
    ):
        """pixel_values (B, C, H, W) -> pooler_output: a list of B tensors (n, hidden) of projected image tokens."""
        if image_sizes is not None:
            raise ValueError("PiToMe LLaVA does not take image_sizes (LLaVA-1.5 style towers only).")
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        kwargs.pop("return_dict", None)
        kwargs.pop("output_hidden_states", None)
        tower = self.vision_tower
        state = merge_state_for(self.config, settings=llava_merge_settings(self.config, layer),
                                attn_implementation=getattr(tower.config, "_attn_implementation", None))
        outputs = CLIPVisionModel.forward(
            tower, pixel_values, return_dict=True, output_hidden_states=True, merge_state=state, **kwargs
        )
        layers = [layer] if isinstance(layer, int) else list(layer)
        hidden = [outputs.hidden_states[x] for x in layers]
        if strategy == "default":
            hidden = [h[:, 1:] for h in hidden]
        selected = torch.cat(hidden, dim=-1)
        image_features = self.multi_modal_projector(selected)
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=list(image_features),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def get_placeholder_mask(self, input_ids, inputs_embeds, image_features):
        """As stock, but a prompt built for another token count fails with an error naming the right processor."""
        if input_ids is None:
            image_embed = self.get_input_embeddings()(
                torch.full((), self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == image_embed).all(-1)
        else:
            mask = input_ids == self.config.image_token_id
        n_tokens = int(mask.sum())
        n_features = image_features.shape[:-1].numel()
        if n_tokens != n_features:
            expected = llava_num_image_tokens(self.config)
            vision = self.config.vision_config
            stock = (vision.image_size // vision.patch_size) ** 2 + (
                0 if self.config.vision_feature_select_strategy == "default" else 1
            )
            hint = ""
            if expected and n_tokens % max(stock, 1) == 0 and n_tokens and expected != stock:
                hint = f" The prompt looks like the stock LlavaProcessor's ({stock} <image> tokens per image)."
            raise ValueError(
                f"PiToMe LLaVA: the prompt has {n_tokens} image tokens but the merged vision tower produced "
                f"{n_features} image features ({expected} per image at keep_ratio={self.config.keep_ratio}, "
                f"merge_method={self.config.merge_method!r}).{hint} Build prompts with PiToMeLlavaProcessor "
                "(AutoProcessor.from_pretrained(<this checkpoint>, trust_remote_code=True), or "
                "PiToMeLlavaProcessor.from_model_config(config, image_processor, tokenizer)), whose settings match "
                "this model's config."
            )
        return mask.unsqueeze(-1).expand_as(inputs_embeds).to(inputs_embeds.device)


class PiToMeLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """[`LlavaForConditionalGeneration`] with PiToMe token merging in the vision tower. `generate` (KV cache,
    batches with left padding, several images per prompt) and the image-text-to-text pipeline work as stock."""

    config_class = PiToMeLlavaConfig
    _no_split_modules = ["LlamaDecoderLayer", "CLIPVisionEmbeddings", "PiToMeCLIPEncoderLayer"]
    supports_gradient_checkpointing = False

    def __init__(self, config):
        LlavaPreTrainedModel.__init__(self, config)
        self.model = PiToMeLlavaModel(config)
        self.lm_head = torch.nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


PiToMeLlavaConfig.register_for_auto_classes(PiToMeLlavaModel, PiToMeLlavaForConditionalGeneration)

__all__ = ["PiToMeLlavaForConditionalGeneration", "PiToMeLlavaModel"]

# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe LLaVA processor: a `LlavaProcessor` that expands `<image>` into the merged number of image tokens.

The count comes from `llava_num_image_tokens` (configuration_pitome_llava.py), the same function and the same
`token_schedule` the model uses. The processor holds the merge fields the count depends on (`COUNT_FIELDS` of the
merge-field table) in one `merge_settings` parameter (ProcessorMixin saves only `__init__` parameters), so
processor_config.json is self-contained; build it from a model config with `PiToMeLlavaProcessor.from_model_config`.
"""

from types import SimpleNamespace

from transformers import LlavaProcessor
from transformers.image_utils import get_image_size, to_numpy_array

from .configuration_pitome_llava import PiToMeLlavaConfig, llava_num_image_tokens
from .merge_config import COUNT_FIELDS, count_settings


class PiToMeLlavaProcessor(LlavaProcessor):
    r"""[`LlavaProcessor`] for PiToMe LLaVA: `<image>` becomes `llava_num_image_tokens(...)` image tokens.

    Args beyond LlavaProcessor's (all saved in processor_config.json; keep them equal to the model config's):
        merge_settings: the merge fields the token count depends on (`merge_config.COUNT_FIELDS`: merge_method,
            keep_ratio, merge_r, merge_layers, protected_tokens), as a dict; missing ones take the table's defaults.
        vision_num_hidden_layers: number of layers of the vision tower (the margin schedule's L).
        vision_feature_layer: the vision hidden state LLaVA reads (default -2).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        patch_size=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token="<image>",
        num_additional_image_tokens=0,
        merge_settings=None,
        vision_num_hidden_layers=24,
        vision_feature_layer=-2,
        **kwargs,
    ):
        merge_settings = dict(merge_settings or {})
        for name in COUNT_FIELDS:  # processor_config.json files written before merge_settings had them at top level
            if name in kwargs:
                merge_settings[name] = kwargs.pop(name)
        self.merge_settings = count_settings(merge_settings, "PiToMeLlavaProcessor merge_settings")
        self.vision_num_hidden_layers = vision_num_hidden_layers
        self.vision_feature_layer = vision_feature_layer
        super().__init__(
            image_processor,
            tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template,
            image_token=image_token,
            num_additional_image_tokens=num_additional_image_tokens,
            **kwargs,
        )

    @classmethod
    def from_model_config(cls, config, image_processor, tokenizer, **kwargs):
        """A processor whose settings are those of a PiToMe LLaVA model config."""
        values = dict(
            patch_size=config.vision_config.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            num_additional_image_tokens=1,
            merge_settings=count_settings(config),
            vision_num_hidden_layers=config.vision_config.num_hidden_layers,
            vision_feature_layer=config.vision_feature_layer,
        )
        values.update(kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer, **values)

    def _settings(self):
        return SimpleNamespace(
            **self.merge_settings,
            default_protected_tokens=PiToMeLlavaConfig.default_protected_tokens,
            vision_config=SimpleNamespace(num_hidden_layers=self.vision_num_hidden_layers, patch_size=self.patch_size),
            vision_feature_layer=self.vision_feature_layer,
            vision_feature_select_strategy=self.vision_feature_select_strategy or "default",
        )

    def num_image_tokens(self, height: int, width: int) -> int:
        """Image tokens the model receives for one height x width image (after the image processor)."""
        return llava_num_image_tokens(self._settings(), height, width)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        pixel_values = image_inputs["pixel_values"][image_idx]
        height, width = get_image_size(to_numpy_array(pixel_values))
        return self.image_token * self.num_image_tokens(height, width)

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs):
        data = super()._get_num_multimodal_tokens(image_sizes=image_sizes, **kwargs)
        if image_sizes is not None:
            crop = self.image_processor.crop_size
            data.num_image_tokens = [self.num_image_tokens(crop["height"], crop["width"])] * len(image_sizes)
        return data


PiToMeLlavaProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["PiToMeLlavaProcessor"]

# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the PiToMe CLIP family: `CLIPConfig` / `CLIPVisionConfig` plus the token-merge settings.

Only the vision tower merges; the text tower is the stock CLIP text encoder. The merge fields are documented on
`MergeConfigMixin` in merging.py.
"""

from dataclasses import fields

from transformers import CLIPConfig, CLIPVisionConfig

from .merging import MergeConfigMixin, accept_stock_config_dict

# Merge fields of the composite config that a stand-alone vision config takes over when it reads a CLIP config.json.
MERGE_FIELDS = tuple(f.name for f in fields(MergeConfigMixin))


class PiToMeCLIPVisionConfig(MergeConfigMixin, CLIPVisionConfig):
    r"""A [`CLIPVisionConfig`] with PiToMe token merging, for [`PiToMeCLIPVisionModel`] and
    [`PiToMeCLIPVisionModelWithProjection`] used on their own.

    It also reads a (PiToMe or stock) CLIP config.json: it takes the `vision_config` part, plus the merge settings
    of a PiToMe CLIP config. Example:

    ```python
    >>> config = PiToMeCLIPVisionConfig(image_size=224, patch_size=16, keep_ratio=0.9)
    ```
    """

    model_type = "pitome_clip_vision_model"
    stock_model_types = ("clip_vision_model",)
    default_protected_tokens = 1

    def __post_init__(self, **kwargs):
        if not getattr(self, "auto_map", None):
            self.auto_map = {
                "AutoConfig": "configuration_pitome_clip.PiToMeCLIPVisionConfig",
                "AutoModel": "modeling_pitome_clip.PiToMeCLIPVisionModel",
            }
        super().__post_init__(**kwargs)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") in ("clip", PiToMeCLIPConfig.model_type) and "vision_config" in config_dict:
            vision = dict(config_dict["vision_config"] or {})
            vision.update({k: config_dict[k] for k in MERGE_FIELDS if k in config_dict})
            vision["model_type"] = cls.model_type
            config_dict = vision
        return accept_stock_config_dict(cls, config_dict), kwargs


class PiToMeCLIPConfig(MergeConfigMixin, CLIPConfig):
    r"""A [`CLIPConfig`] with PiToMe token merging in the vision tower (the text tower never merges).

    `text_config` and `vision_config` stay the stock CLIP sub-configs; the merge settings live on this config and
    apply to the `vision_config.num_hidden_layers` layers of the vision tower (`merge_num_hidden_layers`, derived,
    never saved). Example:

    ```python
    >>> config = PiToMeCLIPConfig(vision_config={"image_size": 224, "patch_size": 16}, keep_ratio=0.925)
    >>> config.merge_num_hidden_layers
    12
    ```
    """

    model_type = "pitome_clip"
    stock_model_types = ("clip",)
    default_protected_tokens = 1

    def __post_init__(self, **kwargs):
        kwargs.pop("merge_num_hidden_layers", None)  # derived from vision_config; never a setting of its own
        if not getattr(self, "auto_map", None):
            self.auto_map = {
                "AutoConfig": "configuration_pitome_clip.PiToMeCLIPConfig",
                "AutoModel": "modeling_pitome_clip.PiToMeCLIPModel",
                "AutoModelForZeroShotImageClassification": "modeling_pitome_clip.PiToMeCLIPModel",
            }
        super().__post_init__(**kwargs)

    @property
    def merge_num_hidden_layers(self) -> int:
        """Number of layers the merge settings apply to: the vision tower's (read by `MergeSettings`)."""
        vision = self.vision_config
        if vision is None:
            return CLIPVisionConfig.num_hidden_layers
        if isinstance(vision, dict):
            return vision.get("num_hidden_layers", CLIPVisionConfig.num_hidden_layers)
        return vision.num_hidden_layers

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        return accept_stock_config_dict(cls, config_dict), kwargs


__all__ = ["PiToMeCLIPConfig", "PiToMeCLIPVisionConfig"]

# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the PiToMe CLIP family: `CLIPConfig` / `CLIPVisionConfig` plus the token-merge settings.

Only the vision tower merges; the text tower is the stock CLIP text encoder. The merge fields are documented on
`MergeConfigMixin` in merging.py.
"""

from transformers import CLIPConfig, CLIPVisionConfig

from .merge_config import MergeConfigMixin, VisionTowerMergeMixin


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
    composite_model_types = ("clip", "pitome_clip")
    default_protected_tokens = 1
    auto_map_classes = {"AutoModel": "modeling_pitome_clip.PiToMeCLIPVisionModel"}



class PiToMeCLIPConfig(VisionTowerMergeMixin, CLIPConfig):
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
    auto_map_classes = {
        "AutoModelForZeroShotImageClassification": "modeling_pitome_clip.PiToMeCLIPModel",
        "AutoModel": "modeling_pitome_clip.PiToMeCLIPModel",
    }



__all__ = ["PiToMeCLIPConfig", "PiToMeCLIPVisionConfig"]

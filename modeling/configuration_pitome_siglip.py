# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the PiToMe SigLIP family: `SiglipConfig` / `SiglipVisionConfig` plus the token-merge settings.

Only the vision tower merges; the text tower is the stock SigLIP text encoder. SigLIP has no CLS token, so nothing is
protected by default (`default_protected_tokens = 0`). The merge fields are documented on `MergeConfigMixin` in
merge_config.py.
"""

from transformers import SiglipConfig, SiglipVisionConfig

from .merge_config import MergeConfigMixin, VisionTowerMergeMixin


class PiToMeSiglipVisionConfig(MergeConfigMixin, SiglipVisionConfig):
    r"""A [`SiglipVisionConfig`] with PiToMe token merging, for [`PiToMeSiglipVisionModel`] on its own. It also reads
    a (PiToMe or stock) SigLIP config.json: the `vision_config` part plus a PiToMe SigLIP config's merge settings."""

    model_type = "pitome_siglip_vision_model"
    stock_model_types = ("siglip_vision_model",)
    composite_model_types = ("siglip", "pitome_siglip")
    default_protected_tokens = 0
    auto_map_classes = {"AutoModel": "modeling_pitome_siglip.PiToMeSiglipVisionModel"}


class PiToMeSiglipConfig(VisionTowerMergeMixin, SiglipConfig):
    r"""A [`SiglipConfig`] with PiToMe token merging in the vision tower (the text tower never merges). Example:

    ```python
    >>> config = PiToMeSiglipConfig(keep_ratio=0.9)  # SigLIP-B/16-224 shapes: 196 patch tokens, 12 layers
    ```
    """

    model_type = "pitome_siglip"
    stock_model_types = ("siglip",)
    default_protected_tokens = 0
    auto_map_classes = {
        "AutoModelForZeroShotImageClassification": "modeling_pitome_siglip.PiToMeSiglipModel",
        "AutoModel": "modeling_pitome_siglip.PiToMeSiglipModel",
    }


__all__ = ["PiToMeSiglipConfig", "PiToMeSiglipVisionConfig"]

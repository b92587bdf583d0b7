# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the PiToMe ViT family: a `ViTConfig` plus the token-merge settings (see merging.py)."""

from transformers import ViTConfig

from .merge_config import MergeConfigMixin


class PiToMeViTConfig(MergeConfigMixin, ViTConfig):
    r"""A [`ViTConfig`] (also DeiT checkpoints that use the ViT architecture) with PiToMe token merging.

    The merge fields are documented on `MergeConfigMixin` in merging.py. Besides them:

    classifier_pooling: what `PiToMeViTForImageClassification` classifies. "cls" (the stock ViT head: the CLS token
        after the final LayerNorm) or "mean" (MAE-style global average pool: the size-weighted mean of the patch
        tokens of the last layer, then the final LayerNorm acting as MAE's fc_norm, then the classifier; a converted
        MAE classifier keeps this setting in its config.json).

    Example:

    ```python
    >>> config = PiToMeViTConfig(merge_method="pitome", keep_ratio=0.9)
    ```
    """

    model_type = "pitome_vit"
    stock_model_types = ("vit",)
    default_protected_tokens = 1
    auto_map_classes = {
        "AutoModel": "modeling_pitome_vit.PiToMeViTModel",
        "AutoModelForImageClassification": "modeling_pitome_vit.PiToMeViTForImageClassification",
    }
    choice_fields = {"classifier_pooling": ("cls", "mean")}  # checked on every path by MergeConfigMixin
    classifier_pooling: str = "cls"



__all__ = ["PiToMeViTConfig"]

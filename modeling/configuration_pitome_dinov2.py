# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the PiToMe DINOv2 family: a `Dinov2Config` (or `Dinov2WithRegistersConfig`) plus the
token-merge settings (see merging.py). The protected prefix is CLS, plus the register tokens where there are any.

Note: DINOv2 checkpoints declare image_size=518 but are mostly run at 224 with interpolated position embeddings;
give `token_schedule(config, num_tokens=(224 // 14) ** 2)` the number of patches actually used.
"""

from transformers import Dinov2Config, Dinov2WithRegistersConfig

from .merge_config import MergeConfigMixin


class PiToMeDinov2Config(MergeConfigMixin, Dinov2Config):
    r"""A [`Dinov2Config`] with PiToMe token merging (merge fields documented on `MergeConfigMixin`). Example:

    ```python
    >>> config = PiToMeDinov2Config.from_pretrained(path_to_dinov2, keep_ratio=0.9)
    ```
    """

    model_type = "pitome_dinov2"
    stock_model_types = ("dinov2",)
    default_protected_tokens = 1
    auto_map_classes = {
        "AutoModel": "modeling_pitome_dinov2.PiToMeDinov2Model",
        "AutoModelForImageClassification": "modeling_pitome_dinov2.PiToMeDinov2ForImageClassification",
    }



class PiToMeDinov2WithRegistersConfig(MergeConfigMixin, Dinov2WithRegistersConfig):
    r"""A [`Dinov2WithRegistersConfig`] with PiToMe token merging: CLS and the `num_register_tokens` registers are
    protected (never merged)."""

    model_type = "pitome_dinov2_with_registers"
    stock_model_types = ("dinov2_with_registers",)

    @classmethod
    def architecture_prefix(cls, config) -> int:
        """CLS and the registers, read from a PiToMe or stock config."""
        return 1 + config.num_register_tokens

    auto_map_classes = {"AutoModel": "modeling_pitome_dinov2.PiToMeDinov2WithRegistersModel"}



__all__ = ["PiToMeDinov2Config", "PiToMeDinov2WithRegistersConfig"]

# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of PiToMe LLaVA: a `LlavaConfig` plus the token-merge settings of its CLIP vision tower.

The merge settings (see `MergeConfigMixin` in merging.py) apply to the vision tower's `num_hidden_layers` layers
(`merge_num_hidden_layers`, derived, never saved), but only the layers whose output reaches `vision_feature_layer`
ever merge: `llava_merge_settings` restricts them, and `llava_num_image_tokens` gives the number of image tokens the
language model receives. Model and processor both call these two functions (which call `token_schedule`).
"""

from typing import Optional

from transformers import CLIPVisionConfig, LlavaConfig

from .merge_config import MergeSettings, VisionTowerMergeMixin, protected_prefix, token_schedule

# LlavaConfig's default vision tower (CLIP-L/14-336) has 24 layers.
_DEFAULT_VISION_LAYERS = 24


def _vision_value(config, name, default=None):
    vision = getattr(config, "vision_config", None)
    if vision is None:
        return default
    if isinstance(vision, dict):
        return vision.get(name, getattr(CLIPVisionConfig, name, default))
    return getattr(vision, name, default)


def llava_feature_depth(config, vision_feature_layer=None) -> int:
    """How many vision layers run before the feature layer is read: hidden_states[k] is the output of layer k - 1, so
    layers 0..k-1 feed it (feature layer -2 of a 24-layer tower: k = 23, layers 0..22). Refuses several feature
    layers while merging is on (their hidden states would hold different numbers of tokens)."""
    num_layers = _vision_value(config, "num_hidden_layers", _DEFAULT_VISION_LAYERS)
    layer = config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
    if isinstance(layer, (list, tuple)):
        settings = MergeSettings.from_config(config, num_layers=num_layers)
        if settings.active and len(layer) > 1:
            raise ValueError(
                f"vision_feature_layer={list(layer)!r}: PiToMe LLaVA reads a single vision feature layer, because the "
                "hidden states of different layers hold different numbers of merged tokens and cannot be concatenated. "
                "Use one layer (e.g. -2), or merge_method='none'."
            )
        return max(llava_feature_depth(config, int(x)) for x in layer)
    if not -(num_layers + 1) <= int(layer) <= num_layers:
        raise ValueError(f"vision_feature_layer={layer!r} is outside the vision tower's {num_layers + 1} hidden states.")
    return int(layer) % (num_layers + 1)


def llava_merge_settings(config, vision_feature_layer=None) -> MergeSettings:
    """The merge settings the vision tower runs with: the config's, restricted to the layers before the feature layer
    (later layers' outputs are never read, merging there would be wasted work). The margin schedule still spans all
    of the tower's layers."""
    num_layers = _vision_value(config, "num_hidden_layers", _DEFAULT_VISION_LAYERS)
    depth = llava_feature_depth(config, vision_feature_layer)
    base = MergeSettings.from_config(config, num_layers=num_layers)
    layers = range(num_layers) if base.merge_layers is None else base.merge_layers
    return MergeSettings.from_config(config, num_layers=num_layers, merge_layers=[x for x in layers if x < depth])


def llava_num_image_tokens(
    config,
    height: Optional[int] = None,
    width: Optional[int] = None,
    vision_feature_layer=None,
    vision_feature_select_strategy: Optional[str] = None,
) -> int:
    """Number of image tokens the language model receives for one image of height x width pixels (default: the
    vision config's image_size): the schedule's count at the feature layer, plus the protected prefix (CLS) for the
    "full" strategy. `config` is a PiToMe LLaVA config, or any object with the merge fields, `vision_config`
    (num_hidden_layers, patch_size, image_size), `vision_feature_layer` and `vision_feature_select_strategy`."""
    settings = llava_merge_settings(config, vision_feature_layer)
    depth = llava_feature_depth(config, vision_feature_layer)
    patch = _vision_value(config, "patch_size")
    if height is None or width is None:
        size = _vision_value(config, "image_size")
        height, width = (size, size) if isinstance(size, int) else tuple(size)
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    counts = token_schedule(settings, num_tokens=(int(height) // ph) * (int(width) // pw))
    prefix = protected_prefix(config)
    strategy = vision_feature_select_strategy or config.vision_feature_select_strategy
    return counts[depth] + prefix - (1 if strategy == "default" else 0)


class PiToMeLlavaConfig(VisionTowerMergeMixin, LlavaConfig):
    r"""A [`LlavaConfig`] with PiToMe token merging in the CLIP vision tower (the language model never merges).

    `vision_config` and `text_config` stay the stock sub-configs; the merge settings live on this config. Only the
    vision layers before `vision_feature_layer` merge. Example:

    ```python
    >>> config = PiToMeLlavaConfig(keep_ratio=0.9)  # LLaVA-1.5 shapes: CLIP-L/14-336, feature layer -2
    >>> llava_num_image_tokens(config)
    54
    ```
    """

    model_type = "pitome_llava"
    stock_model_types = ("llava",)
    default_protected_tokens = 1
    auto_map_classes = {
        "AutoModel": "modeling_pitome_llava.PiToMeLlavaModel",
        "AutoModelForImageTextToText": "modeling_pitome_llava.PiToMeLlavaForConditionalGeneration",
        "AutoProcessor": "processing_pitome_llava.PiToMeLlavaProcessor",
    }

    # the language model reads the image tokens in order: surviving tokens must keep their spatial order
    required_merge_settings = {"keep_order": (True, "the language model reads the image tokens in order")}

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        vision_type = getattr(self.vision_config, "model_type", None)
        if vision_type not in ("clip_vision_model", "pitome_clip_vision_model"):
            raise ValueError(
                f"PiToMe LLaVA merges in a CLIP vision tower; this config's vision_config has model_type={vision_type!r}."
            )
        llava_feature_depth(self)  # validates vision_feature_layer



__all__ = ["PiToMeLlavaConfig", "llava_feature_depth", "llava_merge_settings", "llava_num_image_tokens"]

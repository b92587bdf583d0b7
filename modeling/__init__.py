"""Hub-bound model code: flat files importing each other with single-dot relative imports (torch + transformers only)."""

from .configuration_pitome_clip import PiToMeCLIPConfig, PiToMeCLIPVisionConfig
from .configuration_pitome_vit import PiToMeViTConfig
from .merging import MergeSettings, token_schedule
from .modeling_pitome_clip import PiToMeCLIPModel, PiToMeCLIPVisionModel, PiToMeCLIPVisionModelWithProjection
from .modeling_pitome_vit import PiToMeViTForImageClassification, PiToMeViTModel

__all__ = [
    "MergeSettings",
    "PiToMeCLIPConfig",
    "PiToMeCLIPModel",
    "PiToMeCLIPVisionConfig",
    "PiToMeCLIPVisionModel",
    "PiToMeCLIPVisionModelWithProjection",
    "PiToMeViTConfig",
    "PiToMeViTForImageClassification",
    "PiToMeViTModel",
    "token_schedule",
]

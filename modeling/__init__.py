"""Hub-bound model code: flat files importing each other with single-dot relative imports (torch + transformers only)."""

from .configuration_pitome_clip import PiToMeCLIPConfig, PiToMeCLIPVisionConfig
from .configuration_pitome_llava import PiToMeLlavaConfig, llava_num_image_tokens
from .configuration_pitome_vit import PiToMeViTConfig
from .merging import MergeSettings, token_schedule
from .modeling_pitome_clip import PiToMeCLIPModel, PiToMeCLIPVisionModel, PiToMeCLIPVisionModelWithProjection
from .modeling_pitome_llava import PiToMeLlavaForConditionalGeneration, PiToMeLlavaModel
from .processing_pitome_llava import PiToMeLlavaProcessor
from .modeling_pitome_vit import PiToMeViTForImageClassification, PiToMeViTModel

__all__ = [
    "MergeSettings",
    "PiToMeCLIPConfig",
    "PiToMeCLIPModel",
    "PiToMeCLIPVisionConfig",
    "PiToMeCLIPVisionModel",
    "PiToMeCLIPVisionModelWithProjection",
    "PiToMeLlavaConfig",
    "PiToMeLlavaForConditionalGeneration",
    "PiToMeLlavaModel",
    "PiToMeLlavaProcessor",
    "PiToMeViTConfig",
    "PiToMeViTForImageClassification",
    "PiToMeViTModel",
    "llava_num_image_tokens",
    "token_schedule",
]

"""Hub-bound model code: flat files importing each other with single-dot relative imports (torch + transformers only)."""

from .configuration_pitome_bert import PiToMeBertConfig
from .configuration_pitome_clip import PiToMeCLIPConfig, PiToMeCLIPVisionConfig
from .configuration_pitome_dinov2 import PiToMeDinov2Config, PiToMeDinov2WithRegistersConfig
from .configuration_pitome_llava import PiToMeLlavaConfig, llava_num_image_tokens
from .configuration_pitome_vit import PiToMeViTConfig
from .merge_config import MergeSettings, token_schedule
from .merge_state import PaddedMergeState, unmerge
from .modeling_pitome_bert import PiToMeBertForSequenceClassification, PiToMeBertModel, size_weighted_mean_pool
from .modeling_pitome_clip import PiToMeCLIPModel, PiToMeCLIPVisionModel, PiToMeCLIPVisionModelWithProjection
from .modeling_pitome_dinov2 import (
    PiToMeDinov2ForImageClassification,
    PiToMeDinov2Model,
    PiToMeDinov2WithRegistersModel,
    patch_mean,
)
from .modeling_pitome_llava import PiToMeLlavaForConditionalGeneration, PiToMeLlavaModel
from .processing_pitome_llava import PiToMeLlavaProcessor
from .modeling_pitome_vit import PiToMeViTForImageClassification, PiToMeViTModel
from .configuration_pitome_siglip import PiToMeSiglipConfig, PiToMeSiglipVisionConfig
from .modeling_pitome_siglip import PiToMeSiglipModel, PiToMeSiglipVisionModel

__all__ = [
    "PiToMeBertConfig",
    "PiToMeBertForSequenceClassification",
    "PiToMeBertModel",
    "PiToMeDinov2Config",
    "PiToMeDinov2ForImageClassification",
    "PiToMeDinov2Model",
    "PiToMeDinov2WithRegistersConfig",
    "PiToMeDinov2WithRegistersModel",
    "PaddedMergeState",
    "patch_mean",
    "size_weighted_mean_pool",
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
    "PiToMeSiglipConfig",
    "PiToMeSiglipModel",
    "PiToMeSiglipVisionConfig",
    "PiToMeSiglipVisionModel",
    "PiToMeViTConfig",
    "PiToMeViTForImageClassification",
    "PiToMeViTModel",
    "llava_num_image_tokens",
    "token_schedule",
    "unmerge",
]

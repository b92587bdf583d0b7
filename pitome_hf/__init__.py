"""pitome_hf: PiToMe token merging for Hugging Face transformers.

Importing the package registers the PiToMe classes with the transformers Auto factories, so that
`AutoModel.from_pretrained(folder)` works without remote code when pitome_hf is installed.
"""

from .modeling import (
    PiToMeBertConfig,
    PiToMeBertForSequenceClassification,
    PiToMeBertModel,
    PiToMeDinov2Config,
    PiToMeDinov2ForImageClassification,
    PiToMeDinov2Model,
    PiToMeDinov2WithRegistersConfig,
    PiToMeDinov2WithRegistersModel,
    MergeSettings,
    PiToMeCLIPConfig,
    PiToMeCLIPModel,
    PiToMeCLIPVisionConfig,
    PiToMeCLIPVisionModel,
    PiToMeCLIPVisionModelWithProjection,
    PiToMeLlavaConfig,
    PiToMeLlavaForConditionalGeneration,
    PiToMeLlavaModel,
    PiToMeLlavaProcessor,
    PiToMeSiglipConfig,
    PiToMeSiglipModel,
    PiToMeSiglipVisionConfig,
    PiToMeSiglipVisionModel,
    PiToMeViTConfig,
    PiToMeViTForImageClassification,
    PiToMeViTModel,
    token_schedule,
    unmerge,
)
from .convert import apply_pitome
from ._auto import register_auto_classes

register_auto_classes()

__version__ = "0.2.0"

__all__ = [
    "PiToMeBertConfig",
    "PiToMeBertForSequenceClassification",
    "PiToMeBertModel",
    "PiToMeDinov2Config",
    "PiToMeDinov2ForImageClassification",
    "PiToMeDinov2Model",
    "PiToMeDinov2WithRegistersConfig",
    "PiToMeDinov2WithRegistersModel",
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
    "apply_pitome",
    "token_schedule",
    "unmerge",
]

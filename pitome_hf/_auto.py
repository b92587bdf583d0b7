"""Registration of the PiToMe classes with the transformers Auto factories (local, no remote code needed)."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForZeroShotImageClassification
from transformers import AutoModelForImageTextToText, AutoProcessor

from .modeling import (
    PiToMeCLIPConfig,
    PiToMeCLIPModel,
    PiToMeCLIPVisionConfig,
    PiToMeCLIPVisionModel,
    PiToMeLlavaConfig,
    PiToMeLlavaForConditionalGeneration,
    PiToMeLlavaModel,
    PiToMeLlavaProcessor,
    PiToMeViTConfig,
    PiToMeViTForImageClassification,
    PiToMeViTModel,
)

_REGISTRY = (
    (PiToMeViTConfig, ((AutoModel, PiToMeViTModel), (AutoModelForImageClassification, PiToMeViTForImageClassification))),
    (PiToMeCLIPConfig, ((AutoModel, PiToMeCLIPModel), (AutoModelForZeroShotImageClassification, PiToMeCLIPModel))),
    (PiToMeCLIPVisionConfig, ((AutoModel, PiToMeCLIPVisionModel),)),
    (PiToMeLlavaConfig, ((AutoModel, PiToMeLlavaModel), (AutoModelForImageTextToText, PiToMeLlavaForConditionalGeneration))),
)


def register_auto_classes() -> None:
    for config_class, models in _REGISTRY:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for auto, model_class in models:
            auto.register(config_class, model_class, exist_ok=True)
    AutoProcessor.register(PiToMeLlavaConfig, PiToMeLlavaProcessor, exist_ok=True)

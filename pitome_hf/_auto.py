"""Registration of the PiToMe classes with the transformers Auto factories (local, no remote code needed)."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForZeroShotImageClassification
from transformers import AutoModelForImageTextToText, AutoModelForSequenceClassification, AutoProcessor

from .modeling import (
    PiToMeBertConfig,
    PiToMeBertForSequenceClassification,
    PiToMeBertModel,
    PiToMeDinov2Config,
    PiToMeDinov2ForImageClassification,
    PiToMeDinov2Model,
    PiToMeDinov2WithRegistersConfig,
    PiToMeDinov2WithRegistersModel,
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
    (PiToMeBertConfig, ((AutoModel, PiToMeBertModel), (AutoModelForSequenceClassification, PiToMeBertForSequenceClassification))),
    (PiToMeDinov2Config, ((AutoModel, PiToMeDinov2Model), (AutoModelForImageClassification, PiToMeDinov2ForImageClassification))),
    (PiToMeDinov2WithRegistersConfig, ((AutoModel, PiToMeDinov2WithRegistersModel),)),
    (PiToMeLlavaConfig, ((AutoModel, PiToMeLlavaModel), (AutoModelForImageTextToText, PiToMeLlavaForConditionalGeneration))),
)


def register_auto_classes() -> None:
    for config_class, models in _REGISTRY:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for auto, model_class in models:
            auto.register(config_class, model_class, exist_ok=True)
    AutoProcessor.register(PiToMeLlavaConfig, PiToMeLlavaProcessor, exist_ok=True)

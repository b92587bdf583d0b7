"""Turn stock transformers models into their PiToMe variants (in memory: `apply_pitome`)."""

from __future__ import annotations

import torch
from transformers import (
    BertForSequenceClassification,
    BertModel,
    CLIPModel,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    Dinov2ForImageClassification,
    Dinov2Model,
    Dinov2WithRegistersModel,
    LlavaForConditionalGeneration,
    PreTrainedConfig,
    PreTrainedModel,
    ViTForImageClassification,
    ViTModel,
)

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
    PiToMeCLIPVisionModelWithProjection,
    PiToMeLlavaConfig,
    PiToMeLlavaForConditionalGeneration,
    PiToMeViTConfig,
    PiToMeViTForImageClassification,
    PiToMeViTModel,
)
from .modeling.merging import PRESET_FIELDS

# stock class -> (PiToMe class, PiToMe config class); a PiToMe class maps to itself (re-applying changes settings).
_FAMILIES: dict[type, tuple[type, type]] = {
    ViTModel: (PiToMeViTModel, PiToMeViTConfig),
    ViTForImageClassification: (PiToMeViTForImageClassification, PiToMeViTConfig),
    PiToMeViTModel: (PiToMeViTModel, PiToMeViTConfig),
    PiToMeViTForImageClassification: (PiToMeViTForImageClassification, PiToMeViTConfig),
    CLIPModel: (PiToMeCLIPModel, PiToMeCLIPConfig),
    CLIPVisionModel: (PiToMeCLIPVisionModel, PiToMeCLIPVisionConfig),
    CLIPVisionModelWithProjection: (PiToMeCLIPVisionModelWithProjection, PiToMeCLIPVisionConfig),
    PiToMeCLIPModel: (PiToMeCLIPModel, PiToMeCLIPConfig),
    PiToMeCLIPVisionModel: (PiToMeCLIPVisionModel, PiToMeCLIPVisionConfig),
    PiToMeCLIPVisionModelWithProjection: (PiToMeCLIPVisionModelWithProjection, PiToMeCLIPVisionConfig),
    LlavaForConditionalGeneration: (PiToMeLlavaForConditionalGeneration, PiToMeLlavaConfig),
    PiToMeLlavaForConditionalGeneration: (PiToMeLlavaForConditionalGeneration, PiToMeLlavaConfig),
    BertModel: (PiToMeBertModel, PiToMeBertConfig),
    BertForSequenceClassification: (PiToMeBertForSequenceClassification, PiToMeBertConfig),
    PiToMeBertModel: (PiToMeBertModel, PiToMeBertConfig),
    PiToMeBertForSequenceClassification: (PiToMeBertForSequenceClassification, PiToMeBertConfig),
    Dinov2Model: (PiToMeDinov2Model, PiToMeDinov2Config),
    Dinov2ForImageClassification: (PiToMeDinov2ForImageClassification, PiToMeDinov2Config),
    Dinov2WithRegistersModel: (PiToMeDinov2WithRegistersModel, PiToMeDinov2WithRegistersConfig),
    PiToMeDinov2Model: (PiToMeDinov2Model, PiToMeDinov2Config),
    PiToMeDinov2ForImageClassification: (PiToMeDinov2ForImageClassification, PiToMeDinov2Config),
    PiToMeDinov2WithRegistersModel: (PiToMeDinov2WithRegistersModel, PiToMeDinov2WithRegistersConfig),
}


def supported_classes() -> list[str]:
    return sorted({cls.__name__ for cls in _FAMILIES})


def pitome_config(config: PreTrainedConfig, config_class: type, **settings) -> PreTrainedConfig:
    """The PiToMe config of `config_class` built from a stock (or PiToMe) config plus merge settings.

    `preset=NAME` is short for `merge_preset=NAME`. A new preset replaces the old config's selection settings; a
    selection setting given without a preset clears the old config's preset name (the settings are no longer its)."""
    if "preset" in settings:
        settings["merge_preset"] = settings.pop("preset")
    values = config.to_dict()
    values.pop("auto_map", None)
    if settings.get("merge_preset") is not None:
        for name in PRESET_FIELDS:
            values.pop(name, None)
    elif any(name in settings for name in PRESET_FIELDS):
        values["merge_preset"] = None
    values["model_type"] = config_class.model_type
    values.update(settings)
    new = config_class.from_dict(values)
    new._attn_implementation = getattr(config, "_attn_implementation", None)
    return new


def _constructor_kwargs(model: PreTrainedModel) -> dict:
    if isinstance(model, ViTModel):
        return {"add_pooling_layer": model.pooler is not None, "use_mask_token": model.embeddings.mask_token is not None}
    if isinstance(model, BertModel):
        return {"add_pooling_layer": model.pooler is not None}
    return {}


def apply_pitome(model: PreTrainedModel, **settings) -> PreTrainedModel:
    """Return the PiToMe variant of an already-loaded stock model, sharing its weights (no copy).

    `settings` are merge settings (merge_method, keep_ratio, merge_r, margin, ...; see `MergeConfigMixin`), or
    `preset=NAME` for a named configuration (`pitome_hf.modeling.merging.MERGE_PRESETS`: "paper", "authors-deit",
    "authors-mae", "authors-bert", "authors-blip2").
    Example: `apply_pitome(ViTForImageClassification.from_pretrained(path), keep_ratio=0.9, preset="authors-deit")`.
    """
    family = _FAMILIES.get(type(model))
    if family is None:
        raise TypeError(
            f"apply_pitome does not support {type(model).__name__}; supported classes: {', '.join(supported_classes())}."
        )
    model_class, config_class = family
    config = pitome_config(model.config, config_class, **settings)
    with torch.device("meta"):
        new = model_class(config, **_constructor_kwargs(model))
    state = model.state_dict()
    result = new.load_state_dict(state, strict=True, assign=True)
    if result.missing_keys or result.unexpected_keys:  # strict=True raises first; kept as a guard
        raise RuntimeError(f"weights did not map: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    for name, buffer in model.named_buffers():  # non-persistent buffers are not in the state dict
        if name not in state:
            module_name, _, attr = name.rpartition(".")
            new.get_submodule(module_name).register_buffer(attr, buffer, persistent=False)
    new.train(model.training)
    return new

"""Turn stock transformers models into their PiToMe variants (in memory: `apply_pitome`)."""

from __future__ import annotations

import dataclasses
import inspect

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from pitome_hf.families import all_entries, entry_for_class
# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf.modeling.merge_config import MERGE_FIELDS, check_names, resolve_update


def supported_classes() -> list[str]:
    return sorted({e.stock.__name__ for e in all_entries()} | {e.pitome.__name__ for e in all_entries()})


def pitome_config(config: PreTrainedConfig, config_class: type, **settings) -> PreTrainedConfig:
    """The PiToMe config of `config_class` built from a stock (or PiToMe) config plus merge settings.

    `preset=NAME` is short for `merge_preset=NAME`. The settings are applied to the old config's as one update, by
    the rule every path shares (`merge_config.resolve_update`): a new preset replaces the old selection settings, a
    selection setting given without a preset clears the old preset name, a field given with a preset that disagrees
    with it is refused. Unknown names are refused, naming the closest valid one."""
    if "preset" in settings:
        if "merge_preset" in settings:
            raise TypeError("give preset= or merge_preset=, not both.")
        settings["merge_preset"] = settings.pop("preset")
    own = tuple(config_class.choice_fields)
    check_names(settings, (*MERGE_FIELDS, *own, "preset"), f"apply_pitome for {config_class.__name__}")
    values = config.to_dict()
    values.pop("auto_map", None)
    values["model_type"] = config_class.model_type
    merge = {k: v for k, v in settings.items() if k in MERGE_FIELDS}
    current = {k: values[k] for k in MERGE_FIELDS if k in values}
    if merge:  # a stock config has no merge fields: the class defaults are the current ones
        defaults = {f.name: f.default for f in dataclasses.fields(config_class) if f.name in MERGE_FIELDS}
        fixed = getattr(config_class, "merge_num_hidden_layers", None)  # e.g. one reduction point (Qwen2.5-VL)
        num_layers = fixed if isinstance(fixed, int) else _num_layers(config)
        values.update(resolve_update({**defaults, **current}, merge, num_layers))
    values.update({k: v for k, v in settings.items() if k in own})
    new = config_class.from_dict(values)
    new._attn_implementation = getattr(config, "_attn_implementation", None)
    return new


def _num_layers(config) -> int | None:
    vision = getattr(config, "vision_config", None)
    return getattr(vision, "num_hidden_layers", None) if vision is not None else getattr(config, "num_hidden_layers", None)


def _constructor_kwargs(model: PreTrainedModel, model_class: type) -> dict:
    """Constructor options of base models that are not in the config (a pooler, a mask token), read off `model`."""
    params = inspect.signature(model_class.__init__).parameters
    kwargs = {}
    if "add_pooling_layer" in params:
        kwargs["add_pooling_layer"] = getattr(model, "pooler", None) is not None
    if "use_mask_token" in params:
        kwargs["use_mask_token"] = getattr(getattr(model, "embeddings", None), "mask_token", None) is not None
    return kwargs


def apply_pitome(model: PreTrainedModel, **settings) -> PreTrainedModel:
    """Return the PiToMe variant of an already-loaded stock model, sharing its weights (no copy).

    `settings` are merge settings (merge_method, keep_ratio, merge_r, margin, ...; see `MergeConfigMixin`), or
    `preset=NAME` for a named configuration (`pitome_hf.modeling.merging.MERGE_PRESETS`: "paper", "authors-deit",
    "authors-mae", "authors-bert", "authors-blip2").
    Example: `apply_pitome(ViTForImageClassification.from_pretrained(path), keep_ratio=0.9, preset="authors-deit")`.
    A model that accelerate spread over several devices (`from_pretrained(..., device_map="auto")`) gives one spread
    the same way, its weights shared where they lie; offloaded weights (CPU or disk beside GPUs) are refused.
    """
    try:
        entry = entry_for_class(type(model))
    except TypeError:
        raise TypeError(
            f"apply_pitome does not support {type(model).__name__}; supported classes: {', '.join(supported_classes())}."
        ) from None
    model_class = entry.pitome
    config = pitome_config(model.config, entry.config_class, **settings)
    with torch.device("meta"):
        new = model_class(config, **_constructor_kwargs(model, model_class))
    state = model.state_dict()
    device_map = getattr(model, "hf_device_map", None)
    if device_map and any(t.is_meta for t in state.values()):
        raise ValueError(f"{type(model).__name__} has offloaded weights (layers its device_map put on the CPU or disk "
                         "beside GPUs, held on the meta device): apply_pitome shares weights and cannot share those; "
                         "load the model onto devices that hold it.")
    result = new.load_state_dict(state, strict=True, assign=True)
    if result.missing_keys or result.unexpected_keys:  # strict=True raises first; kept as a guard
        raise RuntimeError(f"weights did not map: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    for name, buffer in model.named_buffers():  # non-persistent buffers are not in the state dict
        if name not in state:
            module_name, _, attr = name.rpartition(".")
            new.get_submodule(module_name).register_buffer(attr, buffer, persistent=False)
    new.train(model.training)
    if device_map and len(set(device_map.values())) > 1:  # spread over GPUs by accelerate: the same hooks again
        from accelerate import dispatch_model

        new = dispatch_model(new, device_map=device_map)
    return new

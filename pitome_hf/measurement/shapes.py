"""Random-weight stock models of the registry's benchmark shapes (`Family.benchmark`), which every benchmark and
profiling script builds its rows from: `stock_for_shape`, with nested config overrides (`merged_fields`) checked
against the config's fields."""

from __future__ import annotations

import contextlib
import copy
import difflib

import torch
import transformers

from pitome_hf.families import family_named


def merged_fields(base: dict, update: dict) -> dict:
    """`base` config fields updated by `update`, a dict value merged into the sub-config dict of that name."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = (merged_fields(out.get(key, {}), value) if isinstance(value, dict) and isinstance(out.get(key), dict)
                    else value)
    return out


def stock_for_shape(family: str, shape: str, device=None, **overrides):
    """A stock model of `family`'s benchmark shape `shape`, random weights (seed 0) made on `device` (default: the
    current one), SDPA attention. `overrides`: config fields; a dict value is merged into the shape's sub-config of
    that name (e.g. text_config={"num_hidden_layers": 4}). A field the config does not have (a transformers config
    would keep it as an unused attribute) or a value it does not accept: ValueError."""
    spec = family_named(family).benchmark
    if shape not in spec.shapes:
        raise ValueError(f"{family} shape {shape!r} is not known; choose from {', '.join(map(repr, spec.shapes))}.")
    model_class = getattr(transformers, spec.stock)
    for name, fields in _unknown_fields(overrides, model_class.config_class()):
        close = difflib.get_close_matches(name.rsplit(".", 1)[-1], fields, n=3)
        raise ValueError(f"{name!r} is not a field of the {shape} config ({spec.stock}'s "
                         f"{model_class.config_class.__name__}); did you mean {' or '.join(close) or 'another field'}?")
    try:
        config = model_class.config_class(**merged_fields({**spec.shapes[shape], "attn_implementation": "sdpa"},
                                                          overrides))
    except (TypeError, ValueError) as error:
        raise ValueError(f"the {shape} config does not accept these values ({error}).") from None
    torch.manual_seed(0)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return model_class(config)


def _unknown_fields(overrides: dict, config, prefix: str = ""):
    """(dotted name, the fields of its level) of every key of `overrides` that `config` (a default config, its
    sub-configs for nested keys) has no attribute for."""
    for key, value in overrides.items():
        if not hasattr(config, key):
            yield prefix + key, list(config.to_dict())
        elif isinstance(value, dict) and isinstance(getattr(config, key), transformers.PretrainedConfig):
            yield from _unknown_fields(value, getattr(config, key), f"{prefix}{key}.")


__all__ = ["merged_fields", "stock_for_shape"]

# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""The merge settings a forward runs with, the config mixins that hold them, and the token schedule.

The fields themselves (their table, checks, presets and the one update rule) are merge_fields.py; every public name
of it is re-exported here, so `from .merge_config import MERGE_FIELD_TABLE` (or `pitome_hf.modeling.merge_config`)
keeps working.

* `MergeConfigMixin`: the merge settings as `PretrainedConfig` fields (saved in config.json), the auto_map built from
  the config class's `auto_map_classes`, and validation on every path (constructor, config.json, from_pretrained
  keyword arguments, attribute assignment); `VisionTowerMergeMixin` for composite configs whose vision tower merges.
* `MergeSettings`: the validated, immutable settings a forward runs with (`settings_of(config)`), with the protected
  prefix resolved and the per-layer values (`layer_values`) the merge functions take.
* `token_schedule`: the whole token-count schedule (models, processors, FLOPs, cards and the Space call it).

The specification these follow is docs/algorithm.md.
"""

from __future__ import annotations

from dataclasses import field, make_dataclass
from typing import Optional

from .merge_fields import (  # noqa: F401  (re-exported: the public names merge_config has always had)
    COUNT_FIELDS,
    FAMILY_ONLY_FIELDS,
    MERGE_FIELD,
    MERGE_FIELD_TABLE,
    MERGE_FIELDS,
    MERGE_PRESETS,
    PRESET_FIELDS,
    VISUAL_SELECTIONS,
    MergeField,
    _ENERGY_FIELDS,
    _MERGE_FIELD_NAMES,
    _check_choice,
    _check_count,
    _is_int,
    _jsonable,
    check_names,
    check_visual_selection,
    count_settings,
    preset_settings,
    resolve_budgets,
    resolve_update,
)
from .merging import LayerValues, layer_budget


# ----------------------------------------------------------------------------------------------------------------
# The settings a forward runs with
# ----------------------------------------------------------------------------------------------------------------
_TRACED_NUMBERS = ("keep_ratio", "margin", "margin_end", "alpha")


class _MergeSettingsLogic:
    """Behaviour of `MergeSettings` (its fields are generated from `MERGE_FIELD_TABLE`, plus `num_layers` and
    `num_prefix`, the protected prefix resolved from the config)."""

    def __post_init__(self):
        L = self.num_layers
        if self.merge_preset is not None:  # direct construction: the preset's values, unless one was set otherwise
            values = preset_settings(self.merge_preset, L)
            for key, value in values.items():
                given, default = _jsonable(getattr(self, key)), _jsonable(MERGE_FIELD[key].default)
                if given != default and given != _jsonable(value):
                    raise ValueError(
                        f"merge_preset={self.merge_preset!r} sets {key}={value!r}, but {key}={given!r} was given too."
                    )
                object.__setattr__(self, key, value)
        for f in MERGE_FIELD_TABLE:
            object.__setattr__(self, f.name, f.validate(getattr(self, f.name), L))
        _check_count("num_prefix", self.num_prefix, L)
        own = {name: getattr(self, name) for name in ("visual_tokens", "keep_ratio")}
        resolve_budgets(dict(own), own, saved=True)  # both budgets in force (e.g. a hand-edited file): refused
        check_visual_selection(self.visual_selection, self.method_at(0))
        # The numbers the forward reads, as text: torch.compile keeps a string constant (guarded by value), while a
        # float read from an object becomes a symbolic input once a second setting recompiles the forward, and the
        # budget's floor (and some ops' float arguments) cannot be traced symbolically: a graph break per layer.
        object.__setattr__(self, "_numbers", {name: repr(float(getattr(self, name))) for name in _TRACED_NUMBERS})

    @classmethod
    def from_config(cls, config, num_layers: Optional[int] = None, **overrides) -> "MergeSettings":
        """The settings of a config (any object with the merge fields), with `overrides` applied by the one rule."""
        if num_layers is None:
            num_layers = merge_num_layers(config)
        values = {name: getattr(config, name) for name in MERGE_FIELDS if hasattr(config, name)}
        for name, (allowed, _) in getattr(config, "required_merge_settings", {}).items():
            if values.get(name) == MERGE_FIELD[name].default:  # the family reads its default as its one value
                values[name] = allowed
        values = resolve_update(values, overrides, num_layers) if overrides else values
        return cls(**values, num_layers=num_layers, num_prefix=_prefix_or_none(config, values.get("protected_tokens")))

    def number(self, name: str) -> float:
        """`keep_ratio`, `margin`, `margin_end` or `alpha` as a constant of a compiled graph (see __post_init__)."""
        return float(self._numbers[name])

    def method_at(self, layer: int) -> str:
        """The selection layer `layer` runs: "pitome", "tome", "pitome_bsm" or "none"."""
        if isinstance(self.merge_method, tuple):
            return self.merge_method[layer] if 0 <= layer < len(self.merge_method) else "none"
        return self.merge_method

    @property
    def active(self) -> bool:
        """Whether any layer can merge at all."""
        methods = set(self.merge_method) if isinstance(self.merge_method, tuple) else {self.merge_method}
        if methods == {"none"}:
            return False
        if self.merge_r is None:
            return self.number("keep_ratio") < 1.0
        if isinstance(self.merge_r, tuple):
            return any(self.merge_r)
        return self.merge_r > 0

    def margin_at(self, layer: int) -> float:
        """Margin of layer `layer`: m0 - (m0 - margin_end) * l / L (linear schedule) or m0 (constant)."""
        m0, m_end = self.number("margin"), self.number("margin_end")
        if self.margin_schedule == "constant" or not self.num_layers:
            return m0
        return m0 - (m0 - m_end) * layer / self.num_layers

    def layer_values(self, layer: int) -> LayerValues:
        """The plain values `merging.merge_tokens` takes for layer `layer` (method, margin, alpha, energy, split,
        output order); the forward state adds r and the prefix."""
        method = self.method_at(layer)
        keep_order = self.keep_order if self.keep_order is not None else method != "tome"  # ToMe: the original order
        return LayerValues(method=method, margin=self.margin_at(layer), alpha=self.number("alpha"),
                           energy=self.energy, split=self.merge_split, keep_order=keep_order)

    def budget(self, num_mergeable: int, layer: int) -> int:
        """Number of tokens layer `layer` merges away when `num_mergeable` tokens enter it."""
        return layer_budget(
            num_mergeable,
            layer,
            method=self.method_at(layer),
            keep_ratio=self._numbers["keep_ratio"],  # text: a constant under torch.compile (see __post_init__)
            merge_r=self.merge_r,
            merge_layers=self.merge_layers,
        )

    def label(self) -> str:
        """A short name for these selection settings, for tables and model cards: the visual selection when it is not
        "merge" (e.g. "visionzip") and anything is reduced, else the preset's name when they are a preset's, else the
        per-layer methods and every selection setting that differs from the paper's."""
        label = self._selection_label()
        return self.visual_selection if self.visual_selection != "merge" and label != "none" else label

    def _selection_label(self) -> str:
        if self.merge_preset is not None:
            return self.merge_preset
        methods = self.merge_method if isinstance(self.merge_method, tuple) else (self.merge_method,)
        if set(methods) == {"none"}:
            return "none"
        runs = []
        for m in methods:
            if runs and runs[-1][0] == m:
                runs[-1][1] += 1
            else:
                runs.append([m, 1])
        parts = [" + ".join(m if len(methods) == 1 else f"{m} x{n}" for m, n in runs)]
        uses_energy = any(m in ("pitome", "pitome_bsm") for m in methods)
        paper = preset_settings("paper", self.num_layers or 1)
        for name in PRESET_FIELDS:
            if name == "merge_method" or (not uses_energy and name in _ENERGY_FIELDS):
                continue
            value = _jsonable(getattr(self, name))
            if value != paper[name]:
                parts.append(f"{name}={value}")
        return ", ".join(parts)


MergeSettings = make_dataclass(
    "MergeSettings",
    [(f.name, f.annotation, field(default=f.default)) for f in MERGE_FIELD_TABLE]
    + [("num_layers", Optional[int], field(default=None, compare=False)), ("num_prefix", Optional[int], field(default=None))],
    bases=(_MergeSettingsLogic,),
    frozen=True,
    namespace={"__doc__": "Validated merge settings (fields: `MERGE_FIELD_TABLE`, `num_layers`, `num_prefix`). Build "
               "with `settings_of(config)` or `MergeSettings.from_config(config)`; every check lives in the table."},
)
MergeSettings.__module__ = __name__


# ----------------------------------------------------------------------------------------------------------------
# The config mixin
# ----------------------------------------------------------------------------------------------------------------
_MergeFields = make_dataclass(
    "MergeFields", [(f.name, f.annotation, field(default=f.default)) for f in MERGE_FIELD_TABLE], kw_only=True
)
_SETTINGS_CACHE = "_pitome_merge_settings"
_GIVEN = "_pitome_given_merge_fields"
# A keyword `from_dict` adds (popped before the constructor runs): the fields come from a saved config.json, which
# writes every field, defaults included (see `resolve_budgets`).
_SAVED = "_pitome_saved_config"
# Config attributes whose change rebuilds the cached settings: the merge fields and the layer counts they depend on.
_SETTINGS_INPUTS = _MERGE_FIELD_NAMES | {"num_hidden_layers", "vision_config"}


class MergeConfigMixin(_MergeFields):
    """The merge settings as config fields. Mixed into every PiToMe `PretrainedConfig` (saved in config.json).

    The fields, their defaults and allowed values are `MERGE_FIELD_TABLE` (docs/algorithm.md says what
    each means). Besides them each config class says:
    * `auto_map_classes`: {Auto class name: "modeling_file.ClassName"}, for the auto_map that trust_remote_code reads;
    * `stock_model_types` / `composite_model_types`: the stock config.json files it reads;
    * `default_protected_tokens` (or `architecture_prefix`): the leading tokens the architecture never merges;
    * `required_merge_settings`: {field: (the only allowed value, why)}; the field's default is accepted and read as
      that value (keep_order None is spatial order where the language model reads the tokens in order);
    * `choice_fields`: its own closed-set fields, {name: allowed values} (e.g. ViT's classifier_pooling).
    Every path is validated: the constructor, config.json, from_pretrained keywords (applied as one update, see
    `resolve_update`), attribute assignment and `apply_pitome`.
    """

    auto_map_classes = {}
    stock_model_types = ()
    composite_model_types = ()
    required_merge_settings = {}
    choice_fields = {}
    default_protected_tokens = None
    family_merge_fields = ()  # the `FAMILY_ONLY_FIELDS` this family reads

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)  # transformers makes cls a dataclass with its own __init__
        init = cls.__init__

        def __init__(self, *args, **kw):  # remember which merge fields were given (the rest are defaults)
            saved = bool(kw.pop(_SAVED, False))
            if _GIVEN not in self.__dict__:  # the outermost record stands (a wrapped parent __init__ sees the same kw)
                object.__setattr__(self, _GIVEN, ({k: kw[k] for k in kw if k in _MERGE_FIELD_NAMES}, saved))
            init(self, *args, **kw)

        __init__.__wrapped__ = init
        cls.__init__ = __init__

    @classmethod
    def register_for_auto_classes(cls, *model_classes) -> None:
        """`register_for_auto_class` for this config and its model classes, each under the Auto class that
        `auto_map_classes` names for it (AutoModel where it names several or none), so that save_pretrained writes
        the code files beside the weights: the Auto classes are stated once, in `auto_map_classes`."""
        cls.register_for_auto_class()
        for model_class in model_classes:
            autos = [a for a, name in cls.auto_map_classes.items() if name.endswith("." + model_class.__name__)]
            model_class.register_for_auto_class("AutoModel" if "AutoModel" in autos or not autos else autos[0])

    @classmethod
    def architecture_prefix(cls, config) -> int:
        """Leading tokens this architecture never merges, read from a PiToMe or stock config (CLS = 1)."""
        return int(cls.default_protected_tokens)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if cls.composite_model_types:
            config_dict = vision_part_of(config_dict, cls.composite_model_types, cls.model_type)
        return accept_stock_config_dict(cls, config_dict), kwargs

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """As transformers', except that `config_dict` is read as a saved config (every field written: see
        `resolve_budgets`) and merge fields among `kwargs` (from_pretrained's) are applied together, by the same rule
        as the constructor's (`resolve_update`), not one attribute at a time."""
        update = {k: kwargs.pop(k) for k in list(kwargs) if k in _MERGE_FIELD_NAMES}
        result = super().from_dict({**config_dict, _SAVED: True}, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        if update:
            config.update_merge_settings(**update)
        return result

    @classmethod
    def from_json_file(cls, json_file):
        """A config.json read as a saved config (`from_dict`), as from_pretrained reads it."""
        return cls.from_dict(cls._dict_from_json_file(json_file))

    def __post_init__(self, **kwargs):
        if not getattr(self, "auto_map", None) and self.auto_map_classes:
            module = type(self).__module__.rsplit(".", 1)[-1]
            self.auto_map = {"AutoConfig": f"{module}.{type(self).__name__}", **self.auto_map_classes}
        given, saved = self.__dict__.pop(_GIVEN, ({}, False))
        # as the fields stand now: a subclass's __post_init__ may have filled one in (BERT's text merge_layers)
        current = {name: getattr(self, name) for name in MERGE_FIELDS}
        update = {name: current[name] for name in given}
        base = {name: value for name, value in current.items() if name not in given}
        for name, value in resolve_update(base, update, merge_num_layers(self), saved).items():
            object.__setattr__(self, name, value)
        # the family's own checks before the table's, as `update_merge_settings` runs them: a family's message says
        # what it allows (e.g. one method where a VLM reduces at one point, not "the model has 1 layers")
        self._check_own_fields({name: getattr(self, name) for name in (*MERGE_FIELDS, *self.choice_fields)})
        super().__post_init__(**kwargs)
        self._refresh_settings()

    def _check_own_fields(self, values: dict) -> None:
        for name, value in values.items():
            if name in FAMILY_ONLY_FIELDS and name not in self.family_merge_fields and value != MERGE_FIELD[name].default:
                raise ValueError(f"{name}={value!r} is not supported by {type(self).__name__}: it must be "
                                 f"{MERGE_FIELD[name].default!r} (this family does not read it).")
            if name in self.choice_fields:
                _check_choice(name, value, self.choice_fields[name])
            if name in self.required_merge_settings:
                allowed, why = self.required_merge_settings[name]
                if value != allowed and value != MERGE_FIELD[name].default:  # the default reads as `allowed`
                    raise ValueError(
                        f"{name}={value!r} is not supported by {type(self).__name__}: it must be {allowed!r} ({why})."
                    )

    def update_merge_settings(self, **update) -> None:
        """Change several merge fields at once (validated together before any is set; the one rule of
        `resolve_update` for presets)."""
        current = {name: getattr(self, name) for name in MERGE_FIELDS}
        num_layers = merge_num_layers(self)
        values = resolve_update(current, update, num_layers)
        self._check_own_fields(values)
        prefix = _prefix_or_none(self, values["protected_tokens"])
        settings = MergeSettings(**values, num_layers=num_layers, num_prefix=prefix)  # raises before anything is set
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self.__dict__[_SETTINGS_CACHE] = settings

    def merge_settings(self, num_layers: Optional[int] = None) -> "MergeSettings":
        """The validated settings of this config (for `num_layers` merging layers, default the config's own), built
        once and reused by every forward until a merge field or the layer count changes (nothing for torch.compile
        to trace)."""
        if num_layers is not None and num_layers != merge_num_layers(self):
            return MergeSettings.from_config(self, num_layers=num_layers)
        cached = self.__dict__.get(_SETTINGS_CACHE)
        return cached if cached is not None else self._refresh_settings()

    def _refresh_settings(self):
        settings = MergeSettings.from_config(self)
        self.__dict__[_SETTINGS_CACHE] = settings
        return settings

    def to_dict(self):
        output = super().to_dict()
        output.pop(_SETTINGS_CACHE, None)
        output.pop(_GIVEN, None)
        return output

    def __setattr__(self, name, value):
        if not getattr(self, "_post_init_done", False):
            return super().__setattr__(name, value)
        if name in _MERGE_FIELD_NAMES:  # from_pretrained's and the user's assignments: validated now
            return self.update_merge_settings(**{name: value})
        if name in self.choice_fields or name in self.required_merge_settings:
            self._check_own_fields({name: value})
        super().__setattr__(name, value)
        if name in _SETTINGS_INPUTS:  # the layer count changed: the settings are built again when next asked
            self.__dict__.pop(_SETTINGS_CACHE, None)


class VisionTowerMergeMixin(MergeConfigMixin):
    """For composite configs (CLIP, SigLIP, LLaVA) whose vision tower merges: the merge settings live on the composite
    config and apply to `vision_config.num_hidden_layers` layers (`merge_num_hidden_layers`, derived, never saved)."""

    def __post_init__(self, **kwargs):
        kwargs.pop("merge_num_hidden_layers", None)  # derived from vision_config; never a setting of its own
        super().__post_init__(**kwargs)

    @property
    def merge_num_hidden_layers(self) -> int:
        """Number of layers the merge settings apply to: the vision tower's (read by `MergeSettings`)."""
        vision = self.vision_config
        if isinstance(vision, dict):
            return vision.get("num_hidden_layers", self.default_vision_layers())
        return self.default_vision_layers() if vision is None else vision.num_hidden_layers

    @classmethod
    def default_vision_layers(cls) -> int:
        vision_class = cls.sub_configs.get("vision_config")
        return getattr(vision_class, "num_hidden_layers", 24)


def vision_part_of(config_dict: dict, composite_types: tuple, vision_model_type: str) -> dict:
    """A stand-alone vision-tower config dict read from a (stock or PiToMe) composite config.json: its vision_config
    plus the composite's merge settings; other dicts pass unchanged."""
    if config_dict.get("model_type") in composite_types and "vision_config" in config_dict:
        vision = dict(config_dict["vision_config"] or {})
        vision.update({k: config_dict[k] for k in MERGE_FIELDS if k in config_dict})
        vision["model_type"] = vision_model_type
        return vision
    return config_dict


def settings_of(config, num_layers: Optional[int] = None) -> "MergeSettings":
    """The merge settings of a PiToMe config (cached on it, see `MergeConfigMixin.merge_settings`) or of any object
    with the merge fields (built afresh)."""
    if isinstance(config, MergeSettings) and num_layers is None:
        return config
    method = getattr(type(config), "merge_settings", None)
    if method is not None and not isinstance(config, MergeSettings):
        return config.merge_settings(num_layers)
    return MergeSettings.from_config(config, num_layers=num_layers)


def merge_num_layers(config) -> Optional[int]:
    """Number of layers the merge settings apply to (the vision tower's for multimodal configs)."""
    for name in ("merge_num_hidden_layers", "num_hidden_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None



def token_schedule(config, num_tokens: Optional[int] = None, num_layers: Optional[int] = None) -> list[int]:
    """The whole token-count schedule: mergeable tokens before layer 0, then after each layer.

    `config` is any object with the merge settings (a PiToMe config or a `MergeSettings`). `num_tokens` is the number
    of mergeable tokens entering the first layer; by default (image_size // patch_size) ** 2 read from the config.
    Returns a list of num_layers + 1 ints. Models, processors, FLOP counts and model cards all use this function.
    """
    settings = config if isinstance(config, MergeSettings) else MergeSettings.from_config(config, num_layers=num_layers)
    L = num_layers if num_layers is not None else settings.num_layers
    if L is None:
        raise ValueError("token_schedule needs num_layers: the config has no num_hidden_layers.")
    if num_tokens is None:
        num_tokens = num_patches_from_config(config)
    counts = [int(num_tokens)]
    for layer in range(L):
        counts.append(counts[-1] - settings.budget(counts[-1], layer))
    return counts


def num_patches_from_config(config) -> int:
    """(image_size // patch_size) ** 2 for square or (h, w) image and patch sizes (a composite config's vision_config's)."""
    if getattr(config, "image_size", None) is None and getattr(config, "vision_config", None) is not None:
        config = config.vision_config
    image_size = getattr(config, "image_size", None)
    patch_size = getattr(config, "patch_size", None)
    if image_size is None or patch_size is None:
        raise ValueError("num_tokens must be given: the config has no image_size/patch_size.")
    ih, iw = (image_size, image_size) if _is_int(image_size) else tuple(image_size)
    ph, pw = (patch_size, patch_size) if _is_int(patch_size) else tuple(patch_size)
    return (ih // ph) * (iw // pw)


def _prefix_or_none(config, protected_tokens=None) -> Optional[int]:
    """`protected_tokens` (default: the config's), else the architecture's rule, else None."""
    value = getattr(config, "protected_tokens", None) if protected_tokens is None else protected_tokens
    if value is None and hasattr(type(config), "architecture_prefix"):
        value = type(config).architecture_prefix(config)
    if value is None:
        value = getattr(config, "default_protected_tokens", None)
    return value


def protected_prefix(config) -> int:
    """Number of leading tokens that never merge: the config's `protected_tokens` setting, else its architecture's
    own rule (`architecture_prefix`: CLS = 1, CLS + registers, 0 for towers without CLS). Resolved once into
    `MergeSettings.num_prefix`; this reads it."""
    value = _prefix_or_none(config)
    if value is None:
        raise ValueError(f"{type(config).__name__} says neither protected_tokens nor default_protected_tokens.")
    return int(value)


def accept_stock_config_dict(config_class, config_dict: dict) -> dict:
    """Let a PiToMe config read its own config.json or the stock architecture's (which it converts); refuse others."""
    model_type = config_dict.get("model_type")
    if model_type is None or model_type == config_class.model_type:
        return config_dict
    if model_type in config_class.stock_model_types:
        return {**config_dict, "model_type": config_class.model_type}
    raise ValueError(
        f"{config_class.__name__} cannot read a config of model_type={model_type!r}: it reads PiToMe "
        f"({config_class.model_type!r}) or stock ({', '.join(map(repr, config_class.stock_model_types))}) configs. "
        "Use the PiToMe class of that architecture, or pitome_hf.apply to see the supported ones."
    )

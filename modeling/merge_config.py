# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""The merge settings: one owner for every field, range check, preset and the token schedule.

* `MergeConfigMixin`: the merge settings as `PretrainedConfig` fields (each declared once, saved in config.json), the
  auto_map built from the config class's `auto_map_classes`, and validation of every assignment.
* `MergeSettings`: the validated, immutable settings a forward runs with (`MergeSettings.from_config(config)`).
* `MERGE_PRESETS` / `preset_settings`: the paper's settings and the authors' released configurations.
* `token_schedule`: the whole token-count schedule (models, processors, FLOPs, cards and the Space call it).
* `protected_prefix`: how many leading tokens never merge (each config class says its own rule).
* `accept_stock_config_dict`: a PiToMe config reads its own config.json or the stock architecture's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Optional, Union

from .merging import ENERGIES, MARGIN_SCHEDULES, METHODS, METRICS, SPLITS, layer_budget


# ----------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class MergeConfigMixin:
    """The merge settings as config fields. Mixed into every PiToMe `PretrainedConfig` (saved in config.json).

    merge_method: "pitome" (energy-based, the paper), "tome" (bipartite soft matching baseline, parity over the whole
        sequence as the original), "pitome_bsm" (the authors' energy-ordered bipartite matching: ToMe with the parity
        split replaced by an energy-rank split) or "none"; or a list with one of these per layer (e.g. the authors'
        DeiT configuration `["pitome_bsm"] * 6 + ["pitome"] * 6`).
    merge_preset: the name of a preset (`MERGE_PRESETS`) whose settings these are, e.g. "paper" or
        "authors-deit"; setting it applies the preset's settings, changing one of them afterwards clears it.
    keep_ratio: fraction rho of mergeable tokens each merging layer keeps, in (0, 1]; r = floor(T - T*rho),
        clamped to floor(T/2). Ignored when `merge_r` is given.
    merge_r: a constant number of tokens to merge per layer (int >= 0), or a per-layer list of such ints
        (one entry per layer, ToMe's style).
    merge_layers: indices of the layers that merge (default: all layers).
    margin: the margin m0 of the energy score; with margin_schedule "linear", layer l of L uses
        m0 - (m0 - margin_end) * l / L, with "constant" every layer uses m0.
    margin_end: where the linear margin schedule heads (0.0, the paper's m0 - m0 * l / L).
    alpha: slope of the energy below the margin (f(x) = alpha * (exp(x - m) - 1)).
    energy: "exp" (the paper), "elu" (the authors' code, for reproducing their numbers) or "gaussian"
        (the text-encoder variant).
    merge_split: "alternate" (A = energy ranks 0, 2, 4..., B = 1, 3, 5..., the paper) or "top" (A = the r
        highest-energy tokens, B = the next r; the text variant).
    proportional_attention: add log(size) to the attention logits of every merged token's key.
    merge_metric: "keys" (the layer's attention keys averaged over heads) or "hidden" (the hidden states).
    protected_tokens: number of prefix tokens that never merge (None: the architecture's own count, e.g. CLS).
    keep_order: keep surviving tokens in their original (spatial) order; False emits them in selection order.
    trace_source: keep, for each original token, the index of the current token that holds it.
    """

    merge_method: str | list[str] = "pitome"
    merge_preset: str | None = None
    keep_ratio: float | int = 0.9
    merge_r: int | list[int] | None = None
    merge_layers: list[int] | None = None
    margin: float | int = 0.9
    margin_end: float | int = 0.0
    margin_schedule: str = "linear"
    alpha: float | int = 1.0
    energy: str = "exp"
    merge_split: str = "alternate"
    proportional_attention: bool = True
    merge_metric: str = "keys"
    protected_tokens: int | None = None
    keep_order: bool = True
    trace_source: bool = False

    # Set by each config class: {Auto class name: "modeling_file.ClassName"} for the config's auto_map (the AutoConfig
    # entry is added from the config class itself), so that trust_remote_code finds every class.
    auto_map_classes = {}
    # Stock model types whose config.json this class reads (converted on load), and, for a stand-alone vision tower,
    # the composite model types whose vision_config part it reads.
    stock_model_types = ()
    composite_model_types = ()
    # Settings an architecture cannot run without: {field: (the only allowed value, why)}, checked on every path.
    required_merge_settings = {}

    def _check_required(self, name, value):
        if name in self.required_merge_settings:
            allowed, why = self.required_merge_settings[name]
            if value != allowed:
                raise ValueError(
                    f"{name}={value!r} is not supported by {type(self).__name__}: it must be {allowed!r} ({why})."
                )

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if cls.composite_model_types:
            config_dict = vision_part_of(config_dict, cls.composite_model_types, cls.model_type)
        return accept_stock_config_dict(cls, config_dict), kwargs

    def __post_init__(self, **kwargs):
        if not getattr(self, "auto_map", None) and self.auto_map_classes:
            module = type(self).__module__.rsplit(".", 1)[-1]
            self.auto_map = {"AutoConfig": f"{module}.{type(self).__name__}", **self.auto_map_classes}
        num_layers = merge_num_layers(self)
        if self.merge_preset is not None:
            for name, value in preset_settings(self.merge_preset, num_layers, current=self).items():
                setattr(self, name, value)
        for name in self.required_merge_settings:
            self._check_required(name, getattr(self, name))
        MergeSettings.from_config(self, num_layers=num_layers)
        super().__post_init__(**kwargs)
        self._refresh_settings()

    def merge_settings(self, num_layers: Optional[int] = None) -> "MergeSettings":
        """The validated settings of this config (for `num_layers` merging layers, default the config's own), built
        once and reused by every forward until an attribute of the config changes (no per-forward recomputation, and
        nothing for torch.compile to trace)."""
        if num_layers is not None and num_layers != merge_num_layers(self):
            return MergeSettings.from_config(self, num_layers=num_layers)
        cached = self.__dict__.get(_SETTINGS_CACHE)
        if cached is None:
            cached = self._refresh_settings()
        return cached

    def _refresh_settings(self):
        try:
            settings = MergeSettings.from_config(self, num_layers=merge_num_layers(self))
        except Exception:  # mid-update (e.g. the layer count changed before merge_method): build it when asked
            self.__dict__.pop(_SETTINGS_CACHE, None)
            return MergeSettings.from_config(self, num_layers=merge_num_layers(self))
        self.__dict__[_SETTINGS_CACHE] = settings
        return settings

    def to_dict(self):
        output = super().to_dict()
        output.pop(_SETTINGS_CACHE, None)
        return output

    def __setattr__(self, name, value):
        # from_pretrained(..., keep_ratio=x) sets fields after __post_init__: validate those assignments too
        if name in _MERGE_FIELD_NAMES and getattr(self, "_post_init_done", False):
            self._check_required(name, value)
            overrides = {name: value}
            if name == "merge_preset" and value is not None:
                overrides.update(preset_settings(value, merge_num_layers(self)))
            elif name in PRESET_FIELDS and getattr(self, "merge_preset", None) is not None:
                if _jsonable(value) != preset_settings(self.merge_preset, merge_num_layers(self))[name]:
                    overrides["merge_preset"] = None  # no longer that preset's settings
            MergeSettings.from_config(self, **overrides)
            if name == "merge_preset" and value is not None:
                for field_name, field_value in preset_settings(value, merge_num_layers(self)).items():
                    super().__setattr__(field_name, field_value)
            elif "merge_preset" in overrides:
                super().__setattr__("merge_preset", None)
        super().__setattr__(name, value)
        if getattr(self, "_post_init_done", False):
            try:  # any change (a merge field, the layer count...) rebuilds the settings now, not in a forward
                self._refresh_settings()
            except Exception:
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


_SETTINGS_CACHE = "_pitome_merge_settings"


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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed values: {', '.join(map(repr, allowed))}.")


_TRACED_NUMBERS = ("keep_ratio", "margin", "margin_end", "alpha")


@dataclass(frozen=True)
class MergeSettings:
    """Validated merge settings. Build with `MergeSettings.from_config(config)`; every check lives here."""

    merge_method: Union[str, tuple] = "pitome"
    merge_preset: Optional[str] = None
    keep_ratio: float = 0.9
    merge_r: Union[int, tuple, None] = None
    merge_layers: Optional[tuple] = None
    margin: float = 0.9
    margin_end: float = 0.0
    margin_schedule: str = "linear"
    alpha: float = 1.0
    energy: str = "exp"
    merge_split: str = "alternate"
    proportional_attention: bool = True
    merge_metric: str = "keys"
    protected_tokens: Optional[int] = None
    keep_order: bool = True
    trace_source: bool = False
    num_layers: Optional[int] = field(default=None, compare=False)

    @classmethod
    def from_config(cls, config, num_layers: Optional[int] = None, **overrides) -> "MergeSettings":
        values = {name: getattr(config, name) for name in _SETTINGS_FIELDS if hasattr(config, name)}
        if "merge_preset" not in overrides and any(name in PRESET_FIELDS for name in overrides):
            values["merge_preset"] = None  # overriding a selection setting: these are no longer the preset's
        values.update(overrides)
        if num_layers is None:
            num_layers = merge_num_layers(config)
        values["num_layers"] = num_layers
        return cls(**values)

    def __post_init__(self):
        L = self.num_layers
        if self.merge_preset is not None:
            for name, value in preset_settings(self.merge_preset, L, current=self).items():
                object.__setattr__(self, name, tuple(value) if isinstance(value, list) else value)
        method = self.merge_method
        if isinstance(method, (list, tuple)):
            bad = [m for m in method if m not in METHODS]
            if bad:
                raise ValueError(
                    f"merge_method={list(method)!r} has invalid entries {bad!r}: every entry must be one of "
                    f"{', '.join(map(repr, METHODS))}."
                )
            if L is not None and len(method) != L:
                raise ValueError(
                    f"merge_method has {len(method)} entries but the model has {L} layers: give one method per layer."
                )
            object.__setattr__(self, "merge_method", tuple(method))
        else:
            _check_choice("merge_method", method, METHODS)
        _check_choice("energy", self.energy, ENERGIES)
        _check_choice("merge_split", self.merge_split, SPLITS)
        _check_choice("merge_metric", self.merge_metric, METRICS)
        _check_choice("margin_schedule", self.margin_schedule, MARGIN_SCHEDULES)
        if not _is_number(self.keep_ratio) or not 0.0 < float(self.keep_ratio) <= 1.0:
            raise ValueError(
                f"keep_ratio={self.keep_ratio!r} is out of range: it must be a number in (0, 1] (the fraction of "
                "mergeable tokens each merging layer keeps; 1.0 merges nothing)."
            )
        r = self.merge_r
        if r is not None:
            if _is_int(r):
                if r < 0:
                    raise ValueError(f"merge_r={r!r} is out of range: it must be an int >= 0 or a list of them.")
            elif isinstance(r, (list, tuple)):
                bad = [x for x in r if not _is_int(x) or x < 0]
                if bad:
                    raise ValueError(f"merge_r={list(r)!r} has invalid entries {bad!r}: every entry must be an int >= 0.")
                if L is not None and len(r) != L:
                    raise ValueError(
                        f"merge_r has {len(r)} entries but the model has {L} layers: give one entry per layer."
                    )
                object.__setattr__(self, "merge_r", tuple(r))
            else:
                raise ValueError(f"merge_r={r!r} must be None, an int >= 0, or a list of ints (one per layer).")
        layers = self.merge_layers
        if layers is not None:
            if not isinstance(layers, (list, tuple)) or not all(_is_int(x) for x in layers):
                raise ValueError(f"merge_layers={layers!r} must be None (all layers) or a list of layer indices.")
            if len(set(layers)) != len(layers):
                raise ValueError(f"merge_layers={list(layers)!r} repeats a layer index.")
            if L is not None:
                bad = [x for x in layers if not 0 <= x < L]
                if bad:
                    raise ValueError(
                        f"merge_layers={list(layers)!r} has indices {bad!r} outside 0..{L - 1} (the model has {L} layers)."
                    )
            object.__setattr__(self, "merge_layers", tuple(sorted(layers)))
        for name in ("margin", "margin_end"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= float(value) < 1.0:
                raise ValueError(f"{name}={value!r} is out of range: it must be a number in [0, 1).")
        if not _is_number(self.alpha) or not 0.0 < float(self.alpha) < math.inf:
            raise ValueError(f"alpha={self.alpha!r} is out of range: it must be a finite number > 0.")
        if self.protected_tokens is not None and (not _is_int(self.protected_tokens) or self.protected_tokens < 0):
            raise ValueError(f"protected_tokens={self.protected_tokens!r} must be None or an int >= 0.")
        for name in ("proportional_attention", "keep_order", "trace_source"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False.")
        # The numbers the forward reads, as text: torch.compile keeps a string constant (guarded by value), while a
        # float read from an object becomes a symbolic input once a second setting recompiles the forward, and the
        # budget's floor (and some ops' float arguments) cannot be traced symbolically: a graph break per layer.
        object.__setattr__(self, "_numbers", {name: repr(float(getattr(self, name))) for name in _TRACED_NUMBERS})

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
        """A short name for these selection settings, for tables and model cards: the preset's name when they are a
        preset's, else the per-layer methods and every selection setting that differs from the paper's."""
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


_SETTINGS_FIELDS = tuple(f.name for f in fields(MergeSettings))
MERGE_FIELDS = tuple(f.name for f in fields(MergeSettings) if f.name != "num_layers")
_MERGE_FIELD_NAMES = frozenset(MERGE_FIELDS)


# ----------------------------------------------------------------------------------------------------------------
# Presets: the paper's settings and the configurations the authors' released code runs (algorithm.md's table)
# ----------------------------------------------------------------------------------------------------------------
# The selection settings a preset fixes; the budget (keep_ratio / merge_r), protected_tokens, keep_order and
# trace_source stay the user's.
PRESET_FIELDS = (
    "merge_method",
    "merge_layers",
    "margin",
    "margin_end",
    "margin_schedule",
    "alpha",
    "energy",
    "merge_split",
    "proportional_attention",
    "merge_metric",
)
_ENERGY_FIELDS = ("margin", "margin_end", "margin_schedule", "alpha", "energy", "merge_split")

MERGE_PRESETS = {
    "paper": "the paper's wording: the protected PiToMe step in every layer, exp energy, margin 0.9 - 0.9 l/L, "
    "proportional attention on, attention keys as metric (the defaults)",
    "authors-deit": "the authors' DeiT configuration: pitome_bsm in the first ceil(L/2) layers, the protected step "
    "in the rest, ELU energy, margin 0.75 - 0.75 l/L, proportional attention off",
    "authors-mae": "the authors' MAE configuration: the protected step in the first ceil(L/2) layers, pitome_bsm in "
    "the last floor(L/2), ELU energy, margin 0.75 - 0.75 l/L, proportional attention off (MAE classifiers pool by "
    "a size-weighted mean: classifier_pooling='mean' on ViT)",
    "authors-bert": "the authors' BERT configuration: the first 3 layers only, gaussian energy, top split, margin "
    "0.9 - 0.25 l/L, proportional attention off",
    "authors-blip2": "the authors' BLIP-2 EVA ViT configuration: the protected step in every layer, ELU energy, "
    "margin 0.75 - 0.4 l/L, proportional attention on",
}


def preset_settings(name: str, num_layers: Optional[int], current=None) -> dict:
    """The selection settings (`PRESET_FIELDS`) of preset `name` for a model of `num_layers` merging layers.

    With `current` (a config being built with this preset), a field that the caller set to something other than both
    its default and the preset's value is a conflict and raises, naming both values.
    """
    _check_choice("merge_preset", name, tuple(MERGE_PRESETS))
    if num_layers is None:
        raise ValueError(f"merge_preset={name!r} needs the number of layers: the config has no num_hidden_layers.")
    L = int(num_layers)
    half = (L + 1) // 2  # ceil(L / 2)
    values = dict(
        merge_method="pitome",
        merge_layers=None,
        margin=0.9,
        margin_end=0.0,
        margin_schedule="linear",
        alpha=1.0,
        energy="exp",
        merge_split="alternate",
        proportional_attention=True,
        merge_metric="keys",
    )
    if name == "authors-deit":
        values.update(merge_method=["pitome_bsm"] * half + ["pitome"] * (L - half), energy="elu", margin=0.75,
                      proportional_attention=False)
    elif name == "authors-mae":
        values.update(merge_method=["pitome"] * half + ["pitome_bsm"] * (L - half), energy="elu", margin=0.75,
                      proportional_attention=False)
    elif name == "authors-bert":
        values.update(merge_layers=list(range(min(3, L))), energy="gaussian", merge_split="top", margin=0.9,
                      margin_end=0.65, proportional_attention=False)
    elif name == "authors-blip2":
        values.update(energy="elu", margin=0.75, margin_end=0.35)
    if current is not None:
        # a field left at its default (the config class's own, e.g. BERT's text defaults) is not a conflict
        defaults = {f.name: f.default for f in fields(MergeSettings)}
        defaults.update({f.name: f.default for f in fields(type(current)) if f.name in defaults})
        for key, value in values.items():
            given = _jsonable(getattr(current, key, defaults[key]))
            if given != value and given != _jsonable(defaults[key]):
                raise ValueError(
                    f"merge_preset={name!r} sets {key}={value!r}, but {key}={given!r} was given too. Drop one of "
                    "them (set the field after the preset to change it; the preset name is then cleared)."
                )
    return values


def _jsonable(value):
    """Tuples as lists and ints as floats where floats are meant, so settings compare as they are saved."""
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


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


def protected_prefix(config) -> int:
    """Number of leading tokens that never merge: the config's `protected_tokens` setting, else its architecture's
    own rule (`default_protected_tokens`: CLS = 1, CLS + registers, 0 for towers without CLS)."""
    value = getattr(config, "protected_tokens", None)
    if value is None:
        value = getattr(config, "default_protected_tokens", None)
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
        "Use the PiToMe class of that architecture, or pitome_hf.convert to see the supported ones."
    )

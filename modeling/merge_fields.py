# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""The merge fields: one table of the merge settings, their checks, the presets and the one rule for an update.

* `MERGE_FIELD_TABLE`: every merge setting declared once (name, type, default, allowed values, help, whether a preset
  fixes it). The config mixin's fields, `MergeSettings` (merge_config.py), the `paper` preset, validation, the
  processors' saved settings and the command-line flags (pitome_hf/commands/options.py) are all generated from it: a
  new field is one row here.
* The checks: each takes (value, num_layers) and returns the value normalised or raises ValueError naming the field,
  the value and what is allowed; `check_names` refuses an unknown keyword, naming the closest one.
* `MERGE_PRESETS` / `preset_settings` / `resolve_update`: the paper's settings, the authors' released configurations,
  and the one rule for combining a preset with explicit fields; `resolve_budgets`: the one place where the two
  visual-token budgets (`visual_tokens`, `keep_ratio`) are resolved; `count_settings`: the fields a processor's
  token count depends on.

No torch here and no config: merge_config.py builds the settings and the config mixins on this table. The
specification these follow is docs/algorithm.md.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from .merging import ENERGIES, MARGIN_SCHEDULES, METHODS, METRICS, SPLITS

# How a family that reduces at the language model's input picks its visual tokens (the `visual_selection` field):
# "merge" (the merge_method: PiToMe, ToMe, pitome_bsm), "visionzip" (dominant + contextual tokens), "divprune" (the
# max-min diverse subset) or "dart" (pivots and the tokens least duplicated with them).
VISUAL_SELECTIONS = ("merge", "visionzip", "divprune", "dart")
_SELECTION_NAMES = {"visionzip": "the VisionZip-style selection", "divprune": "DivPrune's max-min selection",
                    "dart": "DART's pivot selection"}


def check_visual_selection(selection: str, method) -> None:
    """Refuse a `merge_method` that the visual selection would not run: "visionzip" keeps the most attended tokens and
    merges the rest into contextual tokens, "divprune" and "dart" keep stock tokens, none of them with a merge method
    of its own, so only merge_method="pitome" (the default: reduction on) and "none" (nothing reduced) mean something
    next to them."""
    if selection != "merge" and method not in ("pitome", "none"):
        raise ValueError(
            f"merge_method={method!r} does not apply with visual_selection={selection!r} "
            f"({_SELECTION_NAMES.get(selection, selection)} runs no merge method): give merge_method='pitome' (the "
            f"default) or 'none', or visual_selection='merge' to run {method!r}."
        )

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


# ----------------------------------------------------------------------------------------------------------------
# Checks: each takes (value, num_layers) and returns the value normalised (lists as tuples) or raises ValueError
# naming the field, the value and what is allowed.
# ----------------------------------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_choice(name, value, allowed):
    if isinstance(value, list) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed values: {', '.join(map(repr, allowed))}.")
    return value


def _choice(allowed):
    return lambda name, value, num_layers: _check_choice(name, value, allowed)


def _per_layer(name, values, num_layers, what):
    if num_layers is not None and len(values) != num_layers:
        raise ValueError(
            f"{name} has {len(values)} entries but the model has {num_layers} layers: give one {what} per layer."
        )
    return tuple(values)


def _check_method(name, value, num_layers):
    if isinstance(value, (list, tuple)):
        bad = [m for m in value if m not in METHODS]
        if bad:
            raise ValueError(
                f"{name}={list(value)!r} has invalid entries {bad!r}: every entry must be one of "
                f"{', '.join(map(repr, METHODS))}."
            )
        return _per_layer(name, value, num_layers, "method")
    return _check_choice(name, value, METHODS)


def _interval(low, high, low_open, high_open, what=""):
    text = f"{'(' if low_open else '['}{low:g}, {'inf' if high == math.inf else f'{high:g}'}{')' if high_open else ']'}"

    def check(name, value, num_layers):
        ok = _is_number(value) and math.isfinite(float(value))
        if ok:
            v = float(value)
            ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            raise ValueError(f"{name}={value!r} is out of range: it must be a number in {text}{what}.")
        return value

    return check


def _check_merge_r(name, value, num_layers):
    if value is None:
        return None
    if _is_int(value):
        if value < 0:
            raise ValueError(f"{name}={value!r} is out of range: it must be an int >= 0 or a list of them.")
        return value
    if isinstance(value, (list, tuple)):
        bad = [x for x in value if not _is_int(x) or x < 0]
        if bad:
            raise ValueError(f"{name}={list(value)!r} has invalid entries {bad!r}: every entry must be an int >= 0.")
        return _per_layer(name, value, num_layers, "entry")
    raise ValueError(f"{name}={value!r} must be None, an int >= 0, or a list of ints (one per layer).")


def _check_layers(name, value, num_layers):
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(_is_int(x) for x in value):
        raise ValueError(f"{name}={value!r} must be None (all layers) or a list of layer indices.")
    if len(set(value)) != len(value):
        raise ValueError(f"{name}={list(value)!r} repeats a layer index.")
    if num_layers is not None:
        bad = [x for x in value if not 0 <= x < num_layers]
        if bad:
            raise ValueError(
                f"{name}={list(value)!r} has indices {bad!r} outside 0..{num_layers - 1} (the model has {num_layers} "
                "layers)."
            )
    return tuple(sorted(value))


def _check_count(name, value, num_layers):
    if value is not None and (not _is_int(value) or value < 0):
        raise ValueError(f"{name}={value!r} must be None or an int >= 0.")
    return value


def _check_bool(name, value, num_layers):
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False.")
    return value


def _check_optional_bool(name, value, num_layers):
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True, False or None (the method's own default).")
    return value


def _check_visual_tokens(name, value, num_layers):
    if value is not None and (not _is_int(value) or value < 1):
        raise ValueError(f"{name}={value!r} is out of range: it must be None (use keep_ratio) or an int >= 1.")
    return value


def _check_preset(name, value, num_layers):
    return None if value is None else _check_choice(name, value, tuple(MERGE_PRESETS))


# ----------------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MergeField:
    """One merge setting. `selection`: a preset fixes it (the budget, prefix and output options stay the user's).
    `energy`: it only matters to the energy-based selections (pitome, pitome_bsm). `counts`: the token-count schedule
    depends on it (a processor that expands image placeholders needs it). `per_layer`: the command line takes a list.
    `cli_type`: how the command line parses one value."""

    name: str
    annotation: Any
    default: Any
    check: Callable
    help: str
    selection: bool = False
    energy: bool = False
    counts: bool = False
    per_layer: bool = False
    cli_type: Callable = str
    choices: tuple = ()

    def validate(self, value, num_layers: Optional[int] = None):
        return self.check(self.name, value, num_layers)


F = MergeField
MERGE_FIELD_TABLE: tuple[MergeField, ...] = (
    F("merge_method", Union[str, list[str]], "pitome", _check_method,
      "'pitome' (the paper's energy-protected step), 'tome' (bipartite soft matching, parity over the whole sequence "
      "as the original), 'pitome_bsm' (the authors' energy-ordered bipartite matching) or 'none'; or one per layer",
      selection=True, counts=True, per_layer=True, choices=METHODS),
    F("merge_preset", Optional[str], None, _check_preset,
      "a named configuration (MERGE_PRESETS) whose selection settings these are; changing one of them clears it",
      choices=tuple(MERGE_PRESETS)),
    F("keep_ratio", Union[float, int], 0.9, _interval(0.0, 1.0, True, False, " (1.0 merges nothing)"),
      "fraction rho of mergeable tokens each merging layer keeps: r = floor(T - T*rho), clamped to floor(T/2); "
      "ignored when merge_r is given; next to visual_tokens refused (two budgets: give one)", counts=True,
      cli_type=float),
    F("merge_r", Optional[Union[int, list[int]]], None, _check_merge_r,
      "tokens merged away per layer: one int >= 0, or one per layer (ToMe's style); overrides keep_ratio",
      counts=True, per_layer=True, cli_type=int),
    F("merge_layers", Optional[list[int]], None, _check_layers,
      "indices of the layers that merge (default: all)", selection=True, counts=True, per_layer=True, cli_type=int),
    F("margin", Union[float, int], 0.9, _interval(0.0, 1.0, False, True),
      "the energy margin m0; layer l of L uses m0 - (m0 - margin_end) * l / L (linear schedule)",
      selection=True, energy=True, cli_type=float),
    F("margin_end", Union[float, int], 0.0, _interval(0.0, 1.0, False, True),
      "where the linear margin schedule heads (0: the paper's m0 - m0 * l / L)",
      selection=True, energy=True, cli_type=float),
    F("margin_schedule", str, "linear", _choice(MARGIN_SCHEDULES),
      "'linear' (m0 - (m0 - margin_end) l / L) or 'constant' (m0 in every layer)",
      selection=True, energy=True, choices=MARGIN_SCHEDULES),
    F("alpha", Union[float, int], 1.0, _interval(0.0, math.inf, True, True),
      "slope of the energy below the margin: f(x) = alpha * (exp(x - m) - 1)",
      selection=True, energy=True, cli_type=float),
    F("energy", str, "exp", _choice(ENERGIES),
      "'exp' (the paper), 'elu' (the authors' code) or 'gaussian' (the text variant)",
      selection=True, energy=True, choices=ENERGIES),
    F("merge_split", str, "alternate", _choice(SPLITS),
      "'alternate' (A = energy ranks 0, 2, 4..., B = 1, 3, 5...) or 'top' (A = the r highest, B = the next r)",
      selection=True, energy=True, choices=SPLITS),
    F("proportional_attention", bool, True, _check_bool,
      "add log(size) to the attention logits of merged tokens' keys", selection=True, cli_type=bool),
    F("merge_metric", str, "keys", _choice(METRICS),
      "'keys' (the layer's attention keys, mean over heads) or 'hidden' (the hidden states)",
      selection=True, choices=METRICS),
    F("protected_tokens", Optional[int], None, _check_count,
      "leading tokens that never merge (default: the architecture's own count, e.g. CLS)", counts=True, cli_type=int),
    F("keep_order", Optional[bool], None, _check_optional_bool,
      "order of the surviving tokens: True, their original (spatial) order; False, the selection's own (ToMe's "
      "original order, PiToMe's energy order); default None, the original ToMe's order for 'tome' and spatial order "
      "for the others (a family whose language model reads the tokens in order uses spatial order for every method)",
      cli_type=bool),
    F("trace_source", bool, False, _check_bool,
      "keep, for each original token, the index of the current token holding it (merge maps, unmerge)",
      cli_type=bool),
    F("visual_tokens", Optional[int], None, _check_visual_tokens,
      "target number of visual tokens per image (per temporal patch of a video) reaching the language model, "
      "instead of keep_ratio (giving both is refused; the one given replaces the other). Only families that reduce "
      "at the language model's input read it (qwen2_5_vl, llava_onevision: image features, newlines on top); the "
      "others refuse a value", counts=True, cli_type=int),
    F("visual_selection", str, "merge", _choice(VISUAL_SELECTIONS),
      "how those families pick the visual tokens: 'merge' (merge_method's merging), 'visionzip' (VisionZip-style: "
      "dominant tokens by the attention they receive, the rest merged into contextual tokens), 'divprune' (DivPrune: "
      "the max-min diverse subset of the features) or 'dart' (DART: pivot tokens and the tokens least duplicated with "
      "them); all but 'merge' run no merge_method, so they take merge_method 'pitome' (on) or 'none' only; the other "
      "families refuse a value", choices=VISUAL_SELECTIONS),
)
del F

MERGE_FIELD = {f.name: f for f in MERGE_FIELD_TABLE}
# Fields only some families read: another family's config refuses a value other than the default (see
# `MergeConfigMixin.family_merge_fields`).
FAMILY_ONLY_FIELDS = ("visual_tokens", "visual_selection")
MERGE_FIELDS = tuple(MERGE_FIELD)
PRESET_FIELDS = tuple(f.name for f in MERGE_FIELD_TABLE if f.selection)
COUNT_FIELDS = tuple(f.name for f in MERGE_FIELD_TABLE if f.counts)
_ENERGY_FIELDS = tuple(f.name for f in MERGE_FIELD_TABLE if f.energy)
_MERGE_FIELD_NAMES = frozenset(MERGE_FIELDS)


def check_names(names, allowed, what: str) -> None:
    """Refuse an unknown keyword, naming the closest allowed one (a typo such as keep_rato must not pass silently)."""
    for name in names:
        if name not in allowed:
            close = difflib.get_close_matches(name, list(allowed), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{what} got an unknown setting {name!r}.{hint} Allowed: {', '.join(sorted(allowed))}.")


def count_settings(source=None, what: str = "the processor") -> dict:
    """The merge fields a processor's token count depends on (`COUNT_FIELDS`), as the processor stores them: from a
    PiToMe config (its values), or from a dict (unknown names refused, naming `what`; missing ones at the table's
    defaults)."""
    if source is not None and not isinstance(source, dict):
        return {name: getattr(source, name) for name in COUNT_FIELDS}
    given = dict(source or {})
    check_names(given, COUNT_FIELDS, what)
    values = {name: given.get(name, MERGE_FIELD[name].default) for name in COUNT_FIELDS}
    return resolve_budgets(values, given, saved=True)  # saved settings holding both budgets are refused


# ----------------------------------------------------------------------------------------------------------------
# Presets, and the one rule for combining a preset with explicit fields
# ----------------------------------------------------------------------------------------------------------------
def preset_settings(name: str, num_layers: Optional[int]) -> dict:
    """The selection settings (`PRESET_FIELDS`) of preset `name` for a model of `num_layers` merging layers. "paper"
    is the table's defaults; the others are the authors' released configurations (docs/algorithm.md)."""
    _check_choice("merge_preset", name, tuple(MERGE_PRESETS))
    if num_layers is None:
        raise ValueError(f"merge_preset={name!r} needs the number of layers: the config has no num_hidden_layers.")
    L = int(num_layers)
    half = (L + 1) // 2  # ceil(L / 2)
    values = {f.name: f.default for f in MERGE_FIELD_TABLE if f.selection}
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
    return values


def _jsonable(value):
    """Tuples as lists, so settings compare as they are saved."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def resolve_budgets(result: dict, update: dict, saved: bool = False) -> dict:
    """The one place where the two visual-token budgets are resolved: `visual_tokens` (K tokens per image) and
    `keep_ratio` (a fraction of each image's tokens) are two answers to one question, so one of them is in force.

    `result` holds the merge fields after `update` (the fields given together in one call); returns it with:
    * both given (visual_tokens not None, and keep_ratio) -> ValueError naming both values: give one;
    * visual_tokens given -> keep_ratio back at its default (it is not read, and a saved config must not keep a stale
      ratio that would conflict when read back);
    * keep_ratio given -> visual_tokens None (the ratio is the budget now).
    "Given" is named in `update`, whatever its value (keep_ratio=0.9, the default, counts: it asks for a ratio), except
    when `saved`: a config.json (or a processor's saved settings) writes every field, so there a keep_ratio at its
    default is the default sitting in the file, not a choice. `MergeSettings` checks its own values as saved ones, so
    a hand-edited file holding both budgets is refused too."""
    default = MERGE_FIELD["keep_ratio"].default
    tokens = update.get("visual_tokens")
    ratio_given = "keep_ratio" in update and not (saved and update["keep_ratio"] == default)
    if tokens is not None and ratio_given:
        raise ValueError(
            f"visual_tokens={tokens!r} and keep_ratio={update['keep_ratio']!r} were both given: they are two budgets "
            "for the same visual tokens (a count per image, or a fraction of each image's tokens); give one of them."
        )
    if tokens is not None:
        result["keep_ratio"] = default
    elif ratio_given:
        result["visual_tokens"] = None
    return result


def resolve_update(current: dict, update: dict, num_layers: Optional[int], saved: bool = False) -> dict:
    """The merge fields after applying `update` (the fields given together in one call) to `current`.

    The one rule, whatever the path (constructor, config.json, from_pretrained keywords, attribute assignment,
    `apply_pitome`, the command line) and whatever the order of the arguments:
    * an update that names a preset takes the preset's selection settings; a selection field given in the same
      update with another value than the preset's is a conflict and raises, naming both values;
    * an update that changes a selection field without naming a preset clears the preset name (the settings are no
      longer the preset's);
    * the budget, prefix and output fields (keep_ratio, merge_r, protected_tokens, ...) are the user's either way;
      of the two visual-token budgets one is in force (`resolve_budgets`: both given is refused, the one given
      replaces the other). `saved`: `update` is a saved config.json (every field written, see `resolve_budgets`).
    """
    check_names(update, _MERGE_FIELD_NAMES, "the merge settings")
    result = resolve_budgets({**current, **update}, update, saved)
    preset = update.get("merge_preset")
    if preset is not None:
        values = preset_settings(preset, num_layers)
        for key, value in values.items():
            if key in update and _jsonable(update[key]) != _jsonable(value):
                raise ValueError(
                    f"merge_preset={preset!r} sets {key}={value!r}, but {key}={update[key]!r} was given too. Drop "
                    "one of them (or set the field afterwards: the preset name is then cleared)."
                )
        result.update(values)
    elif "merge_preset" not in update and result.get("merge_preset") is not None:
        values = preset_settings(result["merge_preset"], num_layers)
        if any(key in update and _jsonable(update[key]) != _jsonable(values[key]) for key in values):
            result["merge_preset"] = None
    return result

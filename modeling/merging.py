# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Token merging between Transformer layers: PiToMe (Tran et al., NeurIPS 2024) and the ToMe baseline.

This file is model-agnostic and needs only torch. It holds:

* `MergeSettings`: the validated merge settings (one owner for every range check), read from a config.
* `layer_budget` / `token_schedule`: how many tokens a layer merges, and the whole token-count schedule.
* `pitome_plan` / `tome_plan`: choose which tokens merge into which (pure functions, no gradients).
* `apply_plan`: the size-weighted merge (differentiable), `update_token_map`: where each original patch went.
* `MergeState`: the small per-forward record (sizes, token map, counts) that model adapters pass along layers.
* `PaddedMergeState`: the same for padded batches of variable-length sequences (text encoders): per-sample budgets,
  padding excluded, the padding mask shrinking with the tokens.

Shapes: B batch, N tokens entering a layer, p protected prefix tokens (CLS, distillation, registers),
T = N - p mergeable tokens, C hidden width, r tokens merged away by a layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F

METHODS = ("pitome", "tome", "pitome_bsm", "none")
ENERGIES = ("exp", "elu", "gaussian")
SPLITS = ("alternate", "top")
METRICS = ("keys", "hidden")
MARGIN_SCHEDULES = ("linear", "constant")
PROPORTIONAL_ATTENTION_BACKENDS = ("eager", "sdpa")


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

    def __post_init__(self, **kwargs):
        num_layers = merge_num_layers(self)
        if self.merge_preset is not None:
            for name, value in preset_settings(self.merge_preset, num_layers, current=self).items():
                setattr(self, name, value)
        MergeSettings.from_config(self, num_layers=num_layers)
        super().__post_init__(**kwargs)

    def __setattr__(self, name, value):
        # from_pretrained(..., keep_ratio=x) sets fields after __post_init__: validate those assignments too
        if name in _MERGE_FIELD_NAMES and getattr(self, "_post_init_done", False):
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
        values = {f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)}
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
            return self.keep_ratio < 1.0
        if isinstance(self.merge_r, tuple):
            return any(self.merge_r)
        return self.merge_r > 0

    def margin_at(self, layer: int) -> float:
        """Margin of layer `layer`: m0 - (m0 - margin_end) * l / L (linear schedule) or m0 (constant)."""
        if self.margin_schedule == "constant" or not self.num_layers:
            return float(self.margin)
        return float(self.margin) - (float(self.margin) - float(self.margin_end)) * layer / self.num_layers

    def budget(self, num_mergeable: int, layer: int) -> int:
        """Number of tokens layer `layer` merges away when `num_mergeable` tokens enter it."""
        return layer_budget(
            num_mergeable,
            layer,
            method=self.method_at(layer),
            keep_ratio=self.keep_ratio,
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
        defaults = {f.name: f.default for f in fields(MergeSettings)}
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


def layer_budget(
    num_mergeable: int,
    layer: int,
    *,
    method: str = "pitome",
    keep_ratio: float = 0.9,
    merge_r: Union[int, Sequence[int], None] = None,
    merge_layers: Optional[Sequence[int]] = None,
) -> int:
    """r for one layer: floor(T - T*rho) in float64 (or the given constant / per-layer r), clamped to [0, floor(T/2)].
    `method` is the layer's own selection ("none" merges nothing)."""
    if method == "none" or (merge_layers is not None and layer not in merge_layers):
        return 0
    T = int(num_mergeable)
    if merge_r is None:
        r = math.floor(float(T) - float(T) * float(keep_ratio))
    elif isinstance(merge_r, (list, tuple)):
        r = int(merge_r[layer])
    else:
        r = int(merge_r)
    return max(0, min(r, T // 2))


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


# ----------------------------------------------------------------------------------------------------------------
# Selection (which token merges into which). Pure functions under no_grad; scores in float32.
# ----------------------------------------------------------------------------------------------------------------
class MergePlan(NamedTuple):
    """Indices into the T mergeable tokens, per batch row: `src` (B, r) merge into `dst` (B, r); `keep` (B, T - r)
    are the surviving tokens in output order (the `dst` tokens are among them)."""

    src: torch.Tensor
    dst: torch.Tensor
    keep: torch.Tensor


def cosine_similarity_matrix(metric: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, T, c) -> (B, T, T) cosine similarities in float32."""
    k = F.normalize(metric.float(), dim=-1)
    if valid is not None:
        k = k * valid[..., None].to(k.dtype)
    return k @ k.transpose(1, 2)


def energy_score(
    similarity: torch.Tensor,
    margin: float,
    alpha: float = 1.0,
    kind: str = "exp",
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """E_i = mean_j f(S_ij). exp: f(x) = x if x >= m else alpha * (exp(x - m) - 1); elu: ELU(x - m, alpha);
    gaussian: exp(-0.5 * ((1 - x) / (1 - m))^2). `valid` (B, T) bool excludes padding from the mean."""
    S = similarity
    if kind == "exp":
        f = torch.where(S >= margin, S, alpha * torch.expm1(S - margin))
    elif kind == "elu":
        f = F.elu(S - margin, alpha=alpha)
    elif kind == "gaussian":
        sigma = max(1.0 - margin, 1e-6)
        f = torch.exp(-0.5 * ((1.0 - S) / sigma) ** 2)
    else:
        raise ValueError(f"energy={kind!r} is not supported; allowed values: {ENERGIES}.")
    if valid is None:
        return f.mean(dim=-1)
    w = valid[:, None, :].to(f.dtype)
    return (f * w).sum(-1) / w.sum(-1).clamp_min(1.0)


def _order(keep: torch.Tensor, keep_order: bool) -> torch.Tensor:
    return keep.sort(dim=1).values if keep_order else keep


@torch.no_grad()
def pitome_plan(
    metric: torch.Tensor,
    r: int,
    margin: float,
    alpha: float = 1.0,
    energy: str = "exp",
    split: str = "alternate",
    keep_order: bool = True,
    valid: Optional[torch.Tensor] = None,
) -> MergePlan:
    """PiToMe selection on the mergeable tokens' metric (B, T, c).

    Tokens are ranked by energy (highest first, stable). The 2r highest are mergeable, the rest protected. With the
    alternate split A = ranks 0, 2, 4, ... and B = ranks 1, 3, 5, ...; with the top split A = the r highest and B the
    next r. Each token of A merges into its most similar token of B. `valid` (B, T) marks real (non-padding) tokens:
    padding gets the lowest energy so it is never merged, and is excluded from every energy.
    """
    B, T, _ = metric.shape
    S = cosine_similarity_matrix(metric)
    E = energy_score(S, margin, alpha, energy, valid)
    if valid is not None:
        E = E.masked_fill(~valid, float("-inf"))
    order = torch.sort(E, dim=1, descending=True, stable=True).indices
    if split == "alternate":
        a, b = order[:, 0 : 2 * r : 2], order[:, 1 : 2 * r : 2]
    else:
        a, b = order[:, :r], order[:, r : 2 * r]
    rows = S.gather(1, a[..., None].expand(B, r, T))
    s_ab = rows.gather(2, b[:, None, :].expand(B, r, r))
    dst = b.gather(1, s_ab.argmax(dim=-1))
    keep = torch.cat([b, order[:, 2 * r :]], dim=1)
    return MergePlan(src=a, dst=dst, keep=_order(keep, keep_order))


@torch.no_grad()
def tome_plan(metric: torch.Tensor, r: int, keep_order: bool = True, num_prefix: int = 0) -> MergePlan:
    """ToMe bipartite soft matching on the mergeable tokens' metric (B, T, c), as the original ToMe.

    The parity is counted over the whole sequence, protected prefix included: mergeable token i (0-based) is in A when
    (i + num_prefix) is even, else in B (with one CLS the sources are the odd patch positions). Each A token scores its
    best cosine match in B, and the r A tokens with the highest scores (stable order on ties) merge into their match.
    """
    B, T, _ = metric.shape
    k = F.normalize(metric.float(), dim=-1)
    first = num_prefix % 2
    a_idx = torch.arange(first, T, 2, device=metric.device)
    b_idx = torch.arange(1 - first, T, 2, device=metric.device)
    scores = k[:, first::2] @ k[:, 1 - first :: 2].transpose(1, 2)
    best, match = scores.max(dim=-1)
    ranked = torch.sort(best, dim=1, descending=True, stable=True).indices
    src = a_idx[ranked[:, :r]]
    dst = b_idx[match.gather(1, ranked[:, :r])]
    keep = torch.cat([b_idx.expand(B, -1), a_idx[ranked[:, r:]]], dim=1)
    return MergePlan(src=src, dst=dst, keep=_order(keep, keep_order))


@torch.no_grad()
def pitome_bsm_plan(
    metric: torch.Tensor,
    r: int,
    margin: float,
    alpha: float = 1.0,
    energy: str = "exp",
    keep_order: bool = True,
) -> MergePlan:
    """Energy-ordered bipartite matching (`pitome_bsm`, from the authors' released code) on (B, T, c).

    All T tokens are ranked by energy (highest first, stable); A = ranks 0, 2, 4, ..., B = ranks 1, 3, 5, .... Each A
    token scores its best cosine match in B, and the r A tokens with the highest scores merge into their match; the
    rest of A is kept. No token is protected: ToMe with the parity split replaced by an energy-rank split.
    """
    B, T, _ = metric.shape
    S = cosine_similarity_matrix(metric)
    order = torch.sort(energy_score(S, margin, alpha, energy), dim=1, descending=True, stable=True).indices
    a, b = order[:, 0::2], order[:, 1::2]
    rows = S.gather(1, a[..., None].expand(B, a.shape[1], T))
    best, match = rows.gather(2, b[:, None, :].expand(B, a.shape[1], b.shape[1])).max(dim=-1)
    ranked = torch.sort(best, dim=1, descending=True, stable=True).indices
    src = a.gather(1, ranked[:, :r])
    dst = b.gather(1, match.gather(1, ranked[:, :r]))
    keep = torch.cat([b, a.gather(1, ranked[:, r:])], dim=1)
    return MergePlan(src=src, dst=dst, keep=_order(keep, keep_order))


# ----------------------------------------------------------------------------------------------------------------
# Applying a plan (differentiable)
# ----------------------------------------------------------------------------------------------------------------
def _new_positions(plan: MergePlan, num_mergeable: int) -> torch.Tensor:
    """(B, T) index of the output token that each input mergeable token ends up in."""
    B, K = plan.keep.shape
    pos = torch.empty(B, num_mergeable, dtype=torch.long, device=plan.keep.device)
    pos.scatter_(1, plan.keep, torch.arange(K, device=pos.device).expand(B, K))
    pos.scatter_(1, plan.src, pos.gather(1, plan.dst))
    return pos


def apply_plan(
    x: torch.Tensor, sizes: torch.Tensor, plan: MergePlan, num_prefix: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Size-weighted merge: x_b <- (s_b x_b + sum_{a->b} s_a x_a) / (s_b + sum s_a), s_b <- s_b + sum s_a.

    x (B, N, C), sizes (B, N) float32, prefix tokens untouched. Returns (x', sizes', positions) where positions (B, T)
    maps each old mergeable token to its new index among the mergeable outputs. Gradients flow through x.

    Computed as one row gather of the surviving tokens plus a correction on the r destination rows only:
    x_b' = x_b + sum_{a->b} (x_a - x_b) * s_a / s_b', which equals the weighted mean; the correction is formed in
    float32 for half-precision inputs.
    """
    p = num_prefix
    B, N, C = x.shape
    K = plan.keep.shape[1]
    pos = _new_positions(plan, N - p)
    dst_out = pos.gather(1, plan.dst)  # (B, r) destination index among the mergeable outputs
    mergeable = sizes[:, p:]
    src_s = mergeable.gather(1, plan.src)
    den = mergeable.gather(1, plan.keep).scatter_add(1, dst_out, src_s)  # (B, K) new sizes
    base = torch.arange(B, device=x.device)[:, None] * N + p
    rows = plan.keep + base
    if p:
        rows = torch.cat([torch.arange(p, device=x.device) + base - p, rows], dim=1)
    flat = x.reshape(B * N, C)
    out = flat.index_select(0, rows.reshape(-1))  # (B * (p + K), C): prefix and survivors, in output order
    work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    src_x = flat.index_select(0, (plan.src + base).reshape(-1)).to(work)
    dst_x = flat.index_select(0, (plan.dst + base).reshape(-1)).to(work)
    weight = (src_s / den.gather(1, dst_out)).reshape(-1, 1).to(work)
    out_rows = (dst_out + p + torch.arange(B, device=x.device)[:, None] * (p + K)).reshape(-1)
    out.index_put_((out_rows,), ((src_x - dst_x) * weight).to(x.dtype), accumulate=True)
    new_sizes = torch.cat([sizes[:, :p], den], dim=1) if p else den
    return out.view(B, p + K, C), new_sizes, pos


def update_token_map(token_map: torch.Tensor, positions: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """token_map (B, N0): index of the current token holding each original token; positions from `apply_plan`."""
    p = num_prefix
    B = positions.shape[0]
    full = torch.cat([torch.arange(p, device=positions.device).expand(B, p), positions + p], dim=1)
    return full.gather(1, token_map)


def merge_tokens(
    x: torch.Tensor,
    metric: torch.Tensor,
    sizes: torch.Tensor,
    r: int,
    settings: MergeSettings,
    layer: int,
    num_prefix: int,
    valid: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One merge step on a full sequence x (B, N, C) with metric (B, N, c): select on the mergeable part with the
    layer's method, then merge. `valid` (padding mask) is honoured by the "pitome" selection only; padded batches go
    through `PaddedMergeState`, which packs real tokens first. Returns (x', sizes', positions)."""
    m = metric[:, num_prefix:]
    v = None if valid is None else valid[:, num_prefix:]
    method = settings.method_at(layer)
    if method == "tome":
        plan = tome_plan(m, r, keep_order=settings.keep_order, num_prefix=num_prefix)
    elif method == "pitome_bsm":
        plan = pitome_bsm_plan(
            m, r, margin=settings.margin_at(layer), alpha=float(settings.alpha), energy=settings.energy,
            keep_order=settings.keep_order,
        )
    elif method == "pitome":
        plan = pitome_plan(
            m,
            r,
            margin=settings.margin_at(layer),
            alpha=float(settings.alpha),
            energy=settings.energy,
            split=settings.merge_split,
            keep_order=settings.keep_order,
            valid=v,
        )
    else:
        raise ValueError(f"layer {layer} runs merge_method={method!r} and merges nothing; r must be 0, got {r}.")
    return apply_plan(x, sizes, plan, num_prefix)


def proportional_attention_bias(sizes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """log(size) of each key as an additive attention mask of shape (B, 1, 1, N)."""
    return torch.log(sizes)[:, None, None, :].to(dtype)


def weighted_mean(x: torch.Tensor, sizes: Optional[torch.Tensor]) -> torch.Tensor:
    """Size-weighted mean over tokens: (B, N, C), (B, N) -> (B, C). Plain mean when sizes is None."""
    if sizes is None:
        return x.mean(dim=1)
    w = sizes.to(x.dtype)[..., None]
    return (x * w).sum(dim=1) / w.sum(dim=1)


def check_attention_backend(settings: MergeSettings, attn_implementation: Optional[str]) -> None:
    """Proportional attention needs an additive float mask: refuse backends that cannot take one."""
    if settings.active and settings.proportional_attention:
        impl = attn_implementation or "eager"
        if impl not in PROPORTIONAL_ATTENTION_BACKENDS:
            raise ValueError(
                f"attn_implementation={impl!r} cannot add the proportional-attention bias that merging uses. "
                f"Use one of {PROPORTIONAL_ATTENTION_BACKENDS}, or set proportional_attention=False in the config."
            )


# ----------------------------------------------------------------------------------------------------------------
# Per-forward state
# ----------------------------------------------------------------------------------------------------------------
class MergeState:
    """What one forward pass carries from layer to layer: token sizes, the token map, the count after each layer.

    Created by the model's forward, passed to its layers as a keyword argument, read back at the end. Nothing is
    stored on the model, so concurrent forwards cannot interfere.
    """

    def __init__(self, settings: MergeSettings, num_prefix: int):
        self.settings = settings
        self.num_prefix = num_prefix
        self.sizes: Optional[torch.Tensor] = None
        self.token_map: Optional[torch.Tensor] = None
        self.counts: list[int] = []
        self.merged = False

    def _start(self, x: torch.Tensor) -> None:
        B, N, _ = x.shape
        if N <= self.num_prefix:
            raise ValueError(f"the sequence has {N} tokens but {self.num_prefix} are protected: nothing to merge.")
        self.sizes = torch.ones(B, N, dtype=torch.float32, device=x.device)
        if self.settings.trace_source:
            self.token_map = torch.arange(N, device=x.device).expand(B, N).clone()
        self.counts = [N - self.num_prefix]

    def attention_mask(self, attention_mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
        """The mask a layer's attention should use: the proportional-attention bias once tokens have merged."""
        if not (self.merged and self.settings.proportional_attention):
            return attention_mask
        bias = proportional_attention_bias(self.sizes, dtype)
        return bias if attention_mask is None else attention_mask + bias

    def needs_metric(self, layer: int, num_tokens: int) -> bool:
        return self.settings.budget(num_tokens - self.num_prefix, layer) > 0

    def step(self, x: torch.Tensor, layer: int, keys: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Merge after layer `layer`'s attention. keys (B, H, N, d) are the layer's attention keys (metric "keys")."""
        if self.sizes is None:
            self._start(x)
        T = x.shape[1] - self.num_prefix
        r = self.settings.budget(T, layer)
        if r > 0:
            if self.settings.merge_metric == "keys" and keys is not None:
                metric = keys.mean(dim=1)
            else:
                metric = x
            x, self.sizes, positions = merge_tokens(x, metric, self.sizes, r, self.settings, layer, self.num_prefix)
            if self.token_map is not None:
                self.token_map = update_token_map(self.token_map, positions, self.num_prefix)
            self.merged = True
        self.counts.append(T - r)
        return x

    def counts_tensor(self) -> torch.Tensor:
        return torch.tensor(self.counts, dtype=torch.long)


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


class PaddedMergeState(MergeState):
    """A `MergeState` for padded batches of variable-length sequences (text encoders).

    `valid` (B, N) bool marks the real tokens (the attention mask; left or right padding). Every sample merges exactly
    as it would alone: its budget r comes from its own number of real mergeable tokens, padding never takes part (it
    is in no similarity or energy and is neither source nor destination), and the protected prefix is the sample's
    first `num_prefix` real tokens (CLS). Samples with the same number of real tokens are merged together in one
    batched call. After a layer in which any sample merges, every sample's real tokens are packed to the left (prefix
    first, original order kept) and the batch is padded to its longest sample; `valid` then says which are real.
    Padding has size 0, so `weighted_mean(x, sizes)` is the size-weighted mean over real tokens. `token_map` holds -1
    for original padding positions. `counts` holds one list per sample (mergeable real tokens before layer 0 and after
    each layer); `counts_tensor()` is (B, L + 1).
    """

    def __init__(self, settings: MergeSettings, num_prefix: int, valid: torch.Tensor):
        super().__init__(settings, num_prefix)
        if valid.dim() != 2:
            raise ValueError(f"valid must be a (batch, tokens) mask, got shape {tuple(valid.shape)}.")
        self.valid = valid.bool()

    def _start(self, x: torch.Tensor) -> None:
        B, N, _ = x.shape
        if self.valid.shape != (B, N):
            raise ValueError(f"the mask has shape {tuple(self.valid.shape)} but the sequence is {(B, N)}.")
        self.valid = self.valid.to(x.device)
        self.sizes = self.valid.float()
        if self.settings.trace_source:
            positions = torch.arange(N, device=x.device).expand(B, N)
            self.token_map = torch.where(self.valid, positions, torch.full_like(positions, -1))
        self.counts = [[t] for t in self._mergeable().tolist()]

    def _mergeable(self) -> torch.Tensor:
        return (self.valid.sum(1) - self.num_prefix).clamp_min(0)

    def attention_mask(self, attention_mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
        """Before any merge: the model's own mask. After: an additive (B, 1, 1, N) float mask, the dtype's minimum on
        padding and log(size) (proportional attention) or 0 on real tokens."""
        if not self.merged:
            return attention_mask
        if self.settings.proportional_attention:
            real = torch.log(self.sizes.clamp_min(1.0))
        else:
            real = torch.zeros_like(self.sizes)
        mask = torch.where(self.valid, real, torch.full_like(real, torch.finfo(dtype).min))
        return mask[:, None, None, :].to(dtype)

    def needs_metric(self, layer: int, num_tokens: int) -> bool:
        return any(self.settings.budget(t, layer) > 0 for t in self._mergeable().tolist())

    def step(self, x: torch.Tensor, layer: int, keys: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Merge after layer `layer`'s attention, each sample with its own budget. keys (B, H, N, d) or None."""
        if self.sizes is None:
            self._start(x)
        B, N, C = x.shape
        p = self.num_prefix
        lengths = self.valid.sum(1)
        mergeable = self._mergeable().tolist()
        budgets = [self.settings.budget(t, layer) for t in mergeable]
        if not any(budgets):
            for count, t in zip(self.counts, mergeable):
                count.append(t)
            return x
        if self.settings.merge_metric == "keys" and keys is not None:
            metric = keys.mean(dim=1)
        else:
            metric = x
        new_lengths = torch.tensor([n - r for n, r in zip(lengths.tolist(), budgets)], device=x.device)
        width = int(new_lengths.max())
        out = x.new_zeros(B, width, C)
        sizes = self.sizes.new_zeros(B, width)
        token_map = self.token_map
        for n in sorted(set(lengths.tolist())):
            rows = (lengths == n).nonzero().squeeze(1)
            r = budgets[int(rows[0])]
            # positions of each row's real tokens, in order (a stable sort puts the real ones first)
            idx = self.valid[rows].to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :n]
            xg = x[rows].gather(1, idx[..., None].expand(-1, -1, C))
            sg = self.sizes[rows].gather(1, idx)
            if r > 0:
                mg = metric[rows].gather(1, idx[..., None].expand(-1, -1, metric.shape[-1]))
                xg, sg, pos = merge_tokens(xg, mg, sg, r, self.settings, layer, p)
                prefix = torch.arange(p, device=x.device).expand(len(rows), p)
                new_index = torch.cat([prefix, pos + p], dim=1)  # packed input index -> packed output index
            else:
                new_index = torch.arange(n, device=x.device).expand(len(rows), n)
            out[rows, : n - r] = xg
            sizes[rows, : n - r] = sg
            if token_map is not None:
                # current (padded) position -> output position, -1 for padding
                layout = torch.full((len(rows), N), -1, dtype=torch.long, device=x.device)
                layout.scatter_(1, idx, new_index)
                old = token_map[rows]
                token_map = token_map.index_put((rows,), torch.where(old >= 0, layout.gather(1, old.clamp_min(0)), old))
        self.token_map = token_map
        self.sizes = sizes
        self.valid = torch.arange(width, device=x.device)[None, :] < new_lengths[:, None]
        self.merged = True
        for count, t, r in zip(self.counts, mergeable, budgets):
            count.append(t - r)
        return out

    def counts_tensor(self) -> torch.Tensor:
        return torch.tensor(self.counts, dtype=torch.long)


def merge_state_for(config, default_protected: int = 1) -> MergeState:
    """A fresh per-forward merge state from a PiToMe config; refuses an attention backend that cannot merge."""
    settings = MergeSettings.from_config(config)
    check_attention_backend(settings, getattr(config, "_attn_implementation", None))
    protected = settings.protected_tokens if settings.protected_tokens is not None else default_protected
    return MergeState(settings, num_prefix=protected)


def attention_with_keys(module, hidden_states, attention_mask, attention_interface, **kwargs):
    """The stock ViT-style self-attention (q/k/v/o projections, `head_dim`, `scaling`, `attention_dropout` on
    `module`) run through `attention_interface`, also returning the key states (B, H, N, d): PiToMe's similarity
    metric. Returns (attn_output, attn_weights, key_states)."""
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, module.head_dim)
    query_states = module.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    key_states = module.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    value_states = module.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    attn_output, attn_weights = attention_interface(
        module,
        query_states,
        key_states,
        value_states,
        attention_mask,
        dropout=0.0 if not module.training else module.attention_dropout,
        scaling=module.scaling,
        **kwargs,
    )
    attn_output = module.o_proj(attn_output.reshape(*input_shape, -1).contiguous())
    return attn_output, attn_weights, key_states

# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Token merging between Transformer layers: PiToMe (Tran et al., NeurIPS 2024) and the ToMe baseline.

The algorithm as pure tensor functions, model-agnostic, torch only (no config, no model, no state):

* `tokens_kept`: the budget rule, its one owner: how many of an input's tokens a keep ratio (n - floor(n - n*rho)) or
  a visual-token count (K per image, refused outside its range) keeps. `layer_budget`: how many tokens one layer
  merges (that rule, clamped to floor(T/2)).
* `pitome_plan` / `tome_plan` / `pitome_bsm_plan`: which tokens merge into which (no gradients; ToMe scores in
  float32, the energy-ranked selections in float64, `energy_dtype`), with `energy_score`, `ranking` and `first_max`
  (ties in index order) and `cosine_similarity_matrix`; ToMe's matching step, which `tome_plan` and `pitome_bsm_plan`
  share (they differ in how A and B are split), is `bipartite_matching`.
* `apply_plan`: the size-weighted merge (differentiable), `update_token_map`: where each original patch went.
* `LayerValues`: what one merge step takes besides the tokens (a layer's method, energy parameters, split, order);
  `select_plan` dispatches on its method.
* `merge_tokens`: one layer's step (select with the layer's method, then merge).
* `proportional_attention_bias`, `weighted_mean`.

The fields and presets live in merge_fields.py, the settings and the token schedule in merge_config.py, the per-forward
state in merge_state.py. The specification is docs/algorithm.md (the repository's): "The merge step", "Baseline: ToMe",
"Energy-ordered bipartite matching".

Shapes: B batch, N tokens entering a layer, p protected prefix tokens (CLS, distillation, registers),
T = N - p mergeable tokens, C hidden width, r tokens merged away by a layer.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F

METHODS = ("pitome", "tome", "pitome_bsm", "none")
ENERGIES = ("exp", "elu", "gaussian")
SPLITS = ("alternate", "top")
METRICS = ("keys", "hidden")
MARGIN_SCHEDULES = ("linear", "constant")


class LayerValues(NamedTuple):
    """What one merge step takes besides the tokens, r and the prefix: the selection `method` ("pitome", "tome" or
    "pitome_bsm"), the energy's `margin`, `alpha` and kind (`energy`), PiToMe's A/B `split`, and whether survivors
    keep their original order (`keep_order`). Plain values; `MergeSettings.layer_values(layer)` gives a layer's (the
    merge-field table owns the defaults, so there are none here)."""

    method: str
    margin: float
    alpha: float
    energy: str
    split: str
    keep_order: bool


def tokens_kept(num_tokens: int, keep_ratio=None, visual_tokens: Optional[int] = None, *, per: int = 1,
                least: int = 1, refusal=None) -> int:
    """The budget rule, the one place it is written: how many of `num_tokens` tokens a budget keeps.

    * `visual_tokens` K (not None): K for each of `per` units (an image; a video's temporal patches), K * per tokens.
      K outside `least`..num_tokens // per raises ValueError: `refusal(least, most)` is its message (the caller names
      the input), by default "the visual-token budget K is out of range: it must be in least..most for this input."
    * otherwise the keep ratio rho (a number or its repr, see `MergeSettings`): n - floor(n - n * rho), the floor taken
      in float64 (0.55 of 100 keeps 56: 100 * 0.55 is 55.00000000000001 there).

    Unclamped: a layer merges at most floor(T/2) of its T tokens (`layer_budget`); the reduction at a language model's
    input reaches any count by several bipartite steps (visual_reduction.py). Callers: `layer_budget`,
    `language_input_reduction.ratio_keep`, `qwen_visual_token_count`, `onevision_image_budget` and the reductions'
    own check of the count they are given (`visual_reduction.reduce_to_budget`, `visionzip_select`)."""
    n = int(num_tokens)
    if visual_tokens is None:
        return n - math.floor(float(n) - float(n) * float(keep_ratio))
    most = n // per
    if not least <= visual_tokens <= most:
        raise ValueError(refusal(least, most) if refusal is not None else f"the visual-token budget {visual_tokens} "
                         f"is out of range: it must be in {least}..{most} for this input.")
    return visual_tokens * per


def layer_budget(
    num_mergeable: int,
    layer: int,
    *,
    method: str = "pitome",
    keep_ratio: float = 0.9,
    merge_r: Union[int, Sequence[int], None] = None,
    merge_layers: Optional[Sequence[int]] = None,
) -> int:
    """r for one layer: floor(T - T*rho) in float64 (T less `tokens_kept`; or the given constant / per-layer r),
    clamped to [0, floor(T/2)]. `method` is the layer's own selection ("none" merges nothing)."""
    if method == "none" or (merge_layers is not None and layer not in merge_layers):
        return 0
    T = int(num_mergeable)
    if merge_r is None:
        r = T - tokens_kept(T, keep_ratio)  # keep_ratio: a number or its repr
    elif isinstance(merge_r, (list, tuple)):
        r = int(merge_r[layer])
    else:
        r = int(merge_r)
    return max(0, min(r, T // 2))


# ----------------------------------------------------------------------------------------------------------------
# Selection (which token merges into which). Pure functions under no_grad (scores: `energy_dtype`, ToMe float32).
# ----------------------------------------------------------------------------------------------------------------
class MergePlan(NamedTuple):
    """Indices into the T mergeable tokens, per batch row: `src` (B, r) merge into `dst` (B, r); `keep` (B, T - r)
    are the surviving tokens (the `dst` tokens are among them). With `keep_order` the survivors come out in their
    original order (no sort is needed: `apply_plan` numbers them by a running count), else in the order of `keep`."""

    src: torch.Tensor
    dst: torch.Tensor
    keep: torch.Tensor
    keep_order: bool = False

    def output_order(self) -> torch.Tensor:
        """(B, T - r) the surviving tokens in output order (sorted here; the merge itself never sorts them)."""
        return self.keep.sort(dim=1).values if self.keep_order else self.keep


def energy_dtype(device: torch.device) -> torch.dtype:
    """The dtype energy-ranked selections (PiToMe, pitome_bsm) score in: float64, else float32 where the device has
    no float64 (Apple MPS). Every adjacent pair of energy ranks is a decision (the alternate split sends one token to A
    and the next to B), and in float32 the energies of a 256-token image sit one rounding step (6e-8) apart often
    enough that a float32 and a float64 run of the same model merged differently on 6-9% of images
    (scripts/precision_agreement.py); in float64 the rounding is far below what the model's own numbers carry."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def tie_tolerance(dtype: torch.dtype, alpha: float = 1.0) -> float:
    """Energies closer than this are tied (`energy_order`): 64 rounding steps of `dtype` at the energies' scale
    (they lie in (-alpha, 1]), above the rounding of a mean over the tokens, far below any gap real data shows."""
    return 64.0 * torch.finfo(dtype).eps * max(1.0, float(alpha))


def ranking(E: torch.Tensor, tolerance: float) -> torch.Tensor:
    """(B, T) scores (energies, best-match scores) -> (B, T) indices, highest first, ties in index order. Two scores
    whose gap in that order is at most `tolerance` are tied, and so is a run of them (each within `tolerance` of the
    next): a mathematical tie (identical tokens) that rounding split by a few ulps is ordered by index, not by the
    rounding. Where no gap is that small the order is the plain stable sort's."""
    B, T = E.shape
    values, order = torch.sort(E, dim=1, descending=True, stable=True)
    gap = values[:, :-1] - values[:, 1:]  # >= 0; -inf - -inf (padding) is nan: tied
    group = torch.cat([torch.zeros_like(order[:, :1]), (gap > tolerance).long().cumsum(1)], dim=1)
    return torch.sort(group * T + order, dim=1, stable=True).values % T  # by group, then by index inside it


def first_max(scores: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Index of the best score along the last axis; scores within `tolerance` of the best tie with it, and the tie
    goes to the first of them (the plain argmax's rule for exact ties)."""
    return (scores >= scores.amax(dim=-1, keepdim=True) - tolerance).int().argmax(dim=-1)


def cosine_similarity_matrix(metric: torch.Tensor, valid: Optional[torch.Tensor] = None,
                             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, T, c) -> (B, T, T) cosine similarities in `dtype` (float32 unless told: ToMe's scores)."""
    k = F.normalize(metric.to(dtype), dim=-1)
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
        # f(x) = ELU(x - m, alpha) + m [x >= m]: two passes over (B, T, T) instead of four (ge, sub, expm1, where);
        # the count [x >= m] in S's dtype (a Python float times an integer tensor would be float32)
        shifted = S - margin
        if valid is None:
            return F.elu(shifted, alpha=alpha).mean(-1) + (margin / S.shape[-1]) * (shifted >= 0).sum(-1, dtype=S.dtype)
        f = F.elu(shifted, alpha=alpha) + margin * (shifted >= 0).to(S.dtype)
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

    Tokens are ranked by energy (highest first; `energy_order`: scores in `energy_dtype`, ties in index order). The
    2r highest are mergeable, the rest protected. With the
    alternate split A = ranks 0, 2, 4, ... and B = ranks 1, 3, 5, ...; with the top split A = the r highest and B the
    next r. Each token of A merges into its most similar token of B. `valid` (B, T) marks real (non-padding) tokens:
    padding gets the lowest energy so it is never merged, and is excluded from every energy.
    """
    B, T, _ = metric.shape
    S = cosine_similarity_matrix(metric, dtype=energy_dtype(metric.device))
    E = energy_score(S, margin, alpha, energy, valid)
    if valid is not None:
        E = E.masked_fill(~valid, float("-inf"))
    tol = tie_tolerance(S.dtype, alpha)
    order = ranking(E, tol)
    if split == "alternate":
        a, b = order[:, 0 : 2 * r : 2], order[:, 1 : 2 * r : 2]
    else:
        a, b = order[:, :r], order[:, r : 2 * r]
    rows = S.gather(1, a[..., None].expand(B, r, T))
    s_ab = rows.gather(2, b[:, None, :].expand(B, r, r))
    dst = b.gather(1, first_max(s_ab, tol))
    keep = torch.cat([b, order[:, 2 * r :]], dim=1)
    return MergePlan(src=a, dst=dst, keep=keep, keep_order=keep_order)


@torch.no_grad()
def tome_plan(metric: torch.Tensor, r: int, keep_order: bool = False, num_prefix: int = 0) -> MergePlan:
    """ToMe bipartite soft matching on the mergeable tokens' metric (B, T, c), as the original ToMe.

    The parity is counted over the whole sequence, protected prefix included: mergeable token i (0-based) is in A when
    (i + num_prefix) is even, else in B (with one CLS the sources are the odd patch positions). Each A token scores its
    best cosine match in B, and the r A tokens with the highest scores (stable order on ties) merge into their match.

    Output order (`keep_order=False`, the default): the original ToMe's, on which its next layer's parity split
    depends: the unmerged A tokens, then every B token in position order. Behind a protected prefix the unmerged A
    tokens are in position order (the original sorts them behind its class token); with no prefix they are in the
    order of their scores, highest first, as the original leaves them. `keep_order=True`: every survivor in its
    original (spatial) order, as the other selections (docs/algorithm.md, "What the code decided").
    """
    B, T, _ = metric.shape
    k = F.normalize(metric.float(), dim=-1)
    first = num_prefix % 2
    a = torch.arange(first, T, 2, device=metric.device).expand(B, -1)
    b = torch.arange(1 - first, T, 2, device=metric.device).expand(B, -1)
    plan = bipartite_matching(k[:, first::2] @ k[:, 1 - first :: 2].transpose(1, 2), a, b, r, keep_order)
    if keep_order:
        return plan
    unmerged = plan.keep[:, b.shape[1] :]  # bipartite_matching keeps B first, then the unmerged A in score order
    if num_prefix:
        unmerged = unmerged.sort(dim=1).values
    return plan._replace(keep=torch.cat([unmerged, b], dim=1))


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

    All T tokens are ranked by energy (highest first, `energy_order` as in `pitome_plan`); A = ranks 0, 2, 4, ..., B = ranks 1, 3, 5, .... Each A
    token scores its best cosine match in B, and the r A tokens with the highest scores merge into their match; the
    rest of A is kept. No token is protected: ToMe with the parity split replaced by an energy-rank split.
    """
    B, T, _ = metric.shape
    S = cosine_similarity_matrix(metric, dtype=energy_dtype(metric.device))
    tol = tie_tolerance(S.dtype, alpha)
    order = ranking(energy_score(S, margin, alpha, energy), tol)
    a, b = order[:, 0::2], order[:, 1::2]
    rows = S.gather(1, a[..., None].expand(B, a.shape[1], T))
    scores = rows.gather(2, b[:, None, :].expand(B, a.shape[1], b.shape[1]))
    return bipartite_matching(scores, a, b, r, keep_order, tolerance=tol)


def bipartite_matching(scores: torch.Tensor, a: torch.Tensor, b: torch.Tensor, r: int, keep_order: bool,
                       tolerance: float = 0.0) -> MergePlan:
    """ToMe's matching once the tokens are split into A and B (`tome_plan`: by parity; `pitome_bsm_plan`: by energy
    rank): `scores` (B, |A|, |B|) the cosine of each A token with each B token, `a` (B, |A|) and `b` (B, |B|) their
    indices. Each A token's best match in B; the r A tokens with the highest best score (stable order on ties) merge
    into it; B and the rest of A are kept. With a `tolerance` (pitome_bsm: `tie_tolerance`) scores that close tie, as
    in `ranking` and `first_max`; ToMe (0) keeps the plain maximum and stable sort of the original."""
    best, match = scores.max(dim=-1)
    if tolerance:
        match = first_max(scores, tolerance)
        ranked = ranking(best, tolerance)
    else:
        ranked = torch.sort(best, dim=1, descending=True, stable=True).indices
    src = a.gather(1, ranked[:, :r])
    dst = b.gather(1, match.gather(1, ranked[:, :r]))
    keep = torch.cat([b, a.gather(1, ranked[:, r:])], dim=1)
    return MergePlan(src=src, dst=dst, keep=keep, keep_order=keep_order)


# ----------------------------------------------------------------------------------------------------------------
# Applying a plan (differentiable)
# ----------------------------------------------------------------------------------------------------------------
def _new_positions(plan: MergePlan, num_mergeable: int) -> torch.Tensor:
    """(B, T) index of the output token that each input mergeable token ends up in."""
    B = plan.src.shape[0]
    if plan.keep_order:  # survivors numbered by a running count in their original order: no sort
        gone = torch.zeros(B, num_mergeable, dtype=torch.bool, device=plan.src.device).scatter_(1, plan.src, True)
        pos = gone.logical_not_().cumsum(1).sub_(1)
    else:
        K = plan.keep.shape[1]
        pos = torch.empty(B, num_mergeable, dtype=torch.long, device=plan.keep.device)
        pos.scatter_(1, plan.keep, torch.arange(K, device=pos.device).expand(B, K))
    return pos.scatter_(1, plan.src, pos.gather(1, plan.dst))


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
    pos = _new_positions(plan, N - p)
    keep = plan.keep
    if plan.keep_order:  # survivors to their output slots (a scatter, not a sort)
        keep = torch.empty_like(keep).scatter_(1, pos.gather(1, keep), keep)
    K = keep.shape[1]
    dst_out = pos.gather(1, plan.dst)  # (B, r) destination index among the mergeable outputs
    mergeable = sizes[:, p:]
    src_s = mergeable.gather(1, plan.src)
    den = mergeable.gather(1, keep).scatter_add_(1, dst_out, src_s)  # (B, K) new sizes
    base = torch.arange(p, B * N + p, N, device=x.device)[:, None]  # each row's first mergeable token, flat
    rows = keep + base
    if p:
        rows = torch.cat([torch.arange(-p, 0, device=x.device) + base, rows], dim=1)
    flat = x.reshape(B * N, C)
    out = flat.index_select(0, rows.reshape(-1))  # (B * (p + K), C): prefix and survivors, in output order
    work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    src_x = flat.index_select(0, (plan.src + base).reshape(-1)).to(work)
    dst_x = flat.index_select(0, (plan.dst + base).reshape(-1)).to(work)
    weight = (src_s / den.gather(1, dst_out)).reshape(-1, 1).to(work)
    out_rows = (dst_out + torch.arange(p, B * (p + K) + p, p + K, device=x.device)[:, None]).reshape(-1)
    out.index_put_((out_rows,), ((src_x - dst_x) * weight).to(x.dtype), accumulate=True)
    new_sizes = torch.cat([sizes[:, :p], den], dim=1) if p else den
    return out.view(B, p + K, C), new_sizes, pos


def update_token_map(token_map: torch.Tensor, positions: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """token_map (B, N0): index of the current token holding each original token; positions from `apply_plan`."""
    p = num_prefix
    B = positions.shape[0]
    full = torch.cat([torch.arange(p, device=positions.device).expand(B, p), positions + p], dim=1)
    return full.gather(1, token_map)


def select_plan(metric: torch.Tensor, r: int, layer: LayerValues, num_prefix: int = 0,
                valid: Optional[torch.Tensor] = None) -> MergePlan:
    """The plan of one selection (`layer.method`: "pitome", "tome" or "pitome_bsm") merging r of the mergeable tokens
    `metric` (B, T, c). `num_prefix` is the protected prefix before them (ToMe's parity counts it); `valid` (padding
    mask of the mergeable tokens) is honoured by "pitome" only."""
    method, margin, alpha, energy, split, keep_order = layer
    if method == "tome":
        return tome_plan(metric, r, keep_order=keep_order, num_prefix=num_prefix)
    if method == "pitome_bsm":
        return pitome_bsm_plan(metric, r, margin=margin, alpha=alpha, energy=energy, keep_order=keep_order)
    if method == "pitome":
        return pitome_plan(metric, r, margin=margin, alpha=alpha, energy=energy, split=split, keep_order=keep_order,
                           valid=valid)
    raise ValueError(f"merge_method={method!r} merges nothing; r must be 0, got {r}.")


def merge_tokens(x: torch.Tensor, metric: torch.Tensor, sizes: torch.Tensor, r: int, layer: LayerValues,
                 num_prefix: int, valid: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One merge step on a full sequence x (B, N, C) with metric (B, N, c): select r tokens to merge away on the
    mergeable part (after the `num_prefix` protected tokens) with the layer's values (`LayerValues`, from
    `MergeSettings.layer_values`), then merge. `valid` (padding mask) is honoured by the "pitome" selection only;
    padded batches go through `PaddedMergeState`, which packs real tokens first. Returns (x', sizes', positions)."""
    plan = select_plan(metric[:, num_prefix:], r, layer, num_prefix,
                       valid=None if valid is None else valid[:, num_prefix:])
    return apply_plan(x, sizes, plan, num_prefix)


def proportional_attention_bias(sizes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """log(size) of each key as an additive attention mask of shape (B, 1, 1, N)."""
    return torch.log(sizes)[:, None, None, :].to(dtype)


def weighted_mean(x: torch.Tensor, sizes: Optional[torch.Tensor]) -> torch.Tensor:
    """Size-weighted mean over tokens: (B, N, C), (B, N) -> (B, C). Plain mean when sizes is None. A row whose sizes
    are all 0 (only padding) gives zeros, as sentence-transformers' mean pooling (denominator clamped to 1e-9)."""
    if sizes is None:
        return x.mean(dim=1)
    w = sizes.to(x.dtype)[..., None]
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1e-9)

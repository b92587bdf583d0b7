# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Reducing one image's (or video's) visual tokens to a budget: pure tensor functions, torch only.

* `reduce_to_budget`: PiToMe / ToMe / pitome_bsm down to k tokens, in as many bipartite steps as needed (one step
  can remove at most half of the tokens: r = min(n - k, floor(n / 2)) per step). Each step is `merging.py`'s
  selection (`pitome_plan`, `tome_plan`, `pitome_bsm_plan`) and `apply_plan` (the size-weighted merge), on the
  features and on the metric (a merged token's metric is the size-weighted mean of its tokens' metrics).
* `visionzip_plan` / `visionzip_select`: a VisionZip-style selection (Yang et al., arXiv 2412.04467): "dominant"
  tokens, those receiving the most attention in the vision tower, are kept as they are; the rest are merged into a
  few "contextual" tokens: targets spaced uniformly among the remaining tokens (in their original order), every other
  remaining token joins its most similar target (cosine of the metric). VisionZip's towers have a CLS token and rank
  by the attention CLS pays; Qwen2.5-VL's tower has none, so the ranking is by the attention mass a token receives
  (`attention_received`: mean over heads, sum over queries). A contextual token here is the size-weighted mean of
  its target and the tokens assigned to it (`apply_plan`), like every merged token of this package.
* `attention_received`: that attention mass, from one block's (rotary-embedded) queries and keys, segment by
  segment (the block's own attention groups).
* `divprune_order` / `divprune_select`: DivPrune (Alvar et al., CVPR 2025): the subset of k tokens that maximises the
  minimum pairwise cosine distance (1 - cos) of the features, by the paper's greedy max-min selection: the first token
  is the one whose nearest other token is farthest (max over i of min over j != i of the distance), then, k - 1
  times, the token whose distance to its nearest selected token is largest.
* `dart_plan` / `dart_select`: DART (Wen et al., 2025): `DART_PIVOTS` pivot tokens (those of largest L1 norm), then,
  pivot by pivot, the tokens least duplicated with (least cosine-similar to) that pivot, the rest of the budget split
  evenly among the pivots. The paper prunes after an early language-model layer and reads that layer's keys for the
  pivots; here it acts where the other selections act, on the features the language model receives at its input.

DivPrune and DART are pure selections: every kept token is a stock token (size 1), a dropped one is held by none
(-1 in `token_map`). Scores are in `merging.energy_dtype` (float64), and scores within `merging.tie_tolerance` of each
other tie, the tie going to the lower index (the merge core's rule for exact ties that rounding splits).

Every function returns, besides the reduced tokens, their sizes (how many input tokens each holds), `kept` (for each
output token the input index of the surviving token it is, the destination of what it absorbed: positions are read
there) and `token_map` (for each input token the output token holding it). Outputs keep the original order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .merging import (
    LayerValues, MergePlan, apply_plan, energy_dtype, first_max, ranking, select_plan, tie_tolerance, tokens_kept,
    update_token_map,
)

# VisionZip's published splits (dominant + contextual): 54 + 10 of 64, 108 + 20 of 128, 162 + 30 of 192.
CONTEXTUAL_FRACTION = 10 / 64


def contextual_count(keep: int, num_tokens: int) -> int:
    """Contextual tokens of a VisionZip-style budget of `keep` out of `num_tokens`: round(keep * 10 / 64), at least
    one whenever tokens are dropped (so nothing is discarded: every token is kept or merged), at most `keep`."""
    if keep >= num_tokens:
        return 0
    return min(keep, max(1, round(keep * CONTEXTUAL_FRACTION)))


def _check_budget(keep: int, x: torch.Tensor) -> int:
    """The input's token count n, once `keep` is known to be in 1..n (`merging.tokens_kept`, the budget rule)."""
    n = x.shape[0]
    tokens_kept(n, visual_tokens=keep)
    return n


def reduce_to_budget(x: torch.Tensor, metric: torch.Tensor, keep: int, layer: LayerValues):
    """x (n, C), metric (n, c) -> (x' (keep, C), sizes (keep,) float32, kept (keep,), token_map (n,)).

    Bipartite steps of the selection `layer.method` (with the layer's values) until `keep` tokens remain, each
    removing r = min(current - keep, floor(current/2))."""
    n = _check_budget(keep, x)
    x, metric = x[None], metric[None]
    sizes = torch.ones(1, n, dtype=torch.float32, device=x.device)
    kept = torch.arange(n, device=x.device)[None]
    token_map = kept.clone()
    while x.shape[1] > keep:
        T = x.shape[1]
        plan = select_plan(metric, min(T - keep, T // 2), layer)
        x_new, sizes_new, pos = apply_plan(x, sizes, plan, 0)
        metric = apply_plan(metric, sizes, plan, 0)[0]
        kept = kept.gather(1, plan.output_order())
        token_map = update_token_map(token_map, pos, 0)
        x, sizes = x_new, sizes_new
    return x[0], sizes[0], kept[0], token_map[0]


def reduce_input(x: torch.Tensor, metric: torch.Tensor, keep: int, settings, received: torch.Tensor = None):
    """One input (image, video, or part of one) reduced to `keep` tokens by the settings (`MergeSettings`) of the one
    reduction point, by `settings.visual_selection`: "visionzip" (`visionzip_select`; `received`, the attention mass
    each token receives, must be given), "divprune" (`divprune_select`) and "dart" (`dart_select`), both on the
    features x themselves (the metric is not read), or "merge": `reduce_to_budget` with the settings' method, margin,
    alpha, energy and split. Returns (x' (keep, C), sizes (keep,) float32, kept (keep,) ascending stock indices,
    token_map (n,): the output token holding each input token, -1 for a dropped one)."""
    selection = getattr(settings, "visual_selection", "merge")
    if selection == "visionzip":
        if received is None:
            raise ValueError("visual_selection='visionzip' ranks tokens by the attention they receive: the family must "
                             "pass received= (visual_reduction.attention_received).")
        return visionzip_select(x, metric, received, keep)
    if selection == "divprune":
        return divprune_select(x, keep)
    if selection == "dart":
        return dart_select(x, keep)
    return reduce_to_budget(x, metric, keep, settings.layer_values(0))


def joined(parts, lengths) -> tuple:
    """The reductions of consecutive pieces of one input (`parts`: one (tokens, sizes, kept, token map) per piece;
    `lengths`: each piece's stock token count) as one reduction of the whole input: tokens and sizes concatenated,
    kept indices offset by the stock tokens before the piece, token maps by the output tokens before it (a dropped
    token's -1 stays -1). E.g. a video reduced frame by frame."""
    tokens, sizes, kept, maps = zip(*parts)
    stock = [0]
    for n in lengths[:-1]:
        stock.append(stock[-1] + int(n))
    out = [0]
    for k in kept[:-1]:
        out.append(out[-1] + k.numel())
    kept = [k + a for k, a in zip(kept, stock)]
    maps = [torch.where(m >= 0, m + b, m) for m, b in zip(maps, out)]
    return torch.cat(tokens), torch.cat(sizes), torch.cat(kept), torch.cat(maps)


def follow_reduction(values: torch.Tensor, token_map: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Other per-token values of the same input (n, C') reduced by the same plan: output token j is the mean of the
    values of the stock tokens it holds (`token_map[i] == j`; a dropped token, -1, counts for none), i.e. the
    size-weighted mean every merge of this package computes, from unit sizes. For a pure selection each output
    token holds one stock token: its row is that token's row. Used for Qwen3-VL's DeepStack features."""
    held = token_map >= 0
    out = torch.zeros(sizes.shape[0], values.shape[-1], dtype=torch.float32, device=values.device)
    out.index_add_(0, token_map[held], values[held].float())
    return (out / sizes.to(out.device, torch.float32)[:, None]).to(values.dtype)


def attention_received(q: torch.Tensor, k: torch.Tensor, cu_seqlens, scaling: float) -> torch.Tensor:
    """Attention mass each token receives: q, k (N, H, d) of one block (as its attention uses them), segments
    `cu_seqlens` (the block's attention groups) -> (N,) float32, sum over the segment's queries of the softmax
    probability, mean over heads. Computed one head at a time (memory: one segment's N_s x N_s scores)."""
    N, H, _ = k.shape
    out = torch.zeros(N, dtype=torch.float32, device=k.device)
    bounds = [int(b) for b in cu_seqlens]
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end <= start:
            continue
        for h in range(H):
            scores = q[start:end, h].float() @ k[start:end, h].float().T * scaling
            out[start:end] += scores.softmax(dim=-1).sum(dim=0) / H
    return out


@torch.no_grad()
def visionzip_plan(metric: torch.Tensor, received: torch.Tensor, keep: int) -> MergePlan:
    """The VisionZip-style plan for one input of n tokens: metric (n, c), received (n,) -> a `MergePlan` (batch 1)
    whose `keep` holds the dominant tokens (the keep - c most attended, stable order on ties) and the c contextual
    targets, and whose sources are the other tokens, each merging into its most similar target."""
    n = metric.shape[0]
    device = metric.device
    if keep >= n:
        idx = torch.arange(n, device=device)[None]
        empty = idx[:, :0]
        return MergePlan(src=empty, dst=empty, keep=idx, keep_order=True)
    c = contextual_count(keep, n)
    order = torch.sort(received.float(), descending=True, stable=True).indices
    dominant = order[: keep - c]
    rest = torch.ones(n, dtype=torch.bool, device=device).scatter_(0, dominant, False)
    remaining = torch.arange(n, device=device)[rest]  # original order
    step = max(1, remaining.numel() // c)
    pick = torch.zeros(remaining.numel(), dtype=torch.bool, device=device)
    pick[torch.arange(0, remaining.numel(), step, device=device)[:c]] = True
    targets, others = remaining[pick], remaining[~pick]
    unit = F.normalize(metric.float(), dim=-1)
    dst = targets[(unit[others] @ unit[targets].T).argmax(dim=-1)]
    return MergePlan(src=others[None], dst=dst[None], keep=torch.cat([dominant, targets])[None], keep_order=True)


def visionzip_select(x: torch.Tensor, metric: torch.Tensor, received: torch.Tensor, keep: int):
    """x (n, C) -> (x' (keep, C), sizes (keep,), kept (keep,), token_map (n,)): the VisionZip-style reduction."""
    n = _check_budget(keep, x)
    plan = visionzip_plan(metric, received, keep)
    sizes = torch.ones(1, n, dtype=torch.float32, device=x.device)
    out, new_sizes, pos = apply_plan(x[None], sizes, plan, 0)
    return out[0], new_sizes[0], plan.output_order()[0], pos[0]


# ----------------------------------------------------------------------------------------------------------------
# Pure selections: DivPrune and DART
# ----------------------------------------------------------------------------------------------------------------
DART_PIVOTS = 8  # DART's pivot tokens per input (fewer when the budget is smaller)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of x L2-normalised, in the selections' score dtype (`merging.energy_dtype`)."""
    return F.normalize(x.detach().to(energy_dtype(x.device)), dim=-1)


def _selected(x: torch.Tensor, kept: torch.Tensor):
    """A pure selection's outputs: (x[kept], unit sizes, kept, token_map with -1 for the dropped tokens)."""
    token_map = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    token_map[kept] = torch.arange(kept.numel(), device=x.device)
    return x[kept], torch.ones(kept.numel(), dtype=torch.float32, device=x.device), kept, token_map


@torch.no_grad()
def divprune_order(features: torch.Tensor, keep: int) -> torch.Tensor:
    """DivPrune's greedy max-min selection on features (n, C): (keep,) token indices in the order they are picked.

    Distance d(i, j) = 1 - cos(f_i, f_j). First the token whose nearest other token is farthest (argmax over i of
    min over j != i of d(i, j)); then, while fewer than `keep` are picked, the unpicked token whose distance to its
    nearest picked token is largest. Ties (within `merging.tie_tolerance`) go to the lower index."""
    unit = _unit_rows(features)
    n = unit.shape[0]
    distance = 1.0 - unit @ unit.T
    tol = tie_tolerance(distance.dtype)
    if n == 1:
        return torch.zeros(1, dtype=torch.long, device=features.device)
    others = distance.clone().fill_diagonal_(float("inf"))
    first = first_max(others.amin(dim=1), tol)
    order = [first]
    taken = torch.zeros(n, dtype=torch.bool, device=features.device)
    taken[first] = True
    nearest = distance[first].clone()  # each token's distance to its nearest picked token
    for _ in range(keep - 1):
        pick = first_max(nearest.masked_fill(taken, float("-inf")), tol)
        order.append(pick)
        taken[pick] = True
        nearest = torch.minimum(nearest, distance[pick])
    return torch.stack(order)


def divprune_select(x: torch.Tensor, keep: int):
    """x (n, C) -> (x' (keep, C), sizes (keep,) ones, kept (keep,) ascending, token_map (n,) with -1 for the dropped):
    DivPrune's max-min diverse subset of the features x, in the original order."""
    n = _check_budget(keep, x)
    if keep >= n:
        return _selected(x, torch.arange(n, device=x.device))
    return _selected(x, divprune_order(x, keep).sort().values)


@torch.no_grad()
def dart_plan(features: torch.Tensor, keep: int, pivots: int = DART_PIVOTS) -> tuple[torch.Tensor, torch.Tensor]:
    """DART on features (n, C): (the pivot indices, highest L1 norm first; the kept indices, ascending).

    p = min(pivots, keep) pivots: the tokens of largest L1 norm (ties, within `merging.tie_tolerance` times the
    largest norm, to the lower index). The other keep - p places are split evenly among the pivots in that order (the
    first (keep - p) mod p pivots take one more); pivot by pivot, its share is the not yet kept tokens of lowest
    cosine similarity to it (its least duplicated ones; ties to the lower index)."""
    feats = features.detach().to(energy_dtype(features.device))
    n = feats.shape[0]
    p = min(pivots, keep)
    norms = feats.abs().sum(dim=-1)
    tol = tie_tolerance(feats.dtype)
    pivot = ranking(norms[None], tol * max(1.0, float(norms.max())))[0, :p]
    unit = F.normalize(feats, dim=-1)
    similarity = unit[pivot] @ unit.T  # (p, n): duplication of every token with each pivot
    taken = torch.zeros(n, dtype=torch.bool, device=features.device)
    taken[pivot] = True
    share, extra = divmod(keep - p, p)
    for i in range(p):
        count = share + (1 if i < extra else 0)
        if count == 0:
            break
        least = ranking((-similarity[i]).masked_fill(taken, float("-inf"))[None], tol)[0, :count]
        taken[least] = True
    return pivot, taken.nonzero()[:, 0]


def dart_select(x: torch.Tensor, keep: int, pivots: int = DART_PIVOTS):
    """x (n, C) -> (x' (keep, C), sizes (keep,) ones, kept (keep,) ascending, token_map (n,) with -1 for the dropped):
    DART's pivots and their least duplicated tokens, in the original order."""
    n = _check_budget(keep, x)
    if keep >= n:
        return _selected(x, torch.arange(n, device=x.device))
    return _selected(x, dart_plan(x, keep, pivots)[1])


__all__ = ["DART_PIVOTS", "attention_received", "contextual_count", "dart_plan", "dart_select", "divprune_order",
           "divprune_select", "follow_reduction", "joined", "reduce_input", "reduce_to_budget", "visionzip_plan",
           "visionzip_select"]

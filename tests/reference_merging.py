"""An independent implementation of the selections in docs/algorithm.md, written for the tests only.

Deliberately plain: one sample at a time, Python lists and loops, float64, Python's stable `sorted` and first-maximum
`max`. It imports nothing from pitome_hf. The project's batched tensor code is compared with it token for token
(tests/test_faithful.py), so a mistake in either one shows up as a disagreement.

Every function takes one sample's mergeable-token metric `K` (T, c) as a tensor and returns a `Plan` of plain lists:
`pairs` is the sorted list of (source, destination) indices (0-based among the mergeable tokens) and `keep` the
surviving tokens in original order.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class Plan(NamedTuple):
    pairs: list  # sorted (source, destination) pairs
    keep: list  # survivors in original order


def cosine(K: torch.Tensor) -> list:
    """S[i][j] = cos(K_i, K_j) in float64, pair by pair."""
    rows = [[float(v) for v in row] for row in K.double()]
    norms = [math.sqrt(sum(v * v for v in row)) or 1.0 for row in rows]
    unit = [[v / n for v in row] for row, n in zip(rows, norms)]
    return [[sum(a * b for a, b in zip(u, w)) for w in unit] for u in unit]


def margin_at(layer: int, num_layers: int, m0: float, m_end: float = 0.0) -> float:
    """m_l = m0 - (m0 - m_end) * l / L."""
    return m0 - (m0 - m_end) * layer / num_layers


def energy(S: list, margin: float, alpha: float = 1.0, kind: str = "exp") -> list:
    """E_i = mean_j f(S_ij)."""

    def f(x):
        if kind == "exp":
            return x if x >= margin else alpha * (math.exp(x - margin) - 1.0)
        if kind == "elu":
            y = x - margin
            return y if y > 0 else alpha * (math.exp(y) - 1.0)
        if kind == "gaussian":
            return math.exp(-0.5 * ((1.0 - x) / (1.0 - margin)) ** 2)
        raise ValueError(kind)

    return [sum(f(x) for x in row) / len(row) for row in S]


TIE = 64 * 2.0**-52  # energies closer than this (times max(1, alpha)) are tied: docs/algorithm.md, "The merge step"


def descending(items: list, value, tol: float) -> list:
    """`items` by `value`, highest first. Walking down that order, an item within `tol` of the one before it joins
    its run of ties; each run keeps the items' given order."""
    place = {item: k for k, item in enumerate(items)}
    runs = []
    for item in sorted(items, key=lambda i: -value(i)):
        if runs and value(runs[-1][-1]) - value(item) <= tol:
            runs[-1].append(item)
        else:
            runs.append([item])
    return [item for run in runs for item in sorted(run, key=place.get)]


def by_energy(E: list, alpha: float = 1.0) -> list:
    """Token indices, highest energy first, ties (within the tolerance) in index order."""
    return descending(list(range(len(E))), E.__getitem__, TIE * max(1.0, alpha))


def _best(S, a, candidates, tol=0.0):
    """The first candidate (in the given order) with the highest similarity to a, or within `tol` of it."""
    top = max(S[a][b] for b in candidates)
    return next(b for b in candidates if S[a][b] >= top - tol)


def pitome(K, r, margin, alpha=1.0, kind="exp", split="alternate") -> Plan:
    """The protected PiToMe step: the 2r highest-energy tokens are mergeable, split alternately (or top r / next r);
    each A token merges into its most similar B token; everything else is kept."""
    S = cosine(K)
    order = by_energy(energy(S, margin, alpha, kind), alpha)
    if split == "alternate":
        A, B = order[0 : 2 * r : 2], order[1 : 2 * r : 2]
    else:
        A, B = order[:r], order[r : 2 * r]
    pairs = sorted((a, _best(S, a, B, TIE * max(1.0, alpha))) for a in A)
    keep = sorted(B + order[2 * r :])
    return Plan(pairs, keep)


def _bipartite(S, A, B, r, tol=0.0) -> Plan:
    """Score each a in A by its best match in B; the r best-scoring A tokens (stable on ties, within `tol`) merge."""
    best = {a: _best(S, a, B, tol) for a in A}
    ranked = descending(A, lambda a: max(S[a][b] for b in B), tol)
    pairs = sorted((a, best[a]) for a in ranked[:r])
    keep = sorted(B + ranked[r:])
    return Plan(pairs, keep)


def tome(K, r, num_prefix, spatial=False) -> Plan:
    """Original ToMe: parity over the whole sequence, prefix included (mergeable i is in A when i + p is even). `keep`
    in the original's output order: the unmerged A tokens (by position behind a prefix, by score without one), then
    B by position; `spatial`: every survivor by position."""
    S = cosine(K)
    T = len(S)
    A = [i for i in range(T) if (i + num_prefix) % 2 == 0]
    B = [i for i in range(T) if (i + num_prefix) % 2 == 1]
    plan = _bipartite(S, A, B, r)
    if spatial:
        return plan
    best = {a: max(S[a][b] for b in B) for a in A}
    unmerged = [a for a in sorted(A, key=lambda a: -best[a]) if a not in {s for s, _ in plan.pairs}]
    return Plan(plan.pairs, (sorted(unmerged) if num_prefix else unmerged) + B)


def pitome_bsm(K, r, margin, alpha=1.0, kind="exp") -> Plan:
    """Energy-ordered bipartite matching: all tokens by energy, A = even ranks, B = odd ranks, then ToMe's matching."""
    S = cosine(K)
    order = by_energy(energy(S, margin, alpha, kind), alpha)
    return _bipartite(S, order[0::2], order[1::2], r, TIE * max(1.0, alpha))


def merge(x: torch.Tensor, sizes: list, plan: Plan, num_prefix: int):
    """Size-weighted average of one sample x (N, C) with sizes (N,): x_b <- (s_b x_b + sum s_a x_a) / (s_b + sum s_a).
    Returns (x', sizes') with the prefix first and the survivors in `plan.keep` order, in float64."""
    p = num_prefix
    x = x.double()
    into = {b: [] for b in plan.keep}
    for a, b in plan.pairs:
        into[b].append(a)
    rows, new_sizes = [x[i] for i in range(p)], [sizes[i] for i in range(p)]
    for b in plan.keep:
        members = [b] + into[b]
        total = sum(sizes[p + j] for j in members)
        rows.append(sum(sizes[p + j] * x[p + j] for j in members) / total)
        new_sizes.append(total)
    return torch.stack(rows), new_sizes


def budget(T: int, keep_ratio: float) -> int:
    """r = floor(T - T * rho) in float64, at most floor(T / 2)."""
    return min(math.floor(T - T * keep_ratio), T // 2)

"""An independent implementation of the visual selections of modeling/visual_reduction.py, written for the tests only.

Written from the definitions (docs/vlm.md; the papers: VisionZip, Yang et al., arXiv 2412.04467; DivPrune, Alvar et
al., CVPR 2025; DART, Wen et al., 2025), deliberately plain: one input at a time, Python lists and loops, float64
(`reference_merging.cosine`), Python's stable `sorted`. It imports nothing from pitome_hf.
tests/test_visual_selections.py compares the project's tensor code with it token for token.

Every function takes one input's features (n, C) as a tensor (VisionZip also its metric and the attention each token
receives) and returns `Selection`: `kept`, the stock indices of the output tokens in original order, and `members`,
for each output token the stock indices it holds (a pure selection: the token alone).
"""

from __future__ import annotations

from typing import NamedTuple

from .reference_merging import TIE, cosine, descending


class Selection(NamedTuple):
    kept: list  # stock indices of the output tokens, ascending
    members: list  # for each output token, the stock indices it holds (ascending)


def _first_best(candidates: list, value, tol: float):
    """The first candidate (in the given order) whose value is the highest, or within `tol` of it."""
    top = max(value(i) for i in candidates)
    return next(i for i in candidates if value(i) >= top - tol)


def _pure(kept: list) -> Selection:
    kept = sorted(kept)
    return Selection(kept, [[i] for i in kept])


# ----------------------------------------------------------------------------------------------------------------
def divprune(features, keep: int) -> tuple[list, Selection]:
    """DivPrune's greedy solution of the max-min diversity problem, with d(i, j) = 1 - cos(f_i, f_j): the first token
    is the one whose nearest other token is farthest; each next one the unpicked token farthest from its nearest picked
    token; ties to the lower index. Returns (the tokens in the order picked, the selection)."""
    S = cosine(features)
    n = len(S)
    d = [[1.0 - S[i][j] for j in range(n)] for i in range(n)]
    if keep >= n:
        return list(range(n)), _pure(list(range(n)))
    if n == 1:
        picked = [0]
    else:
        picked = [_first_best(list(range(n)), lambda i: min(d[i][j] for j in range(n) if j != i), TIE)]
    while len(picked) < keep:
        rest = [i for i in range(n) if i not in picked]
        picked.append(_first_best(rest, lambda i: min(d[i][j] for j in picked), TIE))
    return picked, _pure(picked)


# ----------------------------------------------------------------------------------------------------------------
def dart(features, keep: int, pivots: int = 8) -> tuple[list, Selection]:
    """DART: min(pivots, keep) pivots, the tokens of largest L1 norm (ties within TIE x the largest norm to the lower
    index); the remaining keep - p places split evenly among the pivots in that order (the first (keep - p) mod p take
    one more); each pivot in turn keeps its share of the tokens not yet kept that are least cosine-similar to it (ties
    to the lower index). Returns (the pivots, the selection)."""
    rows = [[float(v) for v in row] for row in features.double()]
    n = len(rows)
    if keep >= n:
        return [], _pure(list(range(n)))
    norm = [sum(abs(v) for v in row) for row in rows]
    p = min(pivots, keep)
    chosen = descending(list(range(n)), norm.__getitem__, TIE * max(1.0, max(norm)))[:p]
    S = cosine(features)
    kept = list(chosen)
    rest = keep - p
    for rank, pivot in enumerate(chosen):
        count = rest // p + (1 if rank < rest % p else 0)
        candidates = [j for j in range(n) if j not in kept]
        kept += descending(candidates, lambda j: -S[pivot][j], TIE)[:count]
    return chosen, _pure(kept)


# ----------------------------------------------------------------------------------------------------------------
def visionzip(metric, received, keep: int) -> Selection:
    """VisionZip-style: c = round(keep * 10 / 64) contextual tokens (at least 1, at most keep, when tokens are
    dropped), the keep - c tokens receiving the most attention kept as they are (ties: the lower index first); of the
    other tokens, in original order, every floor(m / c)-th from the first is a target (c of them), and each remaining
    token joins the target of highest cosine similarity (first on ties); a contextual token holds its target and the
    tokens that joined it."""
    n = len(received)
    if keep >= n:
        return _pure(list(range(n)))
    c = min(keep, max(1, round(keep * 10 / 64)))
    attention = [float(v) for v in received]
    dominant = sorted(range(n), key=lambda i: -attention[i])[: keep - c]
    remaining = [i for i in range(n) if i not in dominant]
    step = max(1, len(remaining) // c)
    targets = remaining[0::step][:c]
    S = cosine(metric)
    groups = {t: [t] for t in targets}
    for j in remaining:
        if j not in groups:
            groups[_first_best(targets, lambda t: S[j][t], 0.0)].append(j)
    kept = sorted(dominant + targets)
    return Selection(kept, [sorted(groups.get(i, [i])) for i in kept])

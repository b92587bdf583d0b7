"""The visual selections of modeling/visual_reduction.py (VisionZip-style, DivPrune, DART) against an independent
implementation of their definitions (tests/reference_selections.py: plain Python, float64), token for token: the
kept stock tokens in order, what every output token holds, the output rows, the sizes and the token map; on inputs
built so that ties matter (exact copies, copies at other scales, sign-flipped and permuted copies, near copies, an
orthogonal basis), for several budgets; and through `reduce_input`, which picks the selection by
`settings.visual_selection`. The families end to end: tests/test_language_input_reduction.py, test_qwen2_5_vl.py,
test_llava_onevision.py (tests/vlm_cases.py lists the selections they run).
"""

from __future__ import annotations

import pytest
import torch

from pitome_hf.modeling.merge_config import MergeSettings
from pitome_hf.modeling.visual_reduction import (
    DART_PIVOTS, dart_plan, dart_select, divprune_order, divprune_select, follow_reduction, reduce_input,
    visionzip_select,
)

from . import reference_selections as ref

N = 24
BUDGETS = [1, 2, 5, 8, 9, 13, 23, 24]


def tricky(seed: int, n: int = N, c: int = 6) -> torch.Tensor:
    """n float32 tokens of width c: random ones, then exact copies, copies at scale 2 (exact) and 3 (rounded: ties
    that rounding splits), sign flips (same L1 norm, cosine -1), a permuted copy (same L1 norm up to rounding) and a
    near copy (1e-3 apart: a gap the float64 scores resolve), placed among the random ones."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g)
    x[5], x[9], x[20] = x[2], 2 * x[2], 3 * x[7]  # copies of 2 and 7
    x[11], x[14] = -x[3], -x[3]  # two sign-flipped copies of 3: tied least duplicated with 3
    x[16] = x[4][torch.randperm(c, generator=g)]  # same L1 norm as 4
    x[18] = x[0] + 1e-3 * torch.randn(c, generator=g)
    x[22] = x[2]
    return x[torch.randperm(n, generator=g)]


def basis(n: int = 12, c: int = 8) -> torch.Tensor:
    """An orthogonal basis and copies: every distance between distinct directions is exactly 1, so each choice is a
    tie and the lower index must win."""
    x = torch.zeros(n, c)
    for i in range(n):
        x[i, i % c] = 1.0 + (i // c)  # tokens c.. repeat the directions at scale 2
    return x


INPUTS = [("tricky0", lambda: tricky(0)), ("tricky1", lambda: tricky(1)), ("tricky2", lambda: tricky(2)),
          ("random", lambda: torch.randn(N, 6, generator=torch.Generator().manual_seed(7))), ("basis", basis)]


def check_against(out, want: ref.Selection, x: torch.Tensor) -> None:
    """The project's (x', sizes, kept, token_map) against the reference's selection of the same input."""
    reduced, sizes, kept, token_map = out
    assert kept.tolist() == want.kept
    holders = [[i for i in range(x.shape[0]) if token_map[i] == j] for j in range(len(want.kept))]
    assert holders == want.members
    assert set((token_map == -1).nonzero()[:, 0].tolist()) == set(range(x.shape[0])) - {i for m in want.members
                                                                                        for i in m}
    assert sizes.dtype == torch.float32 and sizes.tolist() == [float(len(m)) for m in want.members]
    torch.testing.assert_close(reduced, torch.stack([x[m].mean(0) for m in want.members]), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, make", INPUTS, ids=[name for name, _ in INPUTS])
def test_divprune_is_the_greedy_max_min_selection_token_for_token(name, make):
    x = make()
    for keep in [k for k in BUDGETS if k <= x.shape[0]]:
        picked, want = ref.divprune(x, keep)
        if keep < x.shape[0]:
            assert divprune_order(x, keep).tolist() == picked, keep
        out = divprune_select(x, keep)
        check_against(out, want, x)
        assert torch.equal(out[0], x[out[2]])  # stock tokens, unchanged


def test_divprune_starts_from_the_token_whose_nearest_neighbour_is_farthest():
    """Three tight pairs and one isolated token: the isolated one is picked first (its nearest token is the farthest
    of all), then the pairs' members one per pair before any second member."""
    g = torch.Generator().manual_seed(3)
    centres = torch.eye(4)
    x = torch.cat([centres[:3].repeat_interleave(2, 0) + 0.01 * torch.randn(6, 4, generator=g), centres[3:]])
    order = divprune_order(x, 4).tolist()
    assert order[0] == 6 and sorted(i // 2 for i in order[1:]) == [0, 1, 2]
    assert order == ref.divprune(x, 4)[0]


@pytest.mark.parametrize("name, make", INPUTS, ids=[name for name, _ in INPUTS])
def test_dart_keeps_pivots_and_their_least_duplicated_tokens_token_for_token(name, make):
    x = make()
    for keep in [k for k in BUDGETS if k <= x.shape[0]]:
        pivots, want = ref.dart(x, keep)
        if keep < x.shape[0]:
            got_pivots, kept = dart_plan(x, keep)
            assert got_pivots.tolist() == pivots and kept.tolist() == want.kept, keep
        out = dart_select(x, keep)
        check_against(out, want, x)
        assert torch.equal(out[0], x[out[2]])


def test_dart_pivots_are_the_largest_l1_norms_and_each_keeps_its_share():
    """Pivots by L1 norm (not L2: the two orders differ here); with 3 pivots and 7 places the shares are 2, 1, 1
    (the first pivot takes the remainder); every pivot's share are the tokens least similar to it."""
    x = torch.tensor([[3.0, 0.0], [2.0, 2.0], [0.0, 2.5], [1.0, 0.1], [0.1, 1.0], [-1.0, 0.2], [0.3, -1.0],
                      [-0.5, -0.5], [0.7, 0.7], [-0.2, 1.1]])
    pivots, kept = dart_plan(x, 7, pivots=3)
    assert pivots.tolist() == [1, 0, 2]  # L1 4.0, 3.0, 2.5 (L2 would rank 0 first)
    assert kept.tolist() == ref.dart(x, 7, pivots=3)[1].kept
    # by hand: pivot 1 (45 deg) keeps its two least similar (-0.5,-0.5) and (-1,0.2); pivot 0 (0 deg) then
    # (-0.2,1.1); pivot 2 (90 deg) then (0.3,-1)
    assert kept.tolist() == [0, 1, 2, 5, 6, 7, 9]
    assert DART_PIVOTS == 8 and dart_plan(x, 9)[0].numel() == 8 and dart_plan(x, 3)[0].numel() == 3


# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_visionzip_style_is_dominant_plus_uniform_contextual_targets_token_for_token(seed):
    g = torch.Generator().manual_seed(seed)
    n = 40
    x, metric = torch.randn(n, 5, generator=g), torch.randn(n, 7, generator=g)
    received = torch.rand(n, generator=g)
    received[[3, 17, 30]] = float(received[8])  # tied attention: the lower index ranks first
    for keep in (1, 6, 13, 20, 33, 39, 40):
        check_against(visionzip_select(x, metric, received, keep), ref.visionzip(metric, received, keep), x)


def test_visionzip_targets_are_spaced_uniformly_and_gather_their_most_similar_tokens():
    """By hand: 8 tokens, keep 4 -> 1 contextual token (round(4 * 10 / 64) = 1), 3 dominant (the most attended);
    the contextual target is the first remaining token and every other remaining one joins it. Keep 20 of 40: 3
    contextual (round(3.125)), 17 dominant, the targets every 7th (floor(23 / 3)) of the 23 remaining."""
    x = torch.arange(16.0).reshape(8, 2)
    received = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.0, 0.05])
    reduced, sizes, kept, token_map = visionzip_select(x, x, received, 4)
    assert kept.tolist() == [0, 1, 3, 5] and sizes.tolist() == [5.0, 1.0, 1.0, 1.0]
    assert token_map.tolist() == [0, 1, 0, 2, 0, 3, 0, 0]
    metric = torch.randn(40, 3, generator=torch.Generator().manual_seed(5))
    received = torch.linspace(1, 0, 40)  # dominant: the first 17; remaining 17..39
    want = ref.visionzip(metric, received, 20)
    assert [k for k in want.kept if k >= 17] == [17, 24, 31]
    check_against(visionzip_select(metric, metric, received, 20), want, metric)


# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("selection", ["divprune", "dart", "visionzip", "merge"])
def test_reduce_input_dispatches_on_the_visual_selection(selection):
    """reduce_input runs the settings' selection: DivPrune and DART on the features (the metric is not read),
    VisionZip-style with the attention received, "merge" the merge method; a pure selection's token map marks the
    dropped tokens -1, and follow_reduction gives each output the row of the stock token it is."""
    x = tricky(4)
    metric = torch.randn(N, 3, generator=torch.Generator().manual_seed(9))
    settings = MergeSettings(num_layers=1, visual_selection=selection, keep_order=True, protected_tokens=0)
    received = torch.rand(N, generator=torch.Generator().manual_seed(2))
    out = reduce_input(x, metric, 7, settings, received=received if selection == "visionzip" else None)
    direct = {"divprune": lambda: divprune_select(x, 7), "dart": lambda: dart_select(x, 7),
              "visionzip": lambda: visionzip_select(x, metric, received, 7)}.get(selection)
    if direct is not None:
        for got, want in zip(out, direct()):
            assert torch.equal(got, want)
    else:
        assert (out[1] > 1).any()  # merged
    assert out[0].shape[0] == 7 and bool((out[2].diff() > 0).all())
    if selection in ("divprune", "dart"):
        assert int((out[3] == -1).sum()) == N - 7 and out[1].tolist() == [1.0] * 7
        assert torch.equal(reduce_input(x, torch.zeros(N, 3), 7, settings)[2], out[2])  # metric unread
        values = torch.randn(N, 4)
        assert torch.equal(follow_reduction(values, out[3], out[1]), values[out[2]])


def test_visionzip_without_the_attention_received_is_refused_in_one_line():
    settings = MergeSettings(num_layers=1, visual_selection="visionzip", keep_order=True, protected_tokens=0)
    with pytest.raises(ValueError, match="visual_selection='visionzip' ranks tokens by the attention") as info:
        reduce_input(torch.randn(6, 2), torch.randn(6, 2), 3, settings)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("select", [divprune_select, dart_select])
def test_pure_selections_check_the_budget(select):
    x = torch.randn(5, 3)
    assert select(x, 5)[2].tolist() == list(range(5))
    for keep in (0, 6):
        with pytest.raises(ValueError):
            select(x, keep)

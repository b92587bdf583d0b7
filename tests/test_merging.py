"""The merge core on plain tensors: budgets, schedule, PiToMe and ToMe selection, the size-weighted merge."""

import math

import pytest
import torch

from pitome_hf.modeling.merge_config import MergeSettings, token_schedule
from pitome_hf.modeling.merging import (
    apply_plan,
    energy_score,
    layer_budget,
    merge_tokens,
    pitome_plan,
    tome_plan,
    update_token_map,
)

VIT_B16_REFERENCE = [196, 177, 160, 144, 130, 117, 106, 96, 87, 79, 72, 65, 59]


def settings(**kw):
    kw.setdefault("num_layers", 12)
    return MergeSettings(**kw)


def run_layers(x, s, prefix=1, trace=True):
    """Merge x through every layer of `s` with the hidden states as metric; returns (x, sizes, token_map, counts)."""
    B, N, _ = x.shape
    sizes = torch.ones(B, N)
    token_map = torch.arange(N).expand(B, N).clone()
    counts = [N - prefix]
    for layer in range(s.num_layers):
        r = s.budget(x.shape[1] - prefix, layer)
        if r:
            x, sizes, pos = merge_tokens(x, x, sizes, r, s.layer_values(layer), prefix)
            token_map = update_token_map(token_map, pos, prefix)
        counts.append(x.shape[1] - prefix)
    return x, sizes, token_map, counts


def test_schedule_matches_reference_counts():
    assert token_schedule(settings(keep_ratio=0.9), num_tokens=196) == VIT_B16_REFERENCE


def test_schedule_clip_l14_336_reference():
    s = settings(keep_ratio=0.9, num_layers=24)
    assert token_schedule(s, num_tokens=576)[23] == 54
    assert token_schedule(settings(keep_ratio=0.925, num_layers=24), num_tokens=576)[23] == 101


def test_schedule_reads_a_config(vit_kwargs):
    from pitome_hf import PiToMeViTConfig

    assert token_schedule(PiToMeViTConfig(**vit_kwargs(), keep_ratio=0.9)) == VIT_B16_REFERENCE


@pytest.mark.parametrize("method", ["pitome", "tome"])
def test_merging_follows_schedule_and_sizes_sum(method):
    torch.manual_seed(0)
    s = settings(merge_method=method, keep_ratio=0.9)
    x = torch.randn(3, 197, 16)
    out, sizes, token_map, counts = run_layers(x, s)
    assert counts == VIT_B16_REFERENCE
    assert out.shape == (3, 60, 16)
    torch.testing.assert_close(sizes.sum(1), torch.full((3,), 197.0))
    # the token map and the sizes agree: each output token holds exactly `size` original tokens
    for b in range(3):
        torch.testing.assert_close(torch.bincount(token_map[b], minlength=60).float(), sizes[b])


def test_keep_ratio_below_half_clamps_instead_of_crashing():
    assert layer_budget(196, 0, keep_ratio=0.2) == 98
    s = settings(keep_ratio=0.1)
    assert token_schedule(s, num_tokens=196)[:4] == [196, 98, 49, 25]
    _, sizes, _, counts = run_layers(torch.randn(2, 197, 8), s)
    assert counts[-1] == 1 and sizes.sum().item() == 2 * 197


def test_budget_forms():
    assert layer_budget(196, 3, merge_r=8) == 8
    assert layer_budget(10, 3, merge_r=8) == 5  # clamped to floor(T/2)
    assert layer_budget(196, 2, merge_r=[0, 1, 2, 3]) == 2
    assert layer_budget(196, 2, keep_ratio=0.9, merge_layers=[0, 1]) == 0
    assert layer_budget(196, 0, method="none") == 0
    assert layer_budget(196, 0, keep_ratio=1.0) == 0
    assert token_schedule(settings(merge_r=8), num_tokens=196)[-1] == 196 - 12 * 8
    assert token_schedule(settings(merge_r=16), num_tokens=196)[-2:] == [20, 10]  # the last layer clamps


def test_protected_prefix_untouched():
    torch.manual_seed(1)
    x = torch.randn(2, 52, 8)
    out, sizes, _ = merge_tokens(x, x, torch.ones(2, 52), 10, settings().layer_values(0), 2)
    assert torch.equal(out[:, :2], x[:, :2])
    assert torch.equal(sizes[:, :2], torch.ones(2, 2))
    assert out.shape[1] == 42


@pytest.mark.parametrize("method", ["pitome", "tome"])
def test_batch_equals_samples_one_by_one(method):
    torch.manual_seed(2)
    s = settings(merge_method=method, keep_ratio=0.8)
    x = torch.randn(4, 65, 12)
    batched = run_layers(x, s)
    for b in range(4):
        single = run_layers(x[b : b + 1], s)
        torch.testing.assert_close(batched[0][b : b + 1], single[0], rtol=1e-5, atol=1e-6)
        assert torch.equal(batched[2][b : b + 1], single[2])


def test_deterministic():
    torch.manual_seed(3)
    x = torch.randn(2, 197, 16)
    # many exact ties: the stable sort must still give one answer
    x[:, 10:60] = x[:, 10:11]
    first, second = run_layers(x, settings()), run_layers(x.clone(), settings())
    assert torch.equal(first[0], second[0]) and torch.equal(first[2], second[2])


def test_zero_budget_is_identity():
    x = torch.randn(2, 20, 8)
    out, _, _, counts = run_layers(x, settings(merge_r=0))
    assert torch.equal(out, x) and counts == [19] * 13
    out, _, _, _ = run_layers(x, settings(keep_ratio=1.0))
    assert torch.equal(out, x)


def test_surviving_tokens_keep_original_order():
    torch.manual_seed(4)
    x = torch.randn(2, 40, 8)
    for plan in (pitome_plan(x, 10, margin=0.9), tome_plan(x, 10, keep_order=True)):
        order = plan.output_order()
        assert torch.all(order[:, 1:] > order[:, :-1])
        assert torch.equal(order, plan.keep.sort(dim=1).values)
        out, _, pos = apply_plan(x, torch.ones(2, 40), plan, num_prefix=0)
        untouched = [k for k in order[0].tolist() if k not in set(plan.dst[0].tolist())]
        rows = [order[0].tolist().index(k) for k in untouched]
        torch.testing.assert_close(out[0, rows], x[0, untouched])
        assert torch.equal(pos.gather(1, order), torch.arange(30).expand(2, 30))  # survivor j lands in slot j
    unordered = pitome_plan(x, 10, margin=0.9, keep_order=False)
    assert not torch.all(unordered.keep[:, 1:] > unordered.keep[:, :-1])
    out, _, pos = apply_plan(x, torch.ones(2, 40), unordered, num_prefix=0)
    assert torch.equal(pos.gather(1, unordered.keep), torch.arange(30).expand(2, 30))  # in the order of keep


def test_size_weighted_average():
    x = torch.tensor([[[1.0], [2.0], [10.0], [20.0]]])
    sizes = torch.tensor([[1.0, 3.0, 1.0, 1.0]])
    from pitome_hf.modeling.merging import MergePlan

    plan = MergePlan(src=torch.tensor([[0]]), dst=torch.tensor([[1]]), keep=torch.tensor([[1, 2, 3]]))
    out, new_sizes, _ = apply_plan(x, sizes, plan, num_prefix=0)
    torch.testing.assert_close(out, torch.tensor([[[(1 * 1 + 3 * 2) / 4], [10.0], [20.0]]]))
    torch.testing.assert_close(new_sizes, torch.tensor([[4.0, 1.0, 1.0]]))


def test_pitome_and_tome_choose_differently():
    """A 4-token cluster (high energy) and one near-duplicate pair (the single most similar pair).

    ToMe merges the pair (best bipartite match); PiToMe merges inside the cluster and protects the pair."""
    torch.manual_seed(5)
    base = torch.eye(8)
    cluster = base[0] + 0.05 * torch.randn(4, 8)
    pair = torch.stack([base[1], base[1] + 0.001 * base[2]])
    loners = torch.stack([base[3], base[4]])
    x = torch.cat([cluster, pair, loners])[None]  # positions 0-3 cluster, 4-5 pair, 6-7 loners
    tome = tome_plan(x, 1)
    pitome = pitome_plan(x, 1, margin=0.5)
    assert tome.src.tolist() == [[4]] and tome.dst.tolist() == [[5]]
    assert pitome.src.item() in {0, 1, 2, 3} and pitome.dst.item() in {0, 1, 2, 3}


def test_energy_formula():
    S = torch.tensor([[[1.0, 0.95, 0.2], [0.95, 1.0, 0.0], [0.2, 0.0, 1.0]]])
    m, a = 0.9, 0.5
    f = lambda v: v if v >= m else a * (math.exp(v - m) - 1)  # noqa: E731
    expected = torch.tensor([[sum(f(v) for v in row) / 3 for row in S[0].tolist()]])
    torch.testing.assert_close(energy_score(S, m, a), expected)
    elu = energy_score(S, m, a, kind="elu")
    assert elu.argsort().tolist() == energy_score(S, m, a).argsort().tolist()
    assert torch.all(energy_score(S, m, kind="gaussian") <= 1.0)


def test_margin_schedule():
    s = settings(margin=0.9)
    assert s.margin_at(0) == 0.9 and s.margin_at(6) == pytest.approx(0.45)
    assert settings(margin=0.9, margin_schedule="constant").margin_at(6) == 0.9


def test_merge_is_differentiable_and_scores_float32():
    x = torch.randn(2, 30, 8, requires_grad=True)
    out, _, _ = merge_tokens(x, x.detach(), torch.ones(2, 30), 7, settings().layer_values(0), 1)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    xb = torch.randn(2, 30, 8, dtype=torch.bfloat16)
    out_b, sizes_b, _ = merge_tokens(xb, xb, torch.ones(2, 30), 7, settings().layer_values(0), 1)
    assert out_b.dtype == torch.bfloat16 and sizes_b.dtype == torch.float32


def test_padding_is_never_merged():
    torch.manual_seed(6)
    x = torch.randn(1, 12, 8)
    valid = torch.tensor([[True] * 8 + [False] * 4])
    plan = pitome_plan(x, 3, margin=0.5, valid=valid, split="top", energy="gaussian")
    assert plan.src.max() < 8 and plan.dst.max() < 8


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(keep_ratio=1.5), "keep_ratio=1.5"),
        (dict(keep_ratio=0), "keep_ratio=0"),
        (dict(merge_method="bipartite"), "merge_method='bipartite'"),
        (dict(merge_r=-1), "merge_r=-1"),
        (dict(merge_r=[1, 2]), "12 layers"),
        (dict(merge_layers=[0, 12]), "outside 0..11"),
        (dict(margin=1.0), "margin=1.0"),
        (dict(alpha=0.0), "alpha=0.0"),
        (dict(energy="cosine"), "energy='cosine'"),
        (dict(merge_metric="values"), "merge_metric='values'"),
        (dict(protected_tokens=-1), "protected_tokens=-1"),
        (dict(trace_source="yes"), "trace_source='yes'"),
    ],
)
def test_invalid_settings_name_the_value(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("(", r"\(")):
        settings(**kwargs)

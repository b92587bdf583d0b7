"""The merge core against an independent implementation of docs/algorithm.md (tests/reference_merging.py), token for token.

Inputs are built so that every choice matters: clusters of different sizes (energy ranking), isolated tokens
(protected), near-duplicate pairs (ToMe's favourite), one destination with several sources. Each selection is checked
for several budgets and layers (the margin schedule), then end to end through a small ViT whose forward is rewritten
here from the stock layer's parts.
"""

import math

import pytest
import torch

from pitome_hf.modeling.merge_config import MergeSettings
from pitome_hf.modeling.merging import (
    merge_tokens,
    pitome_bsm_plan,
    pitome_plan,
    tome_plan,
)

from . import reference_merging as ref


def clustered(seed: int, T: int = 30, c: int = 16) -> torch.Tensor:
    """T tokens: clusters of 11, 7, 4 and 2 look-alikes (noise levels differ, so energies differ), the rest
    isolated, in a random spatial order."""
    g = torch.Generator().manual_seed(seed)
    parts, sizes = [], [11, 7, 4, 2]
    for k, n in enumerate(sizes):
        center = torch.randn(c, generator=g)
        parts.append(center + (0.15 + 0.1 * k) * torch.randn(n, c, generator=g))
    parts.append(torch.randn(T - sum(sizes), c, generator=g))
    x = torch.cat(parts)
    return x[torch.randperm(T, generator=g)]


def pairs_and_keep(plan, row=0):
    pairs = sorted(zip(plan.src[row].tolist(), plan.dst[row].tolist()))
    return pairs, plan.output_order()[row].tolist()


CASES = [(seed, r) for seed in range(6) for r in (1, 4, 9, 15)]
LAYERS = (0, 5, 11)  # of 12: margins 0.9, 0.525, 0.075


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("seed, r", CASES)
@pytest.mark.parametrize("energy", ["exp", "elu"])
def test_pitome_selection_matches_reference(seed, r, layer, energy):
    K = clustered(seed)
    s = MergeSettings(num_layers=12, energy=energy)
    margin = ref.margin_at(layer, 12, 0.9)
    assert s.margin_at(layer) == pytest.approx(margin)
    got = pairs_and_keep(pitome_plan(K[None], r, margin=s.margin_at(layer), energy=energy))
    assert got == tuple(ref.pitome(K, r, margin, kind=energy))


@pytest.mark.parametrize("seed, r", CASES)
def test_text_variant_selection_matches_reference(seed, r):
    """Gaussian energy and the top split (A = the r highest, B = the next r), the BERT preset's margin schedule."""
    K = clustered(seed)
    s = MergeSettings(num_layers=6, merge_preset="authors-bert")
    margin = ref.margin_at(2, 6, 0.9, 0.65)
    assert s.margin_at(2) == pytest.approx(margin)
    got = pairs_and_keep(pitome_plan(K[None], r, margin=margin, energy="gaussian", split="top"))
    assert got == tuple(ref.pitome(K, r, margin, kind="gaussian", split="top"))


@pytest.mark.parametrize("num_prefix", [0, 1, 2, 5])
@pytest.mark.parametrize("seed, r", CASES)
def test_tome_selection_matches_original_parity(seed, r, num_prefix):
    K = clustered(seed)
    got = pairs_and_keep(tome_plan(K[None], r, num_prefix=num_prefix))
    assert got == tuple(ref.tome(K, r, num_prefix))


@pytest.mark.parametrize("num_prefix", [0, 1, 2])
@pytest.mark.parametrize("seed, r", CASES)
def test_tome_spatial_order_is_an_option(seed, r, num_prefix):
    K = clustered(seed)
    got = pairs_and_keep(tome_plan(K[None], r, keep_order=True, num_prefix=num_prefix))
    assert got == tuple(ref.tome(K, r, num_prefix, spatial=True))


@pytest.mark.parametrize("class_token", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_tome_over_several_layers_is_the_original_token_for_token(seed, class_token):
    """Four merging layers, the output of each the next one's input: the same tokens in the same order with the same
    sizes as the original ToMe written in its own formulation (tests/reference_tome.py), by default."""
    from . import reference_tome

    p = int(class_token)
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.randn(3, p, 16, generator=g), torch.stack([clustered(seed + k, T=40) for k in range(3)])], 1)
    x = x.double()
    sizes = torch.ones(3, x.shape[1], dtype=torch.float64)
    want_x, want_sizes = x, sizes
    s = MergeSettings(num_layers=4, merge_method="tome")
    for layer, r in enumerate((6, 5, 8, 3)):
        x, sizes, _ = merge_tokens(x, x, sizes, r, s.layer_values(layer), p)
        want_x, want_sizes = reference_tome.tome_step(want_x, want_sizes, want_x, r, class_token=class_token)
        torch.testing.assert_close(x, want_x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sizes, want_sizes)


def test_tome_sources_are_odd_patches_behind_one_cls():
    """With CLS at position 0 the original ToMe's sources are the odd patch positions (sequence positions 2, 4, ...)."""
    K = clustered(0)
    plan = tome_plan(K[None], 15, num_prefix=1)
    assert sorted(plan.src[0].tolist()) == list(range(1, 30, 2))
    assert sorted(tome_plan(K[None], 15, num_prefix=0).src[0].tolist()) == list(range(0, 30, 2))


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("seed, r", CASES)
def test_pitome_bsm_selection_matches_reference(seed, r, layer):
    K = clustered(seed)
    margin = ref.margin_at(layer, 12, 0.75)
    got = pairs_and_keep(pitome_bsm_plan(K[None], r, margin=margin, energy="elu"))
    assert got == tuple(ref.pitome_bsm(K, r, margin, kind="elu"))


def tied(seed: int, offset: float = 0.0) -> torch.Tensor:
    """`clustered` in float64 with eight tokens replaced by copies of others at other scales: the same direction, so
    the same cosines and energies in exact arithmetic, which rounding splits by a few ulps either way (such ties go by
    index: docs/algorithm.md, "The merge step"). With `offset` the copies are moved off by that much: near-ties
    (about 1e-8 apart in energy at 1e-7) that float64 scores resolve and float32 scores would not."""
    K = clustered(seed).double()
    g = torch.Generator().manual_seed(100 + seed)
    idx = torch.randperm(len(K), generator=g)[:16].tolist()
    for i, j in zip(idx[:8], idx[8:]):
        K[j] = K[i] * (0.1 + 10 * torch.rand(1, generator=g, dtype=torch.float64))
        K[j] += offset * K[j].norm() * torch.randn(K.shape[1], generator=g, dtype=torch.float64)
    return K


@pytest.mark.parametrize("offset", [0.0, 1e-7])
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("seed, r", CASES)
def test_tied_energies_go_by_index_as_the_reference(seed, r, layer, offset):
    K = tied(seed, offset)
    margin = ref.margin_at(layer, 12, 0.9)
    assert pairs_and_keep(pitome_plan(K[None], r, margin=margin)) == tuple(ref.pitome(K, r, margin))
    assert pairs_and_keep(pitome_plan(K[None], r, margin=margin, split="top")) == tuple(
        ref.pitome(K, r, margin, split="top"))
    assert pairs_and_keep(pitome_bsm_plan(K[None], r, margin=margin)) == tuple(ref.pitome_bsm(K, r, margin))


def test_tied_inputs_hold_ties_that_rounding_splits():
    """The tied cases are only meaningful if rounding alone orders some exactly tied pair against its index order,
    and if the near-ties are closer than float32 energies can tell apart."""
    from pitome_hf.modeling.merging import cosine_similarity_matrix, energy_score, ranking

    against = unresolved = 0
    for seed in range(6):
        E = energy_score(cosine_similarity_matrix(tied(seed)[None], dtype=torch.float64), 0.9)
        plain = torch.sort(E, dim=1, descending=True, stable=True).indices
        against += not torch.equal(plain, ranking(E, 64 * 2.0**-52))
        E32 = energy_score(cosine_similarity_matrix(tied(seed, 1e-7)[None], dtype=torch.float32), 0.9)
        E64 = energy_score(cosine_similarity_matrix(tied(seed, 1e-7)[None], dtype=torch.float64), 0.9)
        unresolved += not torch.equal(torch.sort(E32, dim=1, descending=True, stable=True).indices,
                                      torch.sort(E64, dim=1, descending=True, stable=True).indices)
    assert against >= 2 and unresolved >= 2


def test_inputs_exercise_every_choice():
    """The cases above are only meaningful if they contain what the selections must get right."""
    many_to_one = protected_cluster = differs = 0
    for seed, r in CASES:
        K = clustered(seed)
        p = ref.pitome(K, r, 0.9)
        t = ref.tome(K, r, 1)
        dsts = [b for _, b in p.pairs]
        many_to_one += len(dsts) != len(set(dsts))
        differs += p.pairs != t.pairs
        protected_cluster += ref.pitome(K, r, 0.9) != ref.pitome(K, r, 0.075)  # the margin changes the choice
    assert many_to_one >= 5 and differs == len(CASES) and protected_cluster >= 5


@pytest.mark.parametrize("method", ["pitome", "tome", "pitome_bsm"])
@pytest.mark.parametrize("seed", range(4))
def test_merged_values_and_sizes_match_reference(method, seed):
    """apply_plan's size-weighted average against the reference's, with uneven incoming sizes and a prefix."""
    p, T = 1, 30
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.cat([torch.randn(1, 8, generator=g), clustered(seed, T=T, c=8)])[None]
    sizes = torch.cat([torch.ones(1), torch.randint(1, 6, (T,), generator=g).float()])[None]
    s = MergeSettings(num_layers=12, merge_method=method)
    r = 9
    out, new_sizes, _ = merge_tokens(x, x, sizes, r, s.layer_values(3), p)
    K = x[0, p:]
    margin = ref.margin_at(3, 12, 0.9)
    plan = {"pitome": lambda: ref.pitome(K, r, margin), "tome": lambda: ref.tome(K, r, p),
            "pitome_bsm": lambda: ref.pitome_bsm(K, r, margin)}[method]()
    want_x, want_sizes = ref.merge(x[0], sizes[0].tolist(), plan, p)
    torch.testing.assert_close(out[0].double(), want_x, rtol=1e-5, atol=1e-5)
    assert new_sizes[0].tolist() == want_sizes
    assert sum(want_sizes) == sizes.sum().item()


@pytest.mark.parametrize("method", ["pitome", "tome", "pitome_bsm"])
def test_batched_plans_equal_per_sample_reference(method):
    Ks = torch.stack([clustered(s) for s in range(5)])
    plan = {"pitome": lambda: pitome_plan(Ks, 7, margin=0.6), "tome": lambda: tome_plan(Ks, 7, num_prefix=1),
            "pitome_bsm": lambda: pitome_bsm_plan(Ks, 7, margin=0.6)}[method]()
    for b in range(5):
        want = {"pitome": lambda: ref.pitome(Ks[b], 7, 0.6), "tome": lambda: ref.tome(Ks[b], 7, 1),
                "pitome_bsm": lambda: ref.pitome_bsm(Ks[b], 7, 0.6)}[method]()
        assert pairs_and_keep(plan, b) == tuple(want)


def test_per_layer_methods_follow_the_list():
    s = MergeSettings(num_layers=4, merge_method=["pitome_bsm", "tome", "none", "pitome"], keep_ratio=0.7)
    K = clustered(3)
    x = torch.cat([torch.zeros(1, 16), K])[None]
    for layer, fn in enumerate([lambda r: ref.pitome_bsm(K, r, ref.margin_at(0, 4, 0.9)),
                                lambda r: ref.tome(K, r, 1), None,
                                lambda r: ref.pitome(K, r, ref.margin_at(3, 4, 0.9))]):
        r = s.budget(30, layer)
        if fn is None:
            assert r == 0
            continue
        assert r == ref.budget(30, 0.7)
        out, sizes, _ = merge_tokens(x, x, torch.ones(1, 31), r, s.layer_values(layer), 1)
        want_x, want_sizes = ref.merge(x[0], [1.0] * 31, fn(r), 1)
        torch.testing.assert_close(out[0].double(), want_x, rtol=1e-5, atol=1e-5)
        assert sizes[0].tolist() == want_sizes


# ------------------------------------------------------------------------------------------------------------------
# End to end: a small ViT, forward rewritten here from the stock layer's parts
# ------------------------------------------------------------------------------------------------------------------
def reference_vit_logits(model, pixels, method, keep_ratio, proportional=True, m0=0.9, m_end=0.0, kind="exp"):
    """One sample at a time: LN -> attention with +log(size) on the keys once merged -> residual -> merge (metric: the
    keys averaged over heads) -> LN -> MLP -> residual; final LN; classifier on CLS. Returns logits and counts."""
    vit, L = model.vit, model.config.num_hidden_layers
    methods = method if isinstance(method, list) else [method] * L
    all_logits, all_counts = [], []
    for b in range(pixels.shape[0]):
        x = vit.embeddings(pixels[b : b + 1])[0].double()
        sizes = [1.0] * x.shape[0]
        counts = [x.shape[0] - 1]
        merged = False
        for layer_idx, layer in enumerate(vit.layers):
            att = layer.attention
            h = layer.layernorm_before(x.float()).double()
            H, d = model.config.num_attention_heads, att.head_dim
            q, k, v = (proj(h.float()).double().view(-1, H, d).transpose(0, 1) for proj in (att.q_proj, att.k_proj, att.v_proj))
            logits = q @ k.transpose(1, 2) / math.sqrt(d)
            if merged and proportional:
                logits = logits + torch.tensor(sizes, dtype=torch.float64).log()[None, None, :]
            a = logits.softmax(-1) @ v
            x = x + att.o_proj(a.transpose(0, 1).reshape(x.shape[0], -1).float()).double()
            T = x.shape[0] - 1
            r = ref.budget(T, keep_ratio)
            if r and methods[layer_idx] != "none":
                K = k.mean(0)[1:].float()
                m = ref.margin_at(layer_idx, L, m0, m_end)
                plan = {"pitome": lambda: ref.pitome(K, r, m, kind=kind), "tome": lambda: ref.tome(K, r, 1),
                        "pitome_bsm": lambda: ref.pitome_bsm(K, r, m, kind=kind)}[methods[layer_idx]]()
                x, sizes = ref.merge(x, sizes, plan, 1)
                merged = True
            counts.append(x.shape[0] - 1)
            x = x + layer.mlp(layer.layernorm_after(x.float())).double()
        cls = vit.layernorm(x.float())[0]
        all_logits.append(model.classifier(cls))
        all_counts.append(counts)
    return torch.stack(all_logits), all_counts


@pytest.mark.parametrize(
    "settings",
    [
        dict(merge_method="pitome", keep_ratio=0.8),
        dict(merge_method="tome", keep_ratio=0.8),
        dict(merge_method="tome", keep_ratio=0.8, proportional_attention=False),
        dict(merge_preset="authors-deit", keep_ratio=0.75),
    ],
    ids=["pitome", "tome", "tome-no-prop", "authors-deit"],
)
def test_vit_end_to_end_matches_reference_forward(settings, vit_kwargs):
    from pitome_hf import PiToMeViTConfig, PiToMeViTForImageClassification

    torch.manual_seed(0)
    config = PiToMeViTConfig(**vit_kwargs(image_size=48, patch_size=8, num_hidden_layers=4), **settings)
    config._attn_implementation = "eager"
    model = PiToMeViTForImageClassification(config).eval()
    # smooth images, so patches form clusters and the energy ranking is not decided by noise
    base = torch.nn.functional.interpolate(torch.randn(3, 3, 6, 6), size=48, mode="nearest")
    pixels = base + 0.05 * torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        out = model(pixels)
        s = MergeSettings.from_config(config)
        want, counts = reference_vit_logits(
            model, pixels, list(s.merge_method) if isinstance(s.merge_method, tuple) else s.merge_method,
            config.keep_ratio, proportional=config.proportional_attention, m0=config.margin, m_end=config.margin_end,
            kind=config.energy,
        )
    assert out.token_counts.tolist() == counts[0]
    torch.testing.assert_close(out.logits.double(), want.double(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("settings", [dict(keep_ratio=0.75), dict(merge_r=8), dict(merge_r=3, proportional_attention=False)],
                         ids=["keep-0.75", "r-8", "r-3-no-prop"])
def test_vit_tome_matches_the_original_over_every_layer(settings, vit_kwargs):
    """merge_method='tome' in every layer of a ViT classifier: the logits of the original ToMe written in its own
    formulation (tests/reference_tome.py), whose token order after each layer its next layer's split depends on."""
    from pitome_hf import PiToMeViTConfig, PiToMeViTForImageClassification

    from . import reference_tome

    torch.manual_seed(0)
    config = PiToMeViTConfig(**vit_kwargs(image_size=48, patch_size=8, num_hidden_layers=4), merge_method="tome",
                             **settings)
    config._attn_implementation = "eager"
    model = PiToMeViTForImageClassification(config).eval()
    pixels = torch.nn.functional.interpolate(torch.randn(4, 3, 6, 6), size=48, mode="nearest")
    pixels = pixels + 0.05 * torch.randn(4, 3, 48, 48)
    s = MergeSettings.from_config(config)
    with torch.no_grad():
        got = model(pixels).logits
        want = reference_tome.vit_logits(model, pixels, lambda layer, T: s.budget(T, layer),
                                         proportional=config.proportional_attention)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_proportional_attention_counts_a_merged_token_k_times():
    """A token of size k with bias log(k) attends exactly like k identical copies of it (the definition)."""
    from pitome_hf.modeling.merge_state import MergeState

    torch.manual_seed(1)
    q, k, v = torch.randn(3, 1, 1, 4, 8).unbind(0)
    k_extra, v_extra = torch.randn(2, 1, 1, 1, 8).unbind(0)
    keys = torch.cat([k, k_extra], 2)
    values = torch.cat([v, v_extra], 2)
    state = MergeState(MergeSettings(num_layers=1), num_prefix=0)
    state.sizes, state.merged = torch.tensor([[1.0, 1.0, 1.0, 1.0, 3.0]]), True
    bias = state.attention_mask(None, torch.float32)
    merged = torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=bias)
    copies = torch.nn.functional.scaled_dot_product_attention(
        q, torch.cat([k, k_extra, k_extra, k_extra], 2), torch.cat([v, v_extra, v_extra, v_extra], 2)
    )
    torch.testing.assert_close(merged, copies)

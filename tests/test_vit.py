"""The PiToMe ViT family: equality with stock ViT, attention backends, dtypes, loading stock checkpoints, errors."""

import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification, ViTModel

from pitome_hf import PiToMeViTConfig, PiToMeViTForImageClassification, apply_pitome, token_schedule


def stock_and_pitome(vit_kwargs, attn="sdpa", cls=ViTForImageClassification, **settings):
    torch.manual_seed(0)
    stock = cls(ViTConfig(**vit_kwargs(), attn_implementation=attn)).eval()
    return stock, apply_pitome(stock, **settings).eval()


def test_proportional_attention_changes_the_output(vit_kwargs):
    stock, on = stock_and_pitome(vit_kwargs, keep_ratio=0.8)
    off = apply_pitome(stock, keep_ratio=0.8, proportional_attention=False).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert not torch.allclose(on(x).logits, off(x).logits)


def test_token_counts_follow_schedule_and_hidden_states_shrink(vit_kwargs):
    _, model = stock_and_pitome(vit_kwargs, attn="eager", keep_ratio=0.9, trace_source=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = model(x, output_hidden_states=True, output_attentions=True)
    schedule = token_schedule(model.config)
    assert out.token_counts.tolist() == schedule
    assert [h.shape[1] - 1 for h in out.hidden_states] == schedule
    # attention at layer l runs over the tokens entering it
    assert [a.shape[-1] - 1 for a in out.attentions] == schedule[:-1]
    assert out.token_sizes.shape == (2, schedule[-1] + 1)
    torch.testing.assert_close(out.token_sizes.sum(1), torch.full((2,), 197.0))
    assert out.token_map.shape == (2, 197) and out.token_map[:, 0].eq(0).all()


def test_interpolate_pos_encoding_uses_actual_token_count(vit_kwargs):
    _, model = stock_and_pitome(vit_kwargs, cls=ViTModel, keep_ratio=0.9)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 288, 288), interpolate_pos_encoding=True)
    assert out.token_counts.tolist() == token_schedule(model.config, num_tokens=18 * 18)
    assert out.pooler_output.shape == (1, 32)


def test_non_vit_checkpoint_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='bert'"):
        PiToMeViTForImageClassification.from_pretrained(tmp_path)


def test_apply_pitome_refuses_unsupported_models():
    from transformers import GPT2Config, GPT2Model

    gpt2 = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(TypeError, match="GPT2Model.*supported classes"):
        apply_pitome(gpt2)


def test_attention_mask_with_merging_is_refused(vit_kwargs):
    _, model = stock_and_pitome(vit_kwargs, cls=ViTModel, keep_ratio=0.9)
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.randn(1, 3, 224, 224), attention_mask=torch.ones(1, 197))


def test_wrong_image_size_is_refused(vit_kwargs):
    _, model = stock_and_pitome(vit_kwargs, keep_ratio=0.9)
    with pytest.raises(ValueError, match=r"Input image size \(64\*64\)"):
        model(torch.randn(1, 3, 64, 64))


def test_config_round_trips_through_json(vit_kwargs, tmp_path):
    config = PiToMeViTConfig(**vit_kwargs(), merge_r=[2] * 12, merge_layers=[0, 1, 2], margin=0.5, energy="elu")
    config.save_pretrained(tmp_path)
    again = PiToMeViTConfig.from_pretrained(tmp_path)
    assert (again.merge_r, again.merge_layers, again.margin, again.energy) == ([2] * 12, [0, 1, 2], 0.5, "elu")
    assert again.auto_map["AutoModelForImageClassification"].endswith("PiToMeViTForImageClassification")

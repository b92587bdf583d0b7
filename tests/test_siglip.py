"""What is specific to PiToMe SigLIP (the shared contract is in test_contract.py): no protected prefix, and the
attention-pooling head sees merged tokens with log(size), so a token of size k counts like k copies."""

import torch
import transformers

from pitome_hf import PiToMeSiglipModel, PiToMeSiglipVisionModel, apply_pitome, token_schedule
from pitome_hf.families import family_of
from pitome_hf.modeling.modeling_pitome_siglip import PiToMeSiglipAttentionPoolingHead

from .contract_fixtures import VISION, siglip_config


def test_every_token_can_merge_and_the_schedule_starts_at_all_patches():
    model = apply_pitome(transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VISION)).eval(), keep_ratio=0.5)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.token_counts.tolist() == token_schedule(model.config, num_tokens=64) == [64, 32, 16, 8, 4]
    assert out.last_hidden_state.shape[1] == 4  # no CLS kept aside
    assert out.token_sizes.sum(1).tolist() == [64.0, 64.0]


def test_head_counts_a_merged_token_as_its_copies():
    torch.manual_seed(0)
    head = PiToMeSiglipAttentionPoolingHead(transformers.SiglipVisionConfig(**VISION)).eval()
    tokens = torch.randn(1, 5, 32)
    sizes = torch.tensor([[1.0, 2.0, 1.0, 3.0, 1.0]])
    copies = tokens.repeat_interleave(sizes[0].long(), dim=1)  # 8 tokens: each merged token repeated size times
    with torch.no_grad():
        torch.testing.assert_close(head(tokens, sizes), head(copies), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(head(tokens, sizes), head(tokens), atol=1e-4)


def test_zero_shot_logits_use_the_merged_pooled_embedding():
    torch.manual_seed(0)
    stock = transformers.SiglipModel(siglip_config()).eval()
    model = apply_pitome(stock, keep_ratio=0.7)
    assert isinstance(model, PiToMeSiglipModel) and isinstance(model.vision_model, PiToMeSiglipVisionModel)
    x = {"input_ids": torch.randint(1, 50, (3, 8)), "pixel_values": torch.randn(2, 3, 32, 32)}
    with torch.no_grad():
        out = model(**x)
        image = torch.nn.functional.normalize(model.get_image_features(pixel_values=x["pixel_values"]).pooler_output)
        text = torch.nn.functional.normalize(model.get_text_features(input_ids=x["input_ids"]).pooler_output)
        want = image @ text.T * model.logit_scale.exp() + model.logit_bias
    torch.testing.assert_close(out.logits_per_image, want, rtol=1e-5, atol=1e-5)
    assert out.token_counts.tolist()[-1] < 64
    assert family_of(model.config).flops(model.config) < family_of(stock.config).flops(stock.config)

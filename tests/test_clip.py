"""The PiToMe CLIP family: equality with stock CLIP, the text tower untouched, token schedule, loading stock
checkpoints, remote code with the zero-shot pipeline, errors, retrieval recall, FLOPs, the clip benchmark."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel, CLIPVisionModel, CLIPVisionModelWithProjection

from pitome_hf import (
    PiToMeCLIPConfig,
    PiToMeCLIPModel,
    PiToMeCLIPVisionConfig,
    PiToMeCLIPVisionModel,
    PiToMeCLIPVisionModelWithProjection,
    apply_pitome,
    token_schedule,
)
from pitome_hf.flops import clip_vision_flops
from pitome_hf.evaluation.retrieval import (
    captions_to_images,
    image_embeddings,
    recall_at_k,
    retrieval_ranks,
    similarity_matrix,
    text_embeddings,
)

from .helpers import run_fresh

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "this", "is", "a", "photo", "of", "cat", "dog", "car", "bird", "."]
PAD, BOS, EOS = 0, 2, 3
VIT_B16_REFERENCE = [196, 177, 160, 144, 130, 117, 106, 96, 87, 79, 72, 65, 59]


def text_kwargs(**overrides):
    values = dict(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=16, projection_dim=16, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
    values.update(overrides)
    return values


def vision_kwargs(**overrides):
    values = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2, image_size=64,
                  patch_size=8, projection_dim=16)
    values.update(overrides)
    return values


def clip_config(attn="sdpa", vision=None, **kwargs):
    return CLIPConfig(text_config=text_kwargs(), vision_config=vision or vision_kwargs(), projection_dim=16,
                      attn_implementation=attn, **kwargs)


def stock_clip(attn="sdpa", vision=None):
    torch.manual_seed(0)
    return CLIPModel(clip_config(attn, vision)).eval()


def text_inputs(batch=3, length=7, seed=1):
    """Token ids (BOS, words, EOS, padding) and their attention mask; the EOS is where CLIP pools the text."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((batch, length), PAD)
    mask = torch.zeros(batch, length, dtype=torch.long)
    for i in range(batch):
        n = length - i  # different lengths so padding takes part
        ids[i, 0], ids[i, n - 1] = BOS, EOS
        ids[i, 1 : n - 1] = torch.randint(4, 32, (n - 2,), generator=g)
        mask[i, :n] = 1
    return ids, mask


def pixels(batch=2, size=64, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def no_loading_problems(info):
    return not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))


@pytest.fixture(scope="module")
def stock_dirs(tmp_path_factory):
    """Stock checkpoints saved by transformers: a CLIPModel, a CLIPVisionModel (transformers 5 layout: no
    `vision_model.` prefix on disk) and the same vision tower in the legacy layout (`vision_model.*` keys, as
    transformers 4 wrote them and as vision-tower checkpoints on the Hub store them)."""
    root = tmp_path_factory.mktemp("stock_clip")
    stock_clip().save_pretrained(root / "clip")
    torch.manual_seed(1)
    CLIPVisionModel(clip_config().vision_config).save_pretrained(root / "vision")
    CLIPVisionModel.from_pretrained(root / "vision").save_pretrained(root / "legacy")
    weights = root / "legacy" / "model.safetensors"
    state = load_file(weights)
    assert not any(k.startswith("vision_model.") for k in state)
    save_file({f"vision_model.{k}": v for k, v in state.items()}, weights, metadata={"format": "pt"})
    return root


# ---------------------------------------------------------------------------------------------------------------
# Equality with stock CLIP, the text tower, the schedule
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [dict(keep_ratio=0.5), dict(merge_method="tome", keep_ratio=0.7), dict(merge_r=[8, 0, 5, 3]),
     dict(keep_ratio=0.8, proportional_attention=False, merge_metric="hidden", energy="elu")],
)
def test_text_tower_is_identical_whatever_the_merge_settings(settings):
    stock = stock_clip()
    model = apply_pitome(stock, **settings).eval()
    x, (ids, mask) = pixels(), text_inputs()
    with torch.no_grad():
        expected = stock(input_ids=ids, attention_mask=mask, pixel_values=x)
        got = model(input_ids=ids, attention_mask=mask, pixel_values=x)
        text_features = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    assert torch.equal(got.text_embeds, expected.text_embeds)
    assert torch.equal(got.text_model_output.last_hidden_state, expected.text_model_output.last_hidden_state)
    assert torch.equal(text_features, stock.get_text_features(input_ids=ids, attention_mask=mask).pooler_output)
    assert not torch.allclose(got.image_embeds, expected.image_embeds)  # the vision tower did merge
    assert got.token_counts[-1] < 64


def test_vision_token_counts_follow_schedule():
    """ViT-B/16 token layout (196 patches, 12 layers) with a tiny width: the spec's reference counts."""
    stock = stock_clip("eager", vision=vision_kwargs(image_size=224, patch_size=16, num_hidden_layers=12))
    model = apply_pitome(stock, keep_ratio=0.9, trace_source=True).eval()
    schedule = token_schedule(model.config)
    assert schedule == VIT_B16_REFERENCE
    x, (ids, mask) = pixels(size=224), text_inputs()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=x, output_hidden_states=True,
                    output_attentions=True)
    assert out.token_counts.tolist() == schedule
    vision = out.vision_model_output
    assert [h.shape[1] - 1 for h in vision.hidden_states] == schedule
    assert [a.shape[-1] - 1 for a in vision.attentions] == schedule[:-1]
    assert vision.last_hidden_state.shape == (2, schedule[-1] + 1, 32)
    assert out.token_sizes.shape == (2, schedule[-1] + 1)
    torch.testing.assert_close(out.token_sizes.sum(1), torch.full((2,), 197.0))
    assert out.token_map.shape == (2, 197) and out.token_map[:, 0].eq(0).all()
    # the text tower's hidden states keep their length
    assert all(h.shape[1] == ids.shape[1] for h in out.text_model_output.hidden_states)


def test_schedule_reads_the_vision_config_of_a_clip_config():
    config = PiToMeCLIPConfig(vision_config=dict(image_size=336, patch_size=14, num_hidden_layers=24), keep_ratio=0.9)
    assert config.merge_num_hidden_layers == 24
    assert token_schedule(config)[23] == 54
    config.keep_ratio = 0.925
    assert token_schedule(config)[23] == 101


def test_every_entry_point_merges_with_the_parent_config():
    model = apply_pitome(stock_clip(), keep_ratio=1.0).eval()
    model.config.keep_ratio = 0.8
    x = pixels()
    expected = token_schedule(model.config)
    assert expected[-1] < 64
    with torch.no_grad():
        assert model.get_image_features(pixel_values=x).token_counts.tolist() == expected
        assert model.vision_model(x).token_counts.tolist() == expected
    with_projection = apply_pitome(CLIPVisionModelWithProjection(clip_config().vision_config).eval(), keep_ratio=0.8)
    with torch.no_grad():
        out = with_projection(x)
    assert out.image_embeds.shape == (2, 16) and out.token_counts.tolist() == expected


def test_interpolate_pos_encoding_uses_actual_token_count():
    model = apply_pitome(stock_clip(), keep_ratio=0.9).eval()
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels(1, 96), interpolate_pos_encoding=True)
    assert out.token_counts.tolist() == token_schedule(model.config, num_tokens=12 * 12)
    assert out.pooler_output.shape == (1, 16)


def test_return_dict_false_and_training():
    model = apply_pitome(stock_clip(), keep_ratio=0.8)
    x, (ids, mask) = pixels(), text_inputs(batch=2)
    with torch.no_grad():
        out = model.eval()(input_ids=ids, attention_mask=mask, pixel_values=x, return_dict=False)
        vision = model.vision_model(x, return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == (2, 2) and isinstance(vision, tuple)
    model.train()
    loss = model(input_ids=ids, attention_mask=mask, pixel_values=x, return_loss=True).loss
    loss.backward()
    grad = model.vision_model.embeddings.patch_embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_apply_pitome_shares_weights_and_buffers():
    stock = stock_clip()
    model = apply_pitome(stock, keep_ratio=0.9)
    assert model.vision_model.merge_config is model.config
    assert model.logit_scale.data_ptr() == stock.logit_scale.data_ptr()
    w = model.vision_model.encoder.layers[0].self_attn.k_proj.weight
    assert w.data_ptr() == stock.vision_model.encoder.layers[0].self_attn.k_proj.weight.data_ptr()
    for name, buffer in model.named_buffers():  # non-persistent position_ids come from the stock model, not meta
        assert buffer.device.type == "cpu" and torch.equal(buffer, stock.get_buffer(name)), name


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["vision", "legacy"])
def test_stock_vision_checkpoint_loads_every_weight(stock_dirs, layout):
    stock = CLIPVisionModel.from_pretrained(stock_dirs / layout).eval()
    model, info = PiToMeCLIPVisionModel.from_pretrained(stock_dirs / layout, keep_ratio=1.0, output_loading_info=True)
    assert no_loading_problems(info)
    assert model.config.model_type == "pitome_clip_vision_model"
    x = pixels()
    with torch.no_grad():
        assert (model.eval()(x).pooler_output - stock(x).pooler_output).abs().max() <= 1e-5


def test_pitome_checkpoint_round_trips(stock_dirs, tmp_path):
    model = PiToMeCLIPModel.from_pretrained(stock_dirs / "clip", keep_ratio=0.8, merge_method="tome").eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "merge_num_hidden_layers" not in json.dumps(saved) and saved["keep_ratio"] == 0.8
    assert set(saved["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForZeroShotImageClassification"}
    again, info = PiToMeCLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert no_loading_problems(info)
    assert (again.config.merge_method, again.config.keep_ratio, again.config.merge_num_hidden_layers) == ("tome", 0.8, 4)
    x, (ids, mask) = pixels(), text_inputs()
    with torch.no_grad():
        a = again.eval()(input_ids=ids, attention_mask=mask, pixel_values=x)
        b = model(input_ids=ids, attention_mask=mask, pixel_values=x)
    torch.testing.assert_close(a.logits_per_image, b.logits_per_image)
    # a stand-alone vision tower read from this folder takes over the merge settings
    tower, info = PiToMeCLIPVisionModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and (tower.config.merge_method, tower.config.keep_ratio) == ("tome", 0.8)


def test_non_clip_checkpoint_is_refused(stock_dirs):
    with pytest.raises(ValueError, match="model_type='clip_vision_model'"):
        PiToMeCLIPModel.from_pretrained(stock_dirs / "vision")


# ---------------------------------------------------------------------------------------------------------------
# Remote code and the zero-shot pipeline
# ---------------------------------------------------------------------------------------------------------------
def save_text_and_image_processors(folder, image_size=64):
    """A word-level tokenizer (BOS ... EOS, padding) and a CLIP image processor: what the pipeline needs, offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", BOS), ("</s>", EOS)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", model_max_length=16,
                                        model_input_names=["input_ids", "attention_mask"])
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
                       ).save_pretrained(folder)
    return tokenizer


def test_saved_folders_load_through_remote_code_and_pipeline(stock_dirs, tmp_path):
    from transformers import pipeline

    model = PiToMeCLIPModel.from_pretrained(stock_dirs / "clip", keep_ratio=0.8, trace_source=True).eval()
    folder = tmp_path / "pitome-clip"
    model.save_pretrained(folder)
    save_text_and_image_processors(folder)
    files = {p.name for p in folder.iterdir()}
    assert {"configuration_pitome_clip.py", "modeling_pitome_clip.py", "merging.py", "config.json"} <= files
    assert not {"modeling_pitome_vit.py", "configuration_pitome_vit.py"} & files
    tower = PiToMeCLIPVisionModel.from_pretrained(stock_dirs / "legacy", merge_method="tome", keep_ratio=0.9).eval()
    tower.save_pretrained(tmp_path / "pitome-clip-vision")

    x, (ids, mask) = pixels(), text_inputs()
    torch.save({"x": x, "ids": ids, "mask": mask}, tmp_path / "inputs.pt")
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype("uint8")).save(tmp_path / "img.png")
    labels = ["cat", "dog", "car", "bird"]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, pixel_values=x)
        expected_tower = tower(x)
    expected_preds = pipeline("zero-shot-image-classification", model=str(folder), trust_remote_code=True)(
        str(tmp_path / "img.png"), candidate_labels=labels)

    got = run_fresh(
        f"""
        import json, torch
        from transformers import AutoModel, AutoModelForZeroShotImageClassification, pipeline
        folder = {str(folder)!r}
        inputs = torch.load("inputs.pt")
        model, info = AutoModelForZeroShotImageClassification.from_pretrained(folder, trust_remote_code=True,
                                                                           output_loading_info=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        tower, tower_info = AutoModel.from_pretrained({str(tmp_path / "pitome-clip-vision")!r}, trust_remote_code=True,
                                                      output_loading_info=True)
        with torch.no_grad():
            out = model.eval()(input_ids=inputs["ids"], attention_mask=inputs["mask"], pixel_values=inputs["x"])
            tower_out = tower.eval()(inputs["x"])
        clf = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
        preds = clf("img.png", candidate_labels={labels!r})
        print(json.dumps({{"logits": out.logits_per_image.tolist(), "counts": out.token_counts.tolist(),
                          "token_map": out.token_map.tolist(), "base": type(base).__name__,
                          "tower": type(tower).__name__, "tower_pooled": tower_out.pooler_output.tolist(),
                          "tower_counts": tower_out.token_counts.tolist(),
                          "pipeline_model": type(clf.model).__module__,
                          "missing": sorted(info["missing_keys"]) + sorted(tower_info["missing_keys"]),
                          "unexpected": sorted(info["unexpected_keys"]) + sorted(tower_info["unexpected_keys"]),
                          "preds": preds}}))
        """,
        tmp_path,
    )
    assert got["missing"] == [] and got["unexpected"] == []
    assert got["base"] == "PiToMeCLIPModel" and got["tower"] == "PiToMeCLIPVisionModel"
    assert got["pipeline_model"].startswith("transformers_modules")
    # Same code and weights; float32 CPU kernels may still round the last bit differently from one process to another
    # (seen once while writing this test), so the float outputs are compared to 1e-6 and the discrete ones exactly.
    close = dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.tensor(got["logits"]), expected.logits_per_image, **close)
    assert got["counts"] == expected.token_counts.tolist() and got["counts"][-1] < 64
    assert torch.equal(torch.tensor(got["token_map"]), expected.token_map)
    torch.testing.assert_close(torch.tensor(got["tower_pooled"]), expected_tower.pooler_output, **close)
    assert got["tower_counts"] == expected_tower.token_counts.tolist()
    assert [p["label"] for p in got["preds"]] == [p["label"] for p in expected_preds]
    assert [p["score"] for p in got["preds"]] == pytest.approx([p["score"] for p in expected_preds], rel=1e-6, abs=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# Retrieval helpers
# ---------------------------------------------------------------------------------------------------------------
# 3 images, 5 captions: image 0 has captions 0 and 1, image 1 caption 2, image 2 captions 3 and 4.
SIMILARITY = torch.tensor(
    [
        [0.1, 0.9, 0.2, 0.3, 0.0],  # texts by score: 1 3 2 0 4 -> best caption (1) at rank 0
        [0.8, 0.1, 0.5, 0.7, 0.6],  # 0 3 4 2 1 -> caption 2 at rank 3
        [0.2, 0.3, 0.9, 0.1, 0.4],  # 2 4 1 0 3 -> best caption (4) at rank 1
    ]
)
TEXT_TO_IMAGE = [0, 0, 1, 2, 2]


def test_recall_at_k_on_a_hand_made_matrix():
    i2t, t2i = retrieval_ranks(SIMILARITY, TEXT_TO_IMAGE)
    assert i2t.tolist() == [0, 3, 1]
    assert t2i.tolist() == [2, 0, 1, 2, 1]
    r = recall_at_k(SIMILARITY, TEXT_TO_IMAGE, ks=(1, 2, 3))
    expected = {"i2t_r1": 100 / 3, "i2t_r2": 200 / 3, "i2t_r3": 200 / 3, "t2i_r1": 20.0, "t2i_r2": 60.0,
                "t2i_r3": 100.0}
    for key, value in expected.items():
        assert r[key] == pytest.approx(value), key
    assert r["i2t_rsum"] == pytest.approx(500 / 3) and r["t2i_rsum"] == pytest.approx(180.0)
    assert r["rsum"] == pytest.approx(500 / 3 + 180.0)
    default = recall_at_k(SIMILARITY, captions_to_images([2, 1, 2]))
    assert [default[k] for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")] == pytest.approx(
        [100 / 3, 100.0, 100.0, 20.0, 100.0, 100.0])


def test_recall_ties_and_paired_default():
    i2t, t2i = retrieval_ranks(torch.ones(3, 3))  # all tied: the lower index ranks first
    assert i2t.tolist() == [0, 1, 2] and t2i.tolist() == [0, 1, 2]
    assert recall_at_k(torch.eye(4))["rsum"] == pytest.approx(600.0)


def test_retrieval_input_errors():
    with pytest.raises(ValueError, match="images \\[1\\] have no caption"):
        recall_at_k(SIMILARITY, [0, 0, 2, 2, 2])
    with pytest.raises(ValueError, match="text_to_image has 4 entries"):
        recall_at_k(SIMILARITY, [0, 1, 2, 2])
    with pytest.raises(ValueError, match="pass text_to_image"):
        recall_at_k(SIMILARITY)
    with pytest.raises(ValueError, match="at least one caption"):
        captions_to_images([5, 0])


def test_embeddings_in_batches(tmp_path):
    model = apply_pitome(stock_clip(), keep_ratio=0.8).eval()
    x, (ids, mask) = pixels(5), text_inputs(batch=4)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=x)
    images = image_embeddings(model, x, batch_size=2)
    texts = text_embeddings(model, {"input_ids": ids, "attention_mask": mask}, batch_size=3)
    torch.testing.assert_close(images, out.image_embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(texts, out.text_embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(5))
    scale = model.logit_scale.exp().item()
    torch.testing.assert_close(similarity_matrix(images, texts) * scale, out.logits_per_image, rtol=1e-4, atol=1e-5)
    # strings and images through the tokenizer and the image processor; the with-projection tower works too
    tokenizer = save_text_and_image_processors(tmp_path)
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(tmp_path)
    pil = [Image.fromarray((np.random.default_rng(i).random((40, 50, 3)) * 255).astype("uint8")) for i in range(3)]
    from_pil = image_embeddings(model, pil, processor=processor, batch_size=2)
    assert from_pil.shape == (3, 16)
    from_strings = text_embeddings(model, ["a photo of a cat", "a dog", "bird ."], tokenizer=tokenizer, batch_size=2)
    enc = tokenizer(["a photo of a cat", "a dog", "bird ."], padding=True, return_tensors="pt")
    with torch.no_grad():
        direct = model.get_text_features(**enc).pooler_output
    torch.testing.assert_close(from_strings, torch.nn.functional.normalize(direct, dim=-1), rtol=1e-5, atol=1e-6)
    tower = PiToMeCLIPVisionModelWithProjection(PiToMeCLIPVisionConfig(**vision_kwargs())).eval()
    assert image_embeddings(tower, x, batch_size=4).shape == (5, 16)


# ---------------------------------------------------------------------------------------------------------------
# FLOPs and the benchmark
# ---------------------------------------------------------------------------------------------------------------

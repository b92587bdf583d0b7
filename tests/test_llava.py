"""PiToMe LLaVA: equality with stock LLaVA at keep ratio 1.0, processor/model token counts, generate with padding and
several images, stock checkpoints, remote code, the mismatch error, the LLaVA-1.5 token schedule reference."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from modeling.merge_config import COUNT_FIELDS
from modeling.configuration_pitome_llava import PiToMeLlavaConfig, llava_feature_depth, llava_num_image_tokens
from modeling.modeling_pitome_llava import PiToMeLlavaForConditionalGeneration
from modeling.processing_pitome_llava import PiToMeLlavaProcessor

from .helpers import run_fresh

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:", "what", "is", "in", "the", "image", "?",
         "a", "cat", "dog", "and", "compare", "two", "images"] + [f"w{i}" for i in range(60)]
PAD, BOS, EOS, IMAGE = 0, 2, 3, 4


def tokenizer():
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=["<image>"])
    fast.padding_side = "left"
    return fast


def image_processor(size=32):
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def llava_dict(image_size=32, patch=4, layers=3, strategy="default", feature_layer=-2):
    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                  num_attention_heads=2, image_size=image_size, patch_size=patch, projection_dim=16)
    text = dict(model_type="llama", vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=PAD,
                bos_token_id=BOS, eos_token_id=EOS)
    return dict(vision_config=vision, text_config=text, image_token_index=IMAGE, vision_feature_layer=feature_layer,
                vision_feature_select_strategy=strategy, attn_implementation="sdpa")


def stock_model(**kw):
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(LlavaConfig(**llava_dict(**kw))).eval()


def pitome_from(stock, **settings):
    config = PiToMeLlavaConfig(**{**llava_dict(), **{k: v for k, v in stock.config.to_dict().items()
                                                     if k in ("vision_config", "text_config", "vision_feature_layer",
                                                              "vision_feature_select_strategy")}}, **settings)
    model = PiToMeLlavaForConditionalGeneration(config).eval()
    missing, unexpected = model.load_state_dict(stock.state_dict(), strict=False)
    assert not missing and not unexpected
    return model


def images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def processors(model, size=32):
    tok, ip = tokenizer(), image_processor(size)
    pitome = PiToMeLlavaProcessor.from_model_config(model.config, ip, tok)
    stock = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=model.config.vision_config.patch_size,
                           vision_feature_select_strategy=model.config.vision_feature_select_strategy,
                           num_additional_image_tokens=1)
    return pitome, stock


PROMPT = "USER: <image> what is in the image ? ASSISTANT:"


def greedy(model, inputs, n=6):
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[:, inputs["input_ids"].shape[1]:]


def test_llava15_schedule_reference():
    config = PiToMeLlavaConfig(keep_ratio=0.9)  # LLaVA-1.5 vision: CLIP-L/14-336, 24 layers, feature layer -2
    assert config.merge_num_hidden_layers == 24 and "merge_num_hidden_layers" not in config.to_dict()
    assert llava_feature_depth(config) == 23
    assert llava_num_image_tokens(config) == 54
    assert llava_num_image_tokens(PiToMeLlavaConfig(keep_ratio=0.925)) == 101
    assert llava_num_image_tokens(PiToMeLlavaConfig(keep_ratio=1.0)) == 576
    assert llava_num_image_tokens(PiToMeLlavaConfig(keep_ratio=0.9, vision_feature_select_strategy="full")) == 55


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_keep_ratio_one_equals_stock(strategy):
    stock = stock_model(strategy=strategy)
    model = pitome_from(stock, keep_ratio=1.0)
    _, proc = processors(model)
    inputs = proc(images=images(1), text=[PROMPT], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, stock(**inputs).logits)
    assert torch.equal(greedy(model, inputs), greedy(stock, inputs))


@pytest.mark.parametrize("strategy", ["default", "full"])
@pytest.mark.parametrize("ratio", [0.95, 0.9, 0.7, 0.5])
@pytest.mark.parametrize("size,patch,layers,feature", [(32, 4, 3, -2), (64, 8, 4, -1), (48, 4, 2, -2)])
def test_processor_count_matches_features(strategy, ratio, size, patch, layers, feature):
    stock = stock_model(image_size=size, patch=patch, layers=layers, strategy=strategy, feature_layer=feature)
    model = pitome_from(stock, keep_ratio=ratio)
    proc, _ = processors(model, size)
    inputs = proc(images=images(1, size), text=[PROMPT], return_tensors="pt")
    n_tokens = int((inputs["input_ids"] == IMAGE).sum())
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert feats[0].shape[0] == n_tokens == llava_num_image_tokens(model.config)
    if ratio < 1.0:
        assert n_tokens < (size // patch) ** 2
    with torch.no_grad():
        model(**inputs)  # the placeholder check passes


def test_merges_only_before_feature_layer():
    stock = stock_model(layers=4, feature_layer=-3)  # hidden_states[-3] = output of layer 1: layers 0 and 1 merge
    model = pitome_from(stock, keep_ratio=0.8)
    pixel = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.model.get_image_features(pixel_values=pixel)
    lengths = [h.shape[1] - 1 for h in out.hidden_states]
    assert lengths[0] == 64 and lengths[1] < 64 and lengths[2] < lengths[1] and lengths[2] == lengths[3] == lengths[4]


def test_batch_with_padding_and_several_images():
    stock = stock_model()
    model = pitome_from(stock, keep_ratio=0.8)
    proc, _ = processors(model)
    short = PROMPT
    long = "USER: <image> w1 w2 w3 w4 w5 w6 w7 compare the image ? ASSISTANT:"
    two = "USER: <image> and <image> compare two images ? ASSISTANT:"
    imgs = images(4, seed=1)
    alone = [greedy(model, proc(images=[imgs[0]], text=[short], return_tensors="pt")),
             greedy(model, proc(images=[imgs[1]], text=[long], return_tensors="pt"))]
    batch = proc(images=imgs[:2], text=[short, long], padding=True, return_tensors="pt")
    assert (batch["attention_mask"][0] == 0).any()  # left padding really happened
    together = greedy(model, batch)
    assert torch.equal(together[0], alone[0][0]) and torch.equal(together[1], alone[1][0])
    multi = proc(images=imgs[2:], text=[two], return_tensors="pt")
    assert int((multi["input_ids"] == IMAGE).sum()) == 2 * llava_num_image_tokens(model.config)
    assert greedy(model, multi).shape == (1, 6)


def test_mismatched_processor_errors():
    stock = stock_model()
    model = pitome_from(stock, keep_ratio=0.8)
    pitome_proc, stock_proc = processors(model)
    inputs = stock_proc(images=images(1), text=[PROMPT], return_tensors="pt")
    with pytest.raises(ValueError, match="PiToMeLlavaProcessor") as err, torch.no_grad():
        model(**inputs)
    assert "stock LlavaProcessor" in str(err.value)
    with pytest.raises(ValueError, match="PiToMeLlavaProcessor"), torch.no_grad():
        model.generate(**inputs, max_new_tokens=2)
    # the reverse: a PiToMe prompt on the stock model fails in transformers' own check
    inputs = pitome_proc(images=images(1), text=[PROMPT], return_tensors="pt")
    with pytest.raises(Exception, match="do not match"), torch.no_grad():
        stock(**inputs)


def test_stock_checkpoint_legacy_keys(tmp_path):
    """llava-hf checkpoints on the Hub store transformers-4 names: language_model.model.*, vision_tower.vision_model.*"""
    from safetensors.torch import save_file

    stock = stock_model()
    stock.save_pretrained(tmp_path / "legacy")
    legacy = {}
    for name, value in stock.state_dict().items():
        name = name.replace("model.language_model.", "language_model.model.").replace("lm_head.", "language_model.lm_head.")
        name = name.replace("model.vision_tower.", "vision_tower.vision_model.").replace("model.multi_modal_projector.", "multi_modal_projector.")
        legacy[name] = value.clone()
    save_file(legacy, tmp_path / "legacy" / "model.safetensors", metadata={"format": "pt"})
    model, info = PiToMeLlavaForConditionalGeneration.from_pretrained(tmp_path / "legacy", keep_ratio=1.0,
                                                                      output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for name, value in stock.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_remote_code_fresh_process(tmp_path):
    stock = stock_model()
    model = pitome_from(stock, keep_ratio=0.8)
    proc, _ = processors(model)
    model.save_pretrained(tmp_path / "m")
    proc.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "processor_config.json").read_text())
    saved = saved.get("processor", saved)
    assert saved["merge_settings"]["keep_ratio"] == 0.8 and set(saved["merge_settings"]) == set(COUNT_FIELDS)
    inputs = proc(images=images(1), text=[PROMPT], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    ref = greedy(model, inputs).tolist()
    np.save(tmp_path / "pixel.npy", images(1)[0])
    result = run_fresh(f"""
        import json, numpy as np, torch
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor
        path = {str(tmp_path / "m")!r}
        model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True).eval()
        proc = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        image = Image.fromarray(np.load({str(tmp_path / "pixel.npy")!r}))
        inputs = proc(images=[image], text=[{PROMPT!r}], return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
            out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
        print(json.dumps(dict(model=type(model).__name__, proc=type(proc).__name__, ids=inputs["input_ids"].tolist(),
                              logits=logits.flatten().tolist(), gen=out[:, inputs["input_ids"].shape[1]:].tolist())))
    """, tmp_path)
    assert result["model"] == "PiToMeLlavaForConditionalGeneration" and result["proc"] == "PiToMeLlavaProcessor"
    assert result["ids"] == inputs["input_ids"].tolist()
    torch.testing.assert_close(torch.tensor(result["logits"]), logits.flatten())
    assert result["gen"] == ref


def test_pipeline(tmp_path):
    from transformers import pipeline

    stock = stock_model()
    model = pitome_from(stock, keep_ratio=0.8)
    proc, _ = processors(model)
    pipe = pipeline("image-text-to-text", model=model, processor=proc)
    out = pipe(images=images(1)[0], text=PROMPT, max_new_tokens=3, return_full_text=False)
    assert isinstance(out[0]["generated_text"], str)


def test_apply_pitome_and_auto_classes(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pitome_hf import apply_pitome

    stock = stock_model()
    model = apply_pitome(stock, keep_ratio=1.0)
    assert type(model).__name__ == "PiToMeLlavaForConditionalGeneration"
    _, proc = processors(model)
    inputs = proc(images=images(1), text=[PROMPT], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, stock(**inputs).logits)
    model.save_pretrained(tmp_path / "m")
    pitome_proc, _ = processors(model)
    pitome_proc.save_pretrained(tmp_path / "m")
    assert type(AutoModelForImageTextToText.from_pretrained(tmp_path / "m")).__name__ == type(model).__name__
    assert type(AutoProcessor.from_pretrained(tmp_path / "m")).__name__ == "PiToMeLlavaProcessor"


def test_vision_tower_called_directly_merges_before_feature_layer_only():
    stock = stock_model(layers=4, feature_layer=-3)
    model = pitome_from(stock, keep_ratio=0.8)
    with torch.no_grad():
        out = model.model.vision_tower(torch.randn(1, 3, 32, 32))
    counts = out.token_counts.tolist()
    assert counts[1] < counts[0] and counts[2] < counts[1] and counts[2] == counts[3] == counts[4]


def test_benchmark_smoke():
    from pitome_hf.measurement.benchmark_llava import bench_llava, markdown

    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=2, image_size=32, patch_size=4)
    rows = bench_llava(ratios=(0.9,), device="cpu", new_tokens=2, text_tokens=4, repeats=1, lm_layers=1,
                       lm_hidden=32, vision=vision)
    assert [r["method"] for r in rows] == ["none", "tome", "pitome"]
    assert rows[0]["image_tokens"] == 64 and rows[1]["image_tokens"] == rows[2]["image_tokens"] < 64
    assert rows[2]["kv_cache_bytes"] < rows[0]["kv_cache_bytes"] and rows[2]["ideal_ttft_speedup"] > 1
    assert "FLOPs-ideal" in markdown(rows)


def test_processor_multimodal_count_and_config_errors():
    model = pitome_from(stock_model(), keep_ratio=0.8)
    proc, _ = processors(model)
    n = llava_num_image_tokens(model.config)
    assert proc._get_num_multimodal_tokens(image_sizes=[[32, 32], [40, 50]]).num_image_tokens == [n, n]
    with pytest.raises(ValueError, match="single vision feature layer"):
        PiToMeLlavaConfig(**{**llava_dict(), "vision_feature_layer": [-2, -3]}, keep_ratio=0.9)
    PiToMeLlavaConfig(**{**llava_dict(), "vision_feature_layer": [-2, -3]}, keep_ratio=1.0)  # nothing merges: allowed
    with pytest.raises(ValueError, match="keep_order"):
        PiToMeLlavaConfig(**llava_dict(), keep_order=False)

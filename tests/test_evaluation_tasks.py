"""`pitome-hf evaluate` beyond image classification: CLIP zero-shot classification and image-text retrieval, LLaVA
VQA. Each is checked end to end against the same computation done by hand with the unmerged model."""

import numpy as np
import pytest
import torch
from PIL import Image

from pitome_hf.evaluation.evaluate import DataSpec, evaluate_model, markdown_table, validate_report

from .test_clip import save_text_and_image_processors, stock_clip
from .test_llava import PROMPT, image_processor, llava_dict, stock_model, tokenizer

CLASSES = ["cat", "dog", "car"]
CAPTIONS = [["a cat", "this is a cat"], ["a dog ."], ["a car", "a photo of a car", "car"], ["a bird"], ["dog and cat"]]


def random_images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def save_parquet(path, columns: dict):
    import datasets

    features = {k: datasets.Image() if k == "image" else None for k in columns}
    ds = datasets.Dataset.from_dict(columns)
    ds = ds.cast_column("image", features["image"])
    ds.to_parquet(str(path))
    return path


@pytest.fixture(scope="module")
def clip_task(tmp_path_factory):
    """A tiny stock CLIP with a word-level tokenizer, an imagefolder of 3 named classes, and a captions parquet."""
    root = tmp_path_factory.mktemp("clip_eval")
    stock_clip().save_pretrained(root / "model")
    save_text_and_image_processors(root / "model", image_size=64)
    for c, name in enumerate(CLASSES):
        folder = root / "classes" / "test" / name
        folder.mkdir(parents=True)
        for j, img in enumerate(random_images(3, 64, seed=c)):
            img.save(folder / f"{j}.png")
    save_parquet(root / "captions.parquet", {"image": random_images(len(CAPTIONS), 64, seed=9), "caption": CAPTIONS})
    return root


def test_zero_shot_matches_a_manual_computation(clip_task):
    from transformers import AutoImageProcessor, AutoTokenizer

    from pitome_hf import PiToMeCLIPModel
    from pitome_hf.evaluation.retrieval import image_embeddings, text_embeddings

    report = evaluate_model(model=str(clip_task / "model"), data=DataSpec(str(clip_task / "classes")),
                            task="zero-shot-image-classification", keep_ratios=[0.8], batch_size=4, progress=False)
    validate_report(report)
    by = {(r["method"], r["keep_ratio"]): r for r in report["results"]}
    assert list(by) == [("none", 1.0), ("tome", 0.8), ("pitome", 0.8)]
    assert by[("pitome", 0.8)]["gflops"] < by[("none", 1.0)]["gflops"]
    assert by[("pitome", 0.8)]["token_counts"][0] == 64 > by[("pitome", 0.8)]["token_counts"][-1]
    assert all(r["num_samples"] == 9 for r in report["results"])

    model = PiToMeCLIPModel.from_pretrained(clip_task / "model", merge_method="none").eval()
    tok = AutoTokenizer.from_pretrained(clip_task / "model")
    proc = AutoImageProcessor.from_pretrained(clip_task / "model")
    texts = text_embeddings(model, [f"a photo of a {c}." for c in CLASSES], tokenizer=tok)
    correct = 0
    for label, name in enumerate(CLASSES):
        imgs = [Image.open(clip_task / "classes" / "test" / name / f"{j}.png").convert("RGB") for j in range(3)]
        preds = (image_embeddings(model, imgs, processor=proc) @ texts.T).argmax(-1)
        correct += int((preds == label).sum())
    assert by[("none", 1.0)]["metrics"] == {"accuracy": pytest.approx(correct / 9)}


def test_retrieval_matches_the_retrieval_module(clip_task):
    from transformers import AutoImageProcessor, AutoTokenizer

    from pitome_hf import PiToMeCLIPModel, apply_pitome
    from pitome_hf.evaluation.retrieval import captions_to_images, image_embeddings, recall_at_k, text_embeddings

    report = evaluate_model(model=str(clip_task / "model"), data=DataSpec(str(clip_task / "captions.parquet")),
                            task="image-text-retrieval", methods=["none", "pitome"], keep_ratios=[0.8], batch_size=2,
                            progress=False)
    validate_report(report)
    assert report["dataset"]["text_column"] == "caption"
    table = markdown_table(report)
    assert "recall_mean | i2t_recall@1" in table and "t2i_recall@10" in table

    base = PiToMeCLIPModel.from_pretrained(clip_task / "model", merge_method="none").eval()
    tok = AutoTokenizer.from_pretrained(clip_task / "model")
    proc = AutoImageProcessor.from_pretrained(clip_task / "model")
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(clip_task / "captions.parquet"), split="train")
    texts = text_embeddings(base, [c for caps in CAPTIONS for c in caps], tokenizer=tok)
    owner = captions_to_images([len(c) for c in CAPTIONS])
    for row in report["results"]:
        model = apply_pitome(base, merge_method=row["method"], keep_ratio=row["keep_ratio"])
        images = image_embeddings(model, [img.convert("RGB") for img in ds["image"]], processor=proc)
        expected = recall_at_k(images @ texts.T, owner)
        got = row["metrics"]
        for direction in ("i2t", "t2i"):
            for k in (1, 5, 10):
                assert 100 * got[f"{direction}_recall@{k}"] == pytest.approx(expected[f"{direction}_r{k}"])
        assert 600 * got["recall_mean"] == pytest.approx(expected["rsum"])


def test_retrieval_under_two_accelerate_processes_gives_the_same_recall(clip_task, tmp_path):
    """Each process embeds its shard of the images; the gathered embeddings must give the one-process recall."""
    import json
    import os
    import subprocess
    import sys

    args = ["--task", "image-text-retrieval", "--model", str(clip_task / "model"), "--dataset",
            str(clip_task / "captions.parquet"), "--methods", "none", "pitome", "--keep-ratios", "0.8",
            "--batch-size", "2", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    reports = []
    for name, launcher in (("one", [sys.executable, "-m"]),
                           ("two", [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch",
                                    "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                                    "--mixed_precision", "no", "--dynamo_backend", "no", "-m"])):
        run = subprocess.run([*launcher, "pitome_hf.cli", "evaluate", *args, "--out", str(tmp_path / name)],
                             env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        reports.append(json.loads((tmp_path / name / "results.json").read_text()))
    one, two = reports
    assert two["num_processes"] == 2
    for a, b in zip(one["results"], two["results"]):
        assert a["metrics"] == pytest.approx(b["metrics"]) and b["num_samples"] == len(CAPTIONS)


def test_zero_shot_needs_class_names_and_a_clip_model(clip_task, tmp_path):
    save_parquet(tmp_path / "ints.parquet", {"image": random_images(2, 64), "label": [0, 1]})
    with pytest.raises(ValueError, match="needs class names.*'label'.*ClassLabel"):
        evaluate_model(model=str(clip_task / "model"), data=DataSpec(str(tmp_path / "ints.parquet")),
                       task="zero-shot-image-classification", progress=False)
    with pytest.raises(ValueError, match="no text column 'captions'.*'image', 'caption'"):
        evaluate_model(model=str(clip_task / "model"),
                       data=DataSpec(str(clip_task / "captions.parquet"), text_column="captions"),
                       task="image-text-retrieval", progress=False)
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'vit' model; the task image-text-retrieval supports pitome_clip, clip, pitome_siglip, siglip"):
        evaluate_model(model=str(tmp_path), data=DataSpec(str(clip_task / "captions.parquet")),
                       task="image-text-retrieval", progress=False)


def test_retrieval_caption_rows_are_checked(clip_task, tmp_path):
    save_parquet(tmp_path / "bad.parquet", {"image": random_images(2, 64), "caption": [["a cat"], []]})
    with pytest.raises(ValueError, match="row 1 of the caption column 'caption' holds \\[\\]"):
        evaluate_model(model=str(clip_task / "model"), data=DataSpec(str(tmp_path / "bad.parquet")),
                       task="image-text-retrieval", progress=False)
    save_parquet(tmp_path / "none.parquet", {"image": random_images(2, 64), "caption": ["a cat", None]})
    with pytest.raises(ValueError, match="row 1 of the caption column 'caption' holds None"):
        evaluate_model(model=str(clip_task / "model"), data=DataSpec(str(tmp_path / "none.parquet")),
                       task="image-text-retrieval", progress=False)


# ---------------------------------------------------------------------------------------------------------------
# LLaVA VQA
# ---------------------------------------------------------------------------------------------------------------
VQA_PROMPT = PROMPT.replace("what is in the image ?", "{}")
QUESTIONS = ["what is in the image ?", "what is in the image ?", "compare two images", "what is a cat ?"]


@pytest.fixture(scope="module")
def llava_task(tmp_path_factory):
    """A tiny stock LLaVA folder (tokenizer, image processor) and a VQA parquet whose answers are what the unmerged
    stock model answers through the stock LlavaProcessor (so the evaluation must reproduce them exactly)."""
    from transformers import LlavaProcessor

    root = tmp_path_factory.mktemp("llava_eval")
    stock = stock_model()
    stock.save_pretrained(root / "model")
    tok, ip = tokenizer(), image_processor(32)
    tok.save_pretrained(root / "model")
    ip.save_pretrained(root / "model")
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=4, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)
    imgs = random_images(len(QUESTIONS), 32, seed=3)
    answers = []
    for img, q in zip(imgs, QUESTIONS):
        inputs = proc(images=img, text=VQA_PROMPT.format(q), return_tensors="pt")
        with torch.no_grad():
            out = stock.generate(**inputs, max_new_tokens=3, do_sample=False)
        answers.append([tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()])
    save_parquet(root / "vqa.parquet", {"image": imgs, "question": QUESTIONS, "answers": answers})
    return root, answers


def test_vqa_reproduces_the_stock_answers_and_merges(llava_task):
    from transformers import AutoConfig

    from pitome_hf.flops import llava_prefill_flops
    from pitome_hf.modeling import PiToMeLlavaConfig
    from pitome_hf.modeling.configuration_pitome_llava import llava_num_image_tokens

    root, answers = llava_task
    assert any(a[0] for a in answers)  # the stock model said something
    report = evaluate_model(model=str(root / "model"), data=DataSpec(str(root / "vqa.parquet")), task="vqa",
                            methods=["none", "pitome"], keep_ratios=[0.8], batch_size=2, prompt=VQA_PROMPT,
                            max_new_tokens=3, progress=False)
    validate_report(report)
    none, pitome = report["results"]
    assert none["metrics"] == {"vqa_accuracy": 1.0}
    assert 0.0 <= pitome["metrics"]["vqa_accuracy"] <= 1.0 and pitome["num_samples"] == 4
    config = PiToMeLlavaConfig(**{**AutoConfig.from_pretrained(root / "model").to_dict(), "keep_ratio": 0.8})
    # the schedule reaches the feature layer (-2: 2 of 3 layers) with fewer tokens; GFLOPs follow the analytic count
    assert pitome["token_counts"][2] == llava_num_image_tokens(config) < 64
    assert pitome["gflops"] < none["gflops"]
    # per question: its prompt's text tokens ("USER:", the question, "ASSISTANT:"), then the mean
    lengths = [2 + len(q.split()) for q in QUESTIONS]
    want = sum(llava_prefill_flops(config, t) for t in lengths) / len(lengths)
    assert pitome["gflops"] == pytest.approx(want / 1e9, rel=1e-9)
    assert "questions/s" in markdown_table(report)


def test_vqa_prompt_and_model_errors(llava_task, clip_task):
    root, _ = llava_task
    with pytest.raises(ValueError, match="needs '<image>'"):
        evaluate_model(model=str(root / "model"), data=DataSpec(str(root / "vqa.parquet")), task="vqa",
                       prompt="{} ?", progress=False)
    with pytest.raises(ValueError, match="'clip' model; the task vqa supports pitome_llava, llava"):
        evaluate_model(model=str(clip_task / "model"), data=DataSpec(str(root / "vqa.parquet")), task="vqa",
                       progress=False)


@pytest.mark.parametrize("settings", [dict(merge_method="none"), dict(keep_ratio=0.8), dict(merge_method="tome",
                                                                                           keep_ratio=0.7)])
def test_llava_prefill_flops_match_flop_counter(settings):
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from pitome_hf import apply_pitome
    from pitome_hf.flops import llava_prefill_flops
    from pitome_hf.modeling.configuration_pitome_llava import llava_num_image_tokens

    # eager attention: FlopCounterMode does not see the CPU SDPA kernel's matmuls
    torch.manual_seed(0)
    stock = LlavaForConditionalGeneration(LlavaConfig(**{**llava_dict(), "attn_implementation": "eager"}))
    model = apply_pitome(stock, **settings).eval()
    n_img = llava_num_image_tokens(model.config)
    text = torch.tensor([[2, 5, 7, 8]])
    ids = torch.cat([text[:, :1], torch.full((1, n_img), 4), text[:, 1:]], dim=1)
    pixels = image_processor(32)(images=random_images(1, 32), return_tensors="pt")["pixel_values"]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, logits_to_keep=1)
    measured = counter.get_total_flops()
    assert abs(llava_prefill_flops(model.config, text.shape[1]) - measured) <= 0.02 * measured

"""`pitome-hf convert` and `pitome-hf evaluate --task vqa` for the vision-language families reducing at the language
model's input (Qwen2.5-VL), on a stock checkpoint folder made here: a tiny random model, a word-level tokenizer with
Qwen's special tokens and the stock image processor (2 px patches).

This environment has no torchvision, so transformers cannot build Qwen2.5-VL's video processor, and without one it
builds no Qwen2.5-VL processor at all. `convert` refuses that, naming it (tested); the other tests stand a plain
`BaseVideoProcessor` in for the video processor (`VIDEO_STAND_IN`, in this process and in the fresh one), as a
machine with torchvision would have Qwen's own: everything else (the remote code, the merge settings in
processor_config.json, the tokenizer and image processor, the budgeted image tokens) is the real path. VQA accuracy
of random weights means nothing: the tests check rows, budgets, counts and the report's schema."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from pitome_hf import apply_pitome
from pitome_hf.commands.convert import convert_checkpoint

from .contract_fixtures import QWEN_END, QWEN_IMAGE, QWEN_START, QWEN_VIDEO, qwen2_5_vl_config
from .helpers import run_fresh

VIDEO_STAND_IN = '''
import json, os
import transformers.processing_utils as pu
from transformers.video_processing_utils import BaseVideoProcessor


class _Video:  # stands in for AutoVideoProcessor (Qwen's video processor needs torchvision, not installed here)
    @staticmethod
    def from_pretrained(path, **kwargs):
        return BaseVideoProcessor(patch_size=2, merge_size=2, temporal_patch_size=2)


_get = type(pu.MODALITY_TO_AUTOPROCESSOR_MAPPING).__getitem__
type(pu.MODALITY_TO_AUTOPROCESSOR_MAPPING).__getitem__ = (
    lambda self, key: _Video if key == "video_processor" else _get(self, key))
_check = pu.ProcessorMixin.check_argument_for_proper_class
pu.ProcessorMixin.check_argument_for_proper_class = (
    lambda self, name, arg: None if isinstance(arg, BaseVideoProcessor) else _check(self, name, arg))
'''
WORDS = ["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(50)]
SPECIAL = {"<|vision_start|>": QWEN_START, "<|vision_end|>": QWEN_END, "<|image_pad|>": QWEN_IMAGE,
           "<|video_pad|>": QWEN_VIDEO, "<|im_start|>": 54, "<|im_end|>": 55}


@pytest.fixture
def video_stand_in(monkeypatch):
    import transformers.processing_utils as pu

    namespace: dict = {}
    getitem = type(pu.MODALITY_TO_AUTOPROCESSOR_MAPPING).__getitem__
    check = pu.ProcessorMixin.check_argument_for_proper_class
    exec(VIDEO_STAND_IN, namespace)
    yield
    type(pu.MODALITY_TO_AUTOPROCESSOR_MAPPING).__getitem__ = getitem
    pu.ProcessorMixin.check_argument_for_proper_class = check


@pytest.fixture(scope="module")
def stock_folder(tmp_path_factory):
    """A stock Qwen2.5-VL checkpoint folder: tiny random model, tokenizer, stock image processor (16 x 16 px images:
    8 x 8 patches, 16 visual tokens)."""
    return _qwen_stock_folder(tmp_path_factory.mktemp("qwen_stock"),
                              transformers.Qwen2_5_VLForConditionalGeneration, qwen2_5_vl_config)


def _qwen_stock_folder(root, stock_class, make_config):
    """A stock Qwen-family checkpoint folder in `root`: the tiny random model, the word-level tokenizer with Qwen's
    special tokens, the stock image processor (2 px patches, at most 16 x 16 px)."""
    torch.manual_seed(0)
    stock_class(make_config()).save_pretrained(root)
    words = {w: i for i, w in enumerate(WORDS)} | SPECIAL
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
        additional_special_tokens=list(SPECIAL)).save_pretrained(root)
    transformers.Qwen2VLImageProcessorPil(patch_size=2, merge_size=2, temporal_patch_size=2, min_pixels=64,
                                          max_pixels=16 * 16).save_pretrained(root)
    return root


def _fresh_forward(folder, image, tmp_path) -> dict:
    """A converted folder loaded as a user would (remote code, a fresh process, the video processor stood in for), one
    prompt with `image` through its processor and model: the classes, the image pads, the ids, the last logits and
    the config's visual_tokens."""
    np.save(tmp_path / "image.npy", image)
    return run_fresh(VIDEO_STAND_IN + f'''
import json, numpy as np, torch, transformers
folder = {str(folder)!r}
processor = transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=True)
model = transformers.AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
x = processor(text=["w1 <|vision_start|><|image_pad|><|vision_end|> w2"], images=[np.load({str(tmp_path / "image.npy")!r})],
              return_tensors="pt")
with torch.no_grad():
    logits = model(**x).logits
print(json.dumps(dict(processor=type(processor).__name__, model=type(model).__name__,
                      pads=int((x["input_ids"] == model.config.image_token_id).sum()), ids=x["input_ids"].tolist(),
                      logits=logits[0, -1].tolist(), visual_tokens=model.config.visual_tokens)))
''', tmp_path)


def test_convert_refuses_without_the_video_processor(stock_folder, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"PiToMeQwen2_5_VLProcessor needs .*'s video_processor, which cannot be "
                                         r"built on this machine \(Qwen2VLVideoProcessor requires the Torchvision"):
        convert_checkpoint(str(stock_folder), out, visual_tokens=4)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_converted_folder_loads_in_a_fresh_process(stock_folder, tmp_path, video_stand_in):
    out = convert_checkpoint(str(stock_folder), tmp_path / "qwen-pitome", visual_tokens=4, merge_method="tome")
    names = {p.name for p in out.iterdir()}
    assert {"processing_pitome_qwen2_5_vl.py", "modeling_pitome_qwen2_5_vl.py", "processor_config.json",
            "tokenizer.json", "model.safetensors"} <= names
    saved = json.loads((out / "processor_config.json").read_text())
    assert saved["merge_settings"]["visual_tokens"] == 4 and saved["merge_settings"]["merge_method"] == "tome"
    assert json.loads((out / "config.json").read_text())["auto_map"]["AutoProcessor"].endswith("PiToMeQwen2_5_VLProcessor")
    image = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype("uint8")
    got = _fresh_forward(out, image, tmp_path)
    assert got["processor"] == "PiToMeQwen2_5_VLProcessor"
    assert got["model"] == "PiToMeQwen2_5_VLForConditionalGeneration"
    assert got["pads"] == got["visual_tokens"] == 4
    # the same numbers as the in-process PiToMe model on the stock weights
    stock = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(stock_folder).eval()
    model = apply_pitome(stock, visual_tokens=4, merge_method="tome")
    processor = transformers.AutoImageProcessor.from_pretrained(stock_folder)
    pixels = processor(images=[image], return_tensors="pt")
    ids = torch.tensor(got["ids"])
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=(ids == QWEN_IMAGE).int(),
                     **pixels).logits[0, -1]
    torch.testing.assert_close(torch.tensor(got["logits"]), want, rtol=1e-4, atol=1e-5)


def _vqa_set(root, n=3):
    """n questions on 16 x 16 px images (16 visual tokens each before any reduction)."""
    from datasets import Dataset, Features, Image, Sequence, Value
    from PIL import Image as PILImage

    rng = np.random.default_rng(1)
    images = [PILImage.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")) for _ in range(n)]
    rows = {"image": images, "question": [f"w{i} w{i + 1}" for i in range(n)], "answers": [["w3", "w4"]] * n}
    features = Features({"image": Image(), "question": Value("string"), "answers": Sequence(Value("string"))})
    path = root / "vqa.parquet"
    Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path


def test_vqa_rows_at_equal_visual_token_counts(stock_folder, tmp_path, video_stand_in):
    from pitome_hf.commands.evaluate import main
    from pitome_hf.evaluation.report import validate_report
    from pitome_hf.flops import qwen2_5_vl_prefill_flops

    data = _vqa_set(tmp_path)
    out = tmp_path / "eval"
    assert main(["--task", "vqa", "--model", str(stock_folder), "--dataset", str(data), "--visual-tokens", "4", "8",
                 "--methods", "none", "pitome", "tome", "--visual-selections", "merge", "visionzip", "--device", "cpu",
                 "--batch-size", "2", "--max-new-tokens", "2", "--no-progress", "--out", str(out)]) == 0
    report = validate_report(json.loads((out / "results.json").read_text()))
    rows = [(r["method"], r["keep_ratio"], r["visual_tokens"]) for r in report["results"]]
    assert rows == [("none", 1.0, None), ("pitome", None, 4), ("tome", None, 4), ("visionzip", None, 4),
                    ("pitome", None, 8), ("tome", None, 8), ("visionzip", None, 8)]
    by = {(r["method"], r["visual_tokens"]): r for r in report["results"]}
    assert by[("none", None)]["token_counts"] == [16]  # image tokens reaching the language model per question
    for (method, k), r in by.items():
        assert r["num_samples"] == 3 and 0.0 <= r["metrics"]["vqa_accuracy"] <= 1.0
        if k is not None:
            assert r["token_counts"] == [k]
    # GFLOPs: the family's prefill FLOPs for each question's processed prompt (equal prompts here)
    config = apply_pitome(transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(stock_folder),
                          visual_tokens=4, merge_method="tome").config
    assert by[("tome", 4)]["gflops"] < by[("pitome", 4)]["gflops"] < by[("pitome", 8)]["gflops"] < by[("none", None)]["gflops"]
    from pitome_hf.families import family_named

    prompt = family_named("qwen2_5_vl").vqa_prompt.format("w0 w1")
    tokenizer = transformers.AutoTokenizer.from_pretrained(stock_folder)
    text_tokens = len(tokenizer(prompt)["input_ids"]) - 1  # the prompt holds one <|image_pad|>
    assert by[("tome", 4)]["gflops"] == pytest.approx(
        qwen2_5_vl_prefill_flops(config, text_tokens, image_grid_thw=[(1, 8, 8)]) / 1e9)
    md = (out / "results.md").read_text()
    assert "| method | keep ratio | visual tokens | vqa_accuracy |" in md and "| visionzip |  | 8 |" in md
    assert (out / "results.csv").read_text().splitlines()[0].startswith("method,keep_ratio,visual_tokens,")


def test_vqa_rows_of_divprune_and_dart(stock_folder, tmp_path, video_stand_in):
    """`--visual-selections divprune dart` adds one row of each per budget, labelled by the selection, at the budget."""
    from pitome_hf.commands.evaluate import main
    from pitome_hf.evaluation.report import validate_report

    out = tmp_path / "eval"
    assert main(["--task", "vqa", "--model", str(stock_folder), "--dataset", str(_vqa_set(tmp_path)), "--visual-tokens",
                 "4", "--methods", "none", "--visual-selections", "divprune", "dart", "--device", "cpu",
                 "--batch-size", "2", "--max-new-tokens", "2", "--no-progress", "--out", str(out)]) == 0
    report = validate_report(json.loads((out / "results.json").read_text()))
    assert [(r["method"], r["visual_tokens"], r["token_counts"]) for r in report["results"]] == [
        ("none", None, [16]), ("divprune", 4, [4]), ("dart", 4, [4])]


def test_vqa_sweep_bad_input(stock_folder, tmp_path, video_stand_in):
    from pitome_hf.evaluation.evaluate import DataSpec, evaluate_model

    data = DataSpec(str(_vqa_set(tmp_path, 1)))
    with pytest.raises(ValueError, match=r"visual_tokens=17 asks for 17 visual tokens.*allowed values are 1..16"):
        evaluate_model(model=str(stock_folder), data=data, task="vqa", methods=["pitome"], keep_ratios=[],
                       visual_tokens=[17], device="cpu", progress=False)
    with pytest.raises(ValueError, match="--visual-tokens lists 4 more than once"):
        evaluate_model(model=str(stock_folder), data=data, task="vqa", visual_tokens=[4, 4], progress=False)
    with pytest.raises(ValueError, match=r"needs '<\|image_pad\|>'"):
        evaluate_model(model=str(stock_folder), data=data, task="vqa", prompt="USER: <image> {}", keep_ratios=[0.5],
                       device="cpu", progress=False)


def test_every_vqa_refusal_leaves_the_output_folder_as_it_was(stock_folder, tmp_path, video_stand_in, capsys):
    """Refused before anything is read (the sweep, the model's name), after the data and model are read (the prompt,
    a column) or at the first row, once --output is locked (a budget above an image's tokens): each one line, and
    --output as it was, absent or holding an earlier run's files (issue #31)."""
    from pitome_hf.cli import main as cli

    data = str(_vqa_set(tmp_path, 1))
    base = ["evaluate", "--task", "vqa", "--model", str(stock_folder), "--dataset", data, "--device", "cpu",
            "--no-progress", "--max-new-tokens", "1"]
    cases = [
        (["--visual-tokens", "17"], r"visual_tokens=17 asks for 17 visual tokens.*allowed values are 1\.\.16"),
        (["--visual-tokens", "4", "4"], "--visual-tokens lists 4 more than once"),
        (["--prompt", "USER: <image> {}", "--keep-ratios", "0.5"], r"needs '<\|image_pad\|>'"),
        (["--label-column", "solutions", "--visual-tokens", "4"], "the dataset has no label column 'solutions'"),
        (["--model", "qwen2_5_vl", "--visual-tokens", "4"], "--model qwen2_5_vl: no such folder, and not a Hub id"),
    ]
    for before in ("absent", "earlier files"):
        out = tmp_path / before / "out"
        if before != "absent":
            out.mkdir(parents=True)
            (out / "rows.jsonl").write_text('{"schema": "another run"}\n')
        for args, words in cases:
            code = cli([*base, *args, "--output", str(out)])
            err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pitome-hf evaluate: err")]
            assert code == 2 and len(err) == 1 and re.search(words, err[0]), (args, err)
            if before == "absent":
                assert not (tmp_path / before).exists(), args
            else:
                assert sorted(p.name for p in out.iterdir()) == ["rows.jsonl"], args
                assert (out / "rows.jsonl").read_text() == '{"schema": "another run"}\n'


def test_image_text_to_text_pipeline_serves_a_converted_folder(stock_folder, tmp_path, video_stand_in):
    """`pipeline("image-text-to-text")` on a converted folder, through the remote code: the prompt it builds holds the
    budgeted number of image tokens and the answer is the PiToMe model's own greedy continuation."""
    from PIL import Image

    out = convert_checkpoint(str(stock_folder), tmp_path / "qwen-pitome", visual_tokens=4)
    image = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype("uint8"))
    pipe = transformers.pipeline("image-text-to-text", model=str(out), trust_remote_code=True)
    assert type(pipe.model).__name__ == "PiToMeQwen2_5_VLForConditionalGeneration"
    prompt = "w1 <|vision_start|><|image_pad|><|vision_end|> w2"
    got = pipe(images=image, text=prompt, max_new_tokens=3, do_sample=False, return_full_text=False)
    x = pipe.processor(text=[prompt], images=[image], return_tensors="pt")
    assert int((x["input_ids"] == QWEN_IMAGE).sum()) == 4
    with torch.no_grad():
        ids = pipe.model.generate(**x, max_new_tokens=3, do_sample=False)[0, x["input_ids"].shape[1]:]
    assert got[0]["generated_text"].strip() and got[0]["generated_text"].strip() == pipe.processor.decode(ids, skip_special_tokens=True).strip()


# ---- the Qwen3 families (issue #33): convert, the remote code in a fresh process, push's load check, evaluate
@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_qwen3_families_convert_load_verify_and_evaluate(family, tmp_path, video_stand_in):
    from pitome_hf.commands.evaluate import main
    from pitome_hf.commands.push import verify_loads
    from pitome_hf.evaluation.report import validate_report

    from .contract_fixtures import qwen3_5_config, qwen3_vl_config

    make, stock_class = {"qwen3_vl": (qwen3_vl_config, transformers.Qwen3VLForConditionalGeneration),
                         "qwen3_5": (qwen3_5_config, transformers.Qwen3_5ForConditionalGeneration)}[family]
    root = _qwen_stock_folder(tmp_path / "stock", stock_class, make)
    out = convert_checkpoint(str(root), tmp_path / "pitome", visual_tokens=4, visual_selection="divprune")
    names = {p.name for p in out.iterdir()}
    assert {"processing_pitome_qwen3_vl.py", f"modeling_pitome_{family}.py", "qwen_reduction.py",
            "processor_config.json", "model.safetensors"} <= names
    image = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype("uint8")
    got = _fresh_forward(out, image, tmp_path)
    assert got["processor"] == "PiToMeQwen3VLProcessor" and got["pads"] == 4
    assert got["model"] == {"qwen3_vl": "PiToMeQwen3VLForConditionalGeneration",
                            "qwen3_5": "PiToMeQwen3_5ForConditionalGeneration"}[family]
    stock = stock_class.from_pretrained(root).eval()
    model = apply_pitome(stock, visual_tokens=4, visual_selection="divprune")
    pixels = transformers.AutoImageProcessor.from_pretrained(root)(images=[image], return_tensors="pt")
    ids = torch.tensor(got["ids"])
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=(ids == QWEN_IMAGE).int(),
                     **pixels).logits[0, -1]
    torch.testing.assert_close(torch.tensor(got["logits"]), want, rtol=1e-4, atol=1e-5)
    verify_loads(out)  # push's load check: raises on a folder that does not load
    report_dir = tmp_path / "eval"
    assert main(["--task", "vqa", "--model", str(root), "--dataset", str(_vqa_set(tmp_path, 2)), "--visual-tokens",
                 "4", "--methods", "none", "pitome", "--visual-selections", "merge", "dart", "--device", "cpu",
                 "--batch-size", "2", "--max-new-tokens", "2", "--no-progress", "--out", str(report_dir)]) == 0
    report = validate_report(json.loads((report_dir / "results.json").read_text()))
    assert [(r["method"], r["visual_tokens"], r["token_counts"]) for r in report["results"]] == [
        ("none", None, [16]), ("pitome", 4, [4]), ("dart", 4, [4])]

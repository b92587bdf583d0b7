"""The lmms-eval plug-in (pitome_hf/integrations/lmms_eval.py), with lmms-eval itself (`make install` puts it in).

The end-to-end test runs `lmms-eval --model pitome_qwen2_5_vl --model_args pretrained=FOLDER,visual_tokens=4 --tasks
pitome_tiny_vqa --include_path TASK_DIR` through lmms-eval's own command line, in a fresh process (the plug-in is found
through the installed `lmms_eval.models` entry point), on a tiny converted Qwen2.5-VL folder and a three-question task
written here (local JSON lines and PNG files, a chat template in the folder). The budget reaching the prompt is read
from what lmms-eval logs per sample (`token_counts.input_tokens`: the prompt the model was given) against the count
of the known template with 4 `<|image_pad|>` per image, and the answers against the PiToMe model's own greedy ones.
Random weights: the answers mean nothing, only that they are the model's.

Qwen2.5-VL's and OneVision's video processors need torchvision (not installed here): as in tests/test_vlm_tools.py,
a plain `BaseVideoProcessor` stands in for them (VIDEO_STAND_IN, in this process and the fresh one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import transformers

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed: `make install` installs it (see the Makefile)")

from pitome_hf import apply_pitome  # noqa: E402
from pitome_hf.commands.convert import convert_checkpoint  # noqa: E402
from pitome_hf.families import FAMILIES, family_named  # noqa: E402

from .contract_fixtures import (  # noqa: E402
    ONEVISION_IMAGE, ONEVISION_PINPOINTS, ONEVISION_VIDEO, QWEN_END, QWEN_IMAGE, QWEN_START, QWEN_VIDEO,
    llava_onevision_config, qwen2_5_vl_config,
)
from .helpers import word_tokenizer  # noqa: E402
from .test_vlm_tools import VIDEO_STAND_IN, video_stand_in  # noqa: E402,F401

QWEN_SPECIAL = {"<|vision_start|>": QWEN_START, "<|vision_end|>": QWEN_END, "<|image_pad|>": QWEN_IMAGE,
                "<|video_pad|>": QWEN_VIDEO, "<|im_start|>": 54, "<|im_end|>": 55}
# a minimal chat template in Qwen2.5-VL's layout: each image as <|vision_start|><|image_pad|><|vision_end|>
QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{% for c in m['content'] %}{% if c['type'] == 'image' %}"
                 "<|vision_start|><|image_pad|><|vision_end|>{% else %} {{ c['text'] }}{% endif %}{% endfor %}"
                 "<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>{% endif %}")
ONEVISION_TEMPLATE = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                      "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}")
QUESTIONS = [("w3", 1), ("w4 w5 w6", 1), ("w5 w6", 2)]  # (question, images): lengths differ, so batches are padded
TASK_YAML = """task: pitome_tiny_vqa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 3
process_results: !function utils.process_results
metric_list:
  - metric: answered
    aggregation: mean
    higher_is_better: true
"""
TASK_UTILS = '''
from pathlib import Path

from PIL import Image

HERE = Path(__file__).parent


def doc_to_visual(doc):
    return [Image.open(HERE / name).convert("RGB") for name in doc["images"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"answered": float(bool(results[0].strip()))}
'''


def _tokenizer(special):
    tokenizer = word_tokenizer(special)
    tokenizer.eos_token = "<eos>"
    return tokenizer


def _stock_folder(root, family: str):
    """A stock checkpoint folder of `family` (tiny random model, word-level tokenizer, stock image processor, a chat
    template)."""
    torch.manual_seed(0)
    if family in ("qwen2_5_vl", "qwen3_vl", "qwen3_5"):
        from .contract_fixtures import qwen3_5_config, qwen3_vl_config

        stock, make = {"qwen2_5_vl": (transformers.Qwen2_5_VLForConditionalGeneration, qwen2_5_vl_config),
                       "qwen3_vl": (transformers.Qwen3VLForConditionalGeneration, qwen3_vl_config),
                       "qwen3_5": (transformers.Qwen3_5ForConditionalGeneration, qwen3_5_config)}[family]
        stock(make()).save_pretrained(root)
        _tokenizer(QWEN_SPECIAL).save_pretrained(root)
        transformers.Qwen2VLImageProcessorPil(patch_size=2, merge_size=2, temporal_patch_size=2, min_pixels=64,
                                              max_pixels=16 * 24).save_pretrained(root)
        template = QWEN_TEMPLATE
    else:
        transformers.LlavaOnevisionForConditionalGeneration(llava_onevision_config()).save_pretrained(root)
        _tokenizer({"<image>": ONEVISION_IMAGE, "<video>": ONEVISION_VIDEO}).save_pretrained(root)
        transformers.LlavaOnevisionImageProcessorPil(size={"height": 16, "width": 16},
                                                     image_grid_pinpoints=ONEVISION_PINPOINTS).save_pretrained(root)
        template = ONEVISION_TEMPLATE
    (root / "chat_template.jinja").write_text(template)
    return root


@pytest.fixture(scope="module")
def qwen_stock(tmp_path_factory):
    return _stock_folder(tmp_path_factory.mktemp("lmms_qwen_stock"), "qwen2_5_vl")


def _images(rng, shapes):
    from PIL import Image

    return [Image.fromarray((rng.random((*shape, 3)) * 255).astype("uint8")) for shape in shapes]


def _task(root):
    """The local task: three questions on 16 x 16 and 24 x 16 px images (16 and 24 visual tokens before a budget),
    the last with two images."""
    root.mkdir()
    rng = np.random.default_rng(0)
    docs = []
    for i, (question, count) in enumerate(QUESTIONS):
        names = []
        for j, image in enumerate(_images(rng, [(16 + 8 * (i == 1), 16)] * count)):
            names.append(f"image{i}_{j}.png")
            image.save(root / names[-1])
        docs.append({"images": names, "question": question, "answer": "w5"})
    (root / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "utils.py").write_text(TASK_UTILS)
    (root / "pitome_tiny_vqa.yaml").write_text(TASK_YAML.format(data=root / "data.jsonl"))
    return docs


def _plugin(name: str):
    from pitome_hf.integrations import lmms_eval as plugin

    return getattr(plugin, f"PiToMe_{name}")


# ----------------------------------------------------------------------------------------------------------------
# The models lmms-eval is given: one per family of the registry that reduces at the language model's input
# ----------------------------------------------------------------------------------------------------------------
def test_the_model_names_come_from_the_registry(monkeypatch):
    import dataclasses

    from lmms_eval.models.registry_v2 import ModelRegistryV2

    from pitome_hf import families
    from pitome_hf.integrations import lmms_eval as plugin

    reducing = [f.name for f in FAMILIES if f.processor is not None and f.vqa_prompt is not None]
    assert {"qwen2_5_vl", "llava_onevision"} <= set(reducing)
    assert plugin.model_names() == [f"pitome_{name}" for name in reducing]  # not llava (its tower merges), no encoders
    # a family added to the registry later gets its model with no edit to the plug-in
    planted = dataclasses.replace(family_named("qwen2_5_vl"), name="qwen9_vl")
    monkeypatch.setattr(families, "FAMILIES", (*FAMILIES, planted))
    registry = ModelRegistryV2()
    for manifest in plugin.manifests():
        registry.register_manifest(manifest)
    cls = registry.get_model_class("pitome_qwen9_vl")  # lmms-eval's own resolution and its lmms/is_simple checks
    assert cls.__name__ == "PiToMe_qwen9_vl" and cls.family_name == "qwen9_vl" and cls is _plugin("qwen9_vl")
    assert registry.get_model_class("pitome_llava_onevision").family_name == "llava_onevision"
    with pytest.raises(AttributeError, match="has no attribute 'PiToMe_vit'"):
        _plugin("vit")


def test_lmms_eval_is_not_imported_by_pitome_hf():
    code = "import sys, pitome_hf, pitome_hf.cli, pitome_hf.integrations; print('lmms_eval' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0 and out.stdout.split()[-1] == "False", out.stderr[-2000:]


# ----------------------------------------------------------------------------------------------------------------
# lmms-eval's command line on a converted folder and a local task
# ----------------------------------------------------------------------------------------------------------------
def _expected_prompt(question: str, images: int) -> str:
    return f"<|im_start|>{'<|vision_start|><|image_pad|><|vision_end|>' * images} {question}<|im_end|><|im_start|>"


def test_lmms_eval_cli_runs_a_converted_folder_at_the_given_budget(qwen_stock, tmp_path, video_stand_in):
    """The folder is converted at 8 visual tokens per image; `visual_tokens=4` in --model_args is what the prompts
    and the model hold: 4 <|image_pad|> per image (16 or 24 without a budget), batches of 2, padded."""
    folder = convert_checkpoint(str(qwen_stock), tmp_path / "qwen-pitome", visual_tokens=8)
    assert (folder / "chat_template.jinja").is_file()
    docs = _task(tmp_path / "task")
    out, home = tmp_path / "out", tmp_path / "hf_home"
    argv = ["lmms-eval", "--model", "pitome_qwen2_5_vl", "--model_args", f"pretrained={folder},visual_tokens=4",
            "--tasks", "pitome_tiny_vqa", "--include_path", str(tmp_path / "task"), "--batch_size", "2",
            "--device", "cpu", "--output_path", str(out), "--log_samples"]
    code = VIDEO_STAND_IN + textwrap.dedent(f"""
        import sys
        from importlib.metadata import entry_points
        if not [e for e in entry_points().select(group="lmms_eval.models") if e.value.startswith("pitome_hf.")]:
            sys.exit("pitome_hf's lmms_eval.models entry point is not installed: run `make install` "
                     "(pip install -e .) and try again.")
        from lmms_eval.cli.dispatch import main
        sys.argv = {argv!r}
        main()
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                               "TRANSFORMERS_VERBOSITY": "error"})
    assert proc.returncode == 0, f"lmms-eval failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "|pitome_tiny_vqa|" in proc.stdout  # lmms-eval's own results table
    results = json.loads(next(out.glob("*/*_results.json")).read_text())
    assert results["n-samples"]["pitome_tiny_vqa"]["effective"] == 3
    assert results["results"]["pitome_tiny_vqa"]["answered,none"] == 1.0
    samples = sorted((json.loads(line) for line in next(out.glob("*/*_samples_pitome_tiny_vqa.jsonl")).open()),
                     key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == [0, 1, 2]

    # what the model was given: the template's tokens with 4 <|image_pad|> per image (the budget, not the folder's 8)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    for sample, (question, count) in zip(samples, QUESTIONS):
        text = len(tokenizer(_expected_prompt(question, count))["input_ids"]) - count  # one pad per image in it
        assert sample["token_counts"][0]["input_tokens"] == text + 4 * count, (question, count)

    # the answers are the PiToMe model's (stock weights, visual_tokens=4) own greedy continuations
    model = apply_pitome(transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_stock).eval(),
                         visual_tokens=4)
    from pitome_hf.checkpoints import processor_parts

    qwen = family_named("qwen2_5_vl").processor
    processor = qwen.from_model_config(model.config, **processor_parts(qwen, str(qwen_stock)))
    from PIL import Image

    for sample, doc in zip(samples, docs):
        images = [Image.open(tmp_path / "task" / name).convert("RGB") for name in doc["images"]]
        x = processor(text=[_expected_prompt(doc["question"], len(images))], images=images, return_tensors="pt")
        assert int((x["input_ids"] == QWEN_IMAGE).sum()) == 4 * len(images)
        with torch.no_grad():
            ids = model.generate(**x, max_new_tokens=3, do_sample=False)[0, x["input_ids"].shape[1]:]
        assert sample["filtered_resps"] == tokenizer.decode(ids, skip_special_tokens=True)


# ----------------------------------------------------------------------------------------------------------------
# The model class in this process: a stock folder, LLaVA-OneVision, the refusals
# ----------------------------------------------------------------------------------------------------------------
class _Request:
    def __init__(self, args):
        self.args = args


def _requests(lm, images_per_request, questions):
    """lmms-eval's generate_until requests (context, gen_kwargs, doc_to_visual, doc_id, task, split) over a task_dict
    holding the documents."""
    docs = [{"images": images, "question": q} for images, q in zip(images_per_request, questions)]
    lm.task_dict = {"tiny": {"test": docs}}
    return [_Request((q, {"max_new_tokens": 2, "until": []}, lambda doc: doc["images"], i, "tiny", "test"))
            for i, q in enumerate(questions)]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3_5", "llava_onevision"])
def test_generate_until_on_a_stock_folder_budgets_model_and_processor_alike(family, tmp_path, video_stand_in):
    """A stock folder is converted on load: the model and the processor both hold the given settings, and a batch of
    requests gives each its own answer (as generated one by one)."""
    folder = _stock_folder(tmp_path / "stock", family)
    lm = _plugin(family)(pretrained=str(folder), visual_tokens=3, merge_method="tome", batch_size=2, device="cpu")
    config = lm.model.config
    assert type(lm.model).__name__ == family_named(family).models[0].pitome.__name__
    assert (config.visual_tokens, config.merge_method) == (3, "tome")
    assert lm.processor.merge_settings["visual_tokens"] == 3  # the processor was made from the same config
    rng = np.random.default_rng(0)
    images = [_images(rng, [(16, 16)]), _images(rng, [(16, 32)]), _images(rng, [(16, 16)])]
    questions = ["w3", "w4 w5 w6", "w7 w8"]
    batched = lm.generate_until(_requests(lm, images, questions))
    single = [lm.generate_until(_requests(lm, [im], [q]))[0] for im, q in zip(images, questions)]
    assert [r.text for r in batched] == [r.text for r in single]
    image_token = lm.processor.image_token
    full = family_named(family).processor.from_model_config(apply_pitome(lm.model, merge_method="none").config,
                                                            image_processor=lm.processor.image_processor,
                                                            tokenizer=lm.tokenizer,
                                                            video_processor=lm.processor.video_processor)
    for result, im, q in zip(batched, images, questions):  # the prompt's image tokens are the budget's
        x = lm.processor(text=[lm.prompt(q, 1)], images=im, return_tensors="pt")
        assert result.token_counts.input_tokens == x["input_ids"].shape[1]
        pads = int((x["input_ids"] == lm.tokenizer.convert_tokens_to_ids(image_token)).sum())
        unreduced = int((full(text=[lm.prompt(q, 1)], images=im, return_tensors="pt")["input_ids"] == x["input_ids"]
                         .new_tensor(lm.tokenizer.convert_tokens_to_ids(image_token))).sum())
        # Qwen2.5-VL: 3 per image; OneVision: 3 features per image and the newlines kept (fewer than unreduced)
        assert pads == 3 if family != "llava_onevision" else 3 < pads < unreduced
        assert result.token_counts.output_tokens <= 2


def test_bad_input_is_refused_in_one_line(qwen_stock, tmp_path, video_stand_in):
    lm_class = _plugin("qwen2_5_vl")
    cases = [
        (dict(), ValueError, r"^pitome_qwen2_5_vl needs pretrained=FOLDER"),
        (dict(pretrained=str(qwen_stock), visual_token=4), TypeError,
         r"^pitome_qwen2_5_vl --model_args: .* unknown setting 'visual_token'\. Did you mean 'visual_tokens'\?"),
        (dict(pretrained=str(qwen_stock), visual_tokens=0), ValueError,
         r"^pitome_qwen2_5_vl --model_args: .*visual_tokens"),
        (dict(pretrained=str(qwen_stock), batch_size="auto"), ValueError, r"batch_size='auto' .*pass --batch_size N"),
        (dict(pretrained=str(qwen_stock), dtype="float8"), ValueError, r"dtype='float8' is not one of float32"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            lm_class(device="cpu", **kwargs)
        assert "\n" not in str(caught.value), kwargs
    onevision = _stock_folder(tmp_path / "ov", "llava_onevision")
    with pytest.raises(ValueError, match=r"is a 'llava_onevision' model; --model pitome_qwen2_5_vl takes qwen2_5_vl "
                                         r"checkpoints \(stock or converted\); use --model pitome_llava_onevision\.$"):
        lm_class(pretrained=str(onevision), device="cpu")
    bare = tmp_path / "no_template"
    shutil.copytree(qwen_stock, bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match=r"has no chat template .*copy the base checkpoint's chat_template.jinja"):
        lm_class(pretrained=str(bare), device="cpu")
    lm = lm_class(pretrained=str(qwen_stock), device="cpu", visual_tokens=4)
    with pytest.raises(NotImplementedError, match=r"^pitome_qwen2_5_vl generates only: loglikelihood tasks are not "
                                                  r"supported; run generate_until tasks\.$"):
        lm.loglikelihood([])
    video = _requests(lm, [["clip.mp4"]], ["w3"])
    with pytest.raises(ValueError, match=r"^pitome_qwen2_5_vl takes images; document 0 gives a str \('clip.mp4'\)"):
        lm.generate_until(video)
    over = lm_class(pretrained=str(qwen_stock), device="cpu", visual_tokens=20)  # a 16 x 16 image has 16
    with pytest.raises(ValueError, match=r"visual_tokens=20") as caught:
        over.generate_until(_requests(over, [_images(np.random.default_rng(0), [(16, 16)])], ["w3"]))
    assert "\n" not in str(caught.value)

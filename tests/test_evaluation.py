"""Evaluation: metric modules offline, end-to-end sweeps, report schema, accelerate, FLOPs, clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pitome_hf.evaluation.evaluate import DataSpec, evaluate_model, validate_report, write_report
from pitome_hf.evaluation.metrics import load_metric

NAMES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    """A 3-class imagefolder dataset and a stock ViT whose 4 labels name them in another order."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    for name in NAMES:
        folder = root / "data" / "test" / name
        folder.mkdir(parents=True)
        for j in range(4):
            Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(folder / f"{j}.png")
    torch.manual_seed(0)
    labels = {0: "fox", 1: "cat", 2: "dog", 3: "owl"}
    config = ViTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=4, id2label=labels, label2id={v: k for k, v in labels.items()})
    ViTForImageClassification(config).save_pretrained(root / "model")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "model")
    return root


def test_metric_modules_load_offline_and_compute_known_values():
    assert load_metric("accuracy").compute(predictions=[1, 2, 3, 4], references=[1, 2, 0, 4]) == {"accuracy": 0.75}
    recall = load_metric("recall_at_k").compute(
        predictions=[[3, 1, 2], [0, 1, 2], [7, 8, 9]], references=[[1], [2, 5], [1]], k=[1, 2, 3]
    )
    assert recall == pytest.approx({"recall@1": 0.0, "recall@2": 1 / 3, "recall@3": 2 / 3})
    vqa = load_metric("vqa_accuracy").compute(
        predictions=["Two", "a cat", "dog"], references=[["2"] * 2 + ["3"] * 8, ["cat"] * 10, ["no"] * 10]
    )
    # "two" matches 2 of 10 annotators: 8 of the 10 leave-one-out subsets give 2/3, 2 give 1/3 -> 0.6
    assert vqa["vqa_accuracy"] == pytest.approx((0.6 + 1.0 + 0.0) / 3)
    with pytest.raises(ValueError, match="config_name='bleu' is not a pitome_hf metric; allowed: accuracy, "):
        load_metric("bleu")
    with pytest.raises(ValueError, match="accuracy needs at least one prediction"):
        load_metric("accuracy").compute(predictions=[], references=[])
    with pytest.raises(ValueError, match=r"k=\[0, 5\] has invalid cut-offs \[0\]"):
        load_metric("recall_at_k").compute(predictions=[[1]], references=[[1]], k=[0, 5])


def test_sweep_end_to_end_and_report_schema(tiny_task, tmp_path):
    report = evaluate_model(
        model=str(tiny_task / "model"), data=DataSpec(str(tiny_task / "data")), keep_ratios=[0.9, 0.7],
        batch_size=5, progress=False,
    )
    validate_report(report)
    rows = [(r["method"], r["keep_ratio"]) for r in report["results"]]
    assert rows == [("none", 1.0), ("tome", 0.9), ("pitome", 0.9), ("tome", 0.7), ("pitome", 0.7)]
    by = {(r["method"], r["keep_ratio"]): r for r in report["results"]}
    assert by[("tome", 0.7)]["gflops"] < by[("tome", 0.9)]["gflops"] < by[("none", 1.0)]["gflops"]
    assert all(r["num_samples"] == 12 and r["images_per_s"] > 0 for r in report["results"])
    assert by[("pitome", 0.7)]["token_counts"][0] == 64 and by[("pitome", 0.7)]["token_counts"][-1] < 64
    paths = write_report(report, tmp_path)
    assert validate_report(json.loads(paths["json"].read_text()))["task"] == "image-classification"
    assert paths["csv"].read_text().splitlines()[0].startswith("method,keep_ratio,accuracy,gflops")
    assert paths["png"].stat().st_size > 1000
    # predictions use the model's labels mapped by name: the unmerged accuracy is what a manual loop gives
    from pitome_hf import PiToMeViTForImageClassification

    model = PiToMeViTForImageClassification.from_pretrained(tiny_task / "model", merge_method="none").eval()
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(tiny_task / "model")
    correct = 0
    for label, name in enumerate(NAMES):
        for j in range(4):
            pixels = processor(images=Image.open(tiny_task / "data" / "test" / name / f"{j}.png"), return_tensors="pt")
            with torch.no_grad():
                logits = model(**pixels).logits[0, [1, 2, 0]]
            correct += int(logits.argmax().item() == label)
    assert by[("none", 1.0)]["metrics"]["accuracy"] == pytest.approx(correct / 12)


def test_two_accelerate_processes_give_the_same_metric(tiny_task, tmp_path):
    args = ["--model", str(tiny_task / "model"), "--dataset", str(tiny_task / "data"), "--keep-ratios", "0.8",
            "--batch-size", "3", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    one = subprocess.run([sys.executable, "-m", "pitome_hf.cli", "evaluate", *args, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    two = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
         "no", "--dynamo_backend", "no", "-m", "pitome_hf.cli", "evaluate", *args, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert a["num_processes"] == 1 and b["num_processes"] == 2
    assert [r["metrics"] for r in a["results"]] == [r["metrics"] for r in b["results"]]
    assert [r["num_samples"] for r in b["results"]] == [12, 12, 12]


def test_analytic_flops_match_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import ViTConfig, ViTForImageClassification

    from pitome_hf import apply_pitome
    from pitome_hf.flops import vit_flops

    config = ViTConfig(hidden_size=64, num_hidden_layers=6, num_attention_heads=4, intermediate_size=128,
                       image_size=64, patch_size=8, num_labels=7, attn_implementation="eager")
    stock = ViTForImageClassification(config).eval()
    for settings in (dict(merge_method="none"), dict(keep_ratio=0.8), dict(merge_method="tome", keep_ratio=0.7),
                     dict(merge_r=5, merge_metric="hidden"), dict(preset="authors-deit", keep_ratio=0.8),
                     dict(merge_method=["tome", "pitome_bsm", "none", "pitome", "tome", "pitome"], keep_ratio=0.75)):
        model = apply_pitome(stock, **settings)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
        measured = counter.get_total_flops()
        assert abs(vit_flops(model.config) - measured) <= 0.02 * measured, settings


def test_missing_column_is_named(tiny_task):
    with pytest.raises(ValueError, match="no label column 'fine_label'.*'image', 'label'"):
        evaluate_model(model=str(tiny_task / "model"), data=DataSpec(str(tiny_task / "data"), label_column="fine_label"),
                       progress=False)


def test_model_of_wrong_task_is_refused(tiny_task, tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'bert' model.*image-classification supports"):
        evaluate_model(model=str(tmp_path), data=DataSpec(str(tiny_task / "data")), progress=False)


@pytest.mark.parametrize("kwargs, fragment", [(dict(keep_ratios=[1.5]), r"--keep-ratios: keep_ratio=1.5 is out of range"),
                                              (dict(methods=["fast"]), "methods \\['fast'\\]"),
                                              (dict(task="captioning"), "task='captioning'")])
def test_bad_sweep_arguments(tiny_task, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        evaluate_model(model=str(tiny_task / "model"), data=DataSpec(str(tiny_task / "data")), progress=False, **kwargs)


def test_report_validation_names_the_problem():
    with pytest.raises(ValueError, match="schema"):
        validate_report({"schema": "other"})


def test_out_that_cannot_be_a_folder_fails_before_the_sweep(tiny_task, tmp_path, capsys):
    from pitome_hf.cli import main as cli

    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli(["evaluate", "--model", str(tiny_task / "model"), "--dataset", str(tiny_task / "data"),
                "--out", str(blocker / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"--output {blocker / 'out'} cannot be written" in err and "Nothing was run" in err
    assert len(err.strip().splitlines()) == 1


def test_rows_are_journaled_and_an_interrupted_run_resumes(tiny_task, tmp_path, capsys):
    args = dict(model=str(tiny_task / "model"), data=DataSpec(str(tiny_task / "data")), keep_ratios=[0.8],
                batch_size=6, out_dir=tmp_path)
    first = evaluate_model(**args)
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[1])["key"] == "none@1.0"
    (tmp_path / "rows.jsonl").write_text("\n".join(lines[:3]) + "\n")  # as if killed before the last row
    capsys.readouterr()
    second = evaluate_model(**args)
    err = capsys.readouterr().err
    assert err.count("reused from") == 2 and "[3/3] pitome 0.8: accuracy" in err
    assert [r["metrics"] for r in second["results"]] == [r["metrics"] for r in first["results"]]
    evaluate_model(**{**args, "keep_ratios": [0.7]})  # new rows are measured; the unmerged row is the same one
    err = capsys.readouterr().err
    assert err.count("reused from") == 1 and "none 1.0: reused" in err
    evaluate_model(**{**args, "batch_size": 4})  # another run setting: the journal is replaced, nothing reused
    assert "reused" not in capsys.readouterr().err

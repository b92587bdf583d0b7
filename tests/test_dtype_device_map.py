"""Big models across devices (issue #35): `evaluate --dtype auto` loads in the checkpoint's dtype, `--device-map`
spreads the model through accelerate, and apply_pitome keeps a spread model spread. This machine has no GPU: the
device map is exercised on one device (CPU), and the several-GPU path through a recorded `dispatch_model` call."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pitome_hf.evaluation.evaluate import DataSpec, check_device_map, checkpoint_dtype, evaluate_model


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A 3-class imagefolder and a stock ViT classifier saved in float32 and in bfloat16."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    root = tmp_path_factory.mktemp("devices")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog", "fox"):
        folder = root / "data" / "test" / name
        folder.mkdir(parents=True)
        for j in range(3):
            Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(folder / f"{j}.png")
    torch.manual_seed(0)
    labels = {0: "fox", 1: "cat", 2: "dog"}
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                       patch_size=4, id2label=labels, label2id={v: k for k, v in labels.items()})
    model = ViTForImageClassification(config)
    model.save_pretrained(root / "fp32")
    model.to(torch.bfloat16).save_pretrained(root / "bf16")
    for name in ("fp32", "bf16"):
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / name)
    return root


def _run(task, model, progress=False, **kwargs):
    return evaluate_model(model=str(task / model), data=DataSpec(str(task / "data")), methods=("none", "pitome"),
                          keep_ratios=[0.8], batch_size=5, progress=progress, **kwargs)


def test_auto_is_the_checkpoint_dtype(task):
    assert json.loads((task / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert checkpoint_dtype(str(task / "fp32")) == "float32" and checkpoint_dtype(str(task / "bf16")) == "bfloat16"
    report = _run(task, "bf16")
    assert report["dtype"] == "bfloat16" and [r["num_samples"] for r in report["results"]] == [9, 9]
    assert _run(task, "bf16", dtype="float32")["dtype"] == "float32"


def test_a_journal_written_in_float32_resumes_under_auto(task, tmp_path, capsys):
    """A run from before `auto` recorded dtype float32; the same run under auto resolves to it and reuses its rows."""
    first = _run(task, "fp32", dtype="float32", out_dir=tmp_path)
    capsys.readouterr()
    second = _run(task, "fp32", out_dir=tmp_path, progress=True)
    assert capsys.readouterr().err.count("reused from") == 2 and second["dtype"] == "float32"
    assert [r["metrics"] for r in second["results"]] == [r["metrics"] for r in first["results"]]


def test_device_map_loads_through_accelerate_and_gives_the_same_rows(task, monkeypatch):
    from pitome_hf.evaluation import tasks_base

    seen = []
    load = tasks_base.load_checked
    monkeypatch.setattr(tasks_base, "load_checked", lambda *a, **kw: seen.append(kw) or load(*a, **kw))
    from pitome_hf.evaluation import tasks_classification

    monkeypatch.setattr(tasks_classification, "load_checked", tasks_base.load_checked)
    spread = _run(task, "fp32", device_map="auto")
    assert seen == [{"dtype": torch.float32, "device_map": "auto"}]
    plain = _run(task, "fp32")
    assert seen[1] == {"dtype": torch.float32}
    assert [r["metrics"] for r in spread["results"]] == [r["metrics"] for r in plain["results"]]
    assert spread["device"] == plain["device"] == "cpu"


def test_device_map_refusals_are_one_line(task, capsys):
    from pitome_hf.cli import main as cli

    code = cli(["evaluate", "--model", str(task / "fp32"), "--dataset", str(task / "data"), "--device", "cpu",
                "--device-map", "auto", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--device cpu and --device-map auto: give one" in err[0]
    with pytest.raises(ValueError, match="runs in one process: run without accelerate launch"):
        check_device_map("auto", None, processes=2)
    with pytest.raises(ValueError, match="'everywhere' is not one of auto, balanced"):
        check_device_map("everywhere", None, processes=1)


def test_a_map_that_offloads_layers_is_refused():
    from pitome_hf.evaluation.tasks_base import Task

    runner = Task.__new__(Task)
    runner.device_map, runner.model_path = "auto", "big-model"
    net = torch.nn.Linear(2, 2)
    net.hf_device_map = {"embed": 0, "layers.0": 1, "layers.1": "cpu", "head": "disk"}
    with pytest.raises(ValueError, match="put some of big-model's layers on cpu and disk"):
        runner.place(net)
    net.hf_device_map = {"embed": 1, "layers": 0}
    assert runner.place(net) is net and runner.device == torch.device("cuda", 1)  # the inputs go where layer 0 is


def test_apply_pitome_spreads_the_merged_model_as_the_stock_one(monkeypatch):
    """A stock model spread by accelerate (hf_device_map over several devices) gives a PiToMe model dispatched with
    the same map; one whose offloaded weights sit on the meta device is refused."""
    import accelerate
    from transformers import ViTConfig, ViTModel

    from pitome_hf import apply_pitome

    calls = []
    monkeypatch.setattr(accelerate, "dispatch_model", lambda model, device_map: calls.append(device_map) or model)
    model = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               image_size=32, patch_size=4))
    spread = {"embeddings": 0, "layers.0": 0, "layers.1": 1, "layernorm": 1, "pooler": 1}
    model.hf_device_map = spread
    merged = apply_pitome(model, keep_ratio=0.8)
    assert calls == [spread] and merged.config.keep_ratio == 0.8
    model.hf_device_map = {"": "cpu"}
    apply_pitome(model, keep_ratio=0.8)
    assert calls == [spread]  # one device: nothing to dispatch
    model.layers[1].mlp.fc1.weight = torch.nn.Parameter(torch.empty(64, 32, device="meta"))
    model.hf_device_map = {**spread, "layers.1": "cpu"}
    with pytest.raises(ValueError, match="has offloaded weights"):
        apply_pitome(model, keep_ratio=0.8)

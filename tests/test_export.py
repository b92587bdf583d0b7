"""ONNX export (`pitome_hf.deployment.onnx`, `pitome-hf export`): every vision family's tiny model exported unmerged
and merged, ONNX Runtime equal to PyTorch, checker, metadata, refusals, the CLI's write-nothing-on-failure."""

import json
import sys

import numpy as np
import pytest
import torch
import transformers

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402

from pitome_hf.deployment.onnx import (  # noqa: E402
    check_file,
    export_onnx,
    merged_model,
    read_metadata,
    require_onnx,
    run_session,
    session,
)

from .contract_fixtures import VISION, dinov2_config  # noqa: E402


def _stock(name: str):
    configs = {
        "ViTForImageClassification": lambda: transformers.ViTConfig(**VISION, num_labels=3, hidden_dropout_prob=0.0,
                                                                    attention_probs_dropout_prob=0.0),
        "Dinov2Model": lambda: transformers.Dinov2Config(**dinov2_config()),
        "Dinov2WithRegistersModel": lambda: transformers.Dinov2WithRegistersConfig(**dinov2_config(
            num_register_tokens=2)),
        "CLIPVisionModelWithProjection": lambda: transformers.CLIPVisionConfig(**VISION, projection_dim=16),
        "SiglipVisionModel": lambda: transformers.SiglipVisionConfig(**VISION),
    }
    torch.manual_seed(0)
    config = configs[name]()
    config._attn_implementation = "sdpa"
    return getattr(transformers, name)(config).eval()


OUTPUTS = {
    "ViTForImageClassification": ["logits"],
    "Dinov2Model": ["last_hidden_state", "pooler_output"],
    "Dinov2WithRegistersModel": ["last_hidden_state", "pooler_output"],
    "CLIPVisionModelWithProjection": ["image_embeds", "last_hidden_state"],
    "SiglipVisionModel": ["last_hidden_state", "pooler_output"],
}


def _ort_vs_torch(path, model, batch=2, seed=3):
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    got = run_session(sess, x.numpy())
    with torch.inference_mode():
        want = model(pixel_values=x, return_dict=True)
    return names, {n: float(np.abs(g - getattr(want, n).numpy()).max()) for n, g in zip(names, got)}, got, want


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_each_vision_family_exports_merged_and_matches_pytorch(name, tmp_path):
    stock = _stock(name)
    path = tmp_path / "model.onnx"
    info = export_onnx(stock, path, batch_size=2, merge_method="pitome", keep_ratio=0.75)
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["pixel_values"]
    assert [o.name for o in proto.graph.output] == OUTPUTS[name] == info["outputs"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 32, 32]
    merged = merged_model(stock, merge_method="pitome", keep_ratio=0.75)
    names, diffs, _, want = _ort_vs_torch(path, merged, seed=3)  # a batch the export never saw
    assert names == OUTPUTS[name]
    assert max(diffs.values()) < 1e-4, diffs
    if "last_hidden_state" in names:  # the merged sequence: prefix + 21 of the 64 patches after 4 layers
        assert want.last_hidden_state.shape[1] == want.token_sizes.shape[1] < 64
    meta = read_metadata(path)
    assert json.loads(meta["merge_settings"])["merge_method"] == "pitome"
    assert json.loads(meta["keep_ratio"]) == 0.75 and json.loads(meta["token_schedule"]) == [64, 48, 36, 27, 21]
    assert meta["batch_size"] == "2" and meta["image_size"] == "32"


@pytest.mark.parametrize("method,keep", [("pitome", 1.0), ("tome", 0.75), ("pitome_bsm", 0.75)])
def test_classifier_each_method_and_unmerged(method, keep, tmp_path):
    stock = _stock("ViTForImageClassification")
    path = tmp_path / "m.onnx"
    info = export_onnx(stock, path, batch_size=4, merge_method=method, keep_ratio=keep)
    assert info["top1_agreement"] == 1.0 and info["max_abs_diff"]["logits"] < 1e-4
    model = merged_model(stock, merge_method=method, keep_ratio=keep)
    _, diffs, got, want = _ort_vs_torch(path, model, batch=4, seed=5)
    assert diffs["logits"] < 1e-4
    assert (got[0].argmax(-1) == want.logits.argmax(-1).numpy()).all()
    meta = read_metadata(path)
    assert json.loads(meta["merge_method"]) == method
    assert json.loads(meta["token_schedule"]) == ([64] * 5 if keep == 1.0 else [64, 48, 36, 27, 21])
    assert check_file(path, model)["max_abs_diff"]["logits"] < 1e-4


def test_dynamic_batch(tmp_path):
    stock = _stock("ViTForImageClassification")
    path = tmp_path / "dyn.onnx"
    export_onnx(stock, path, batch_size=2, dynamic_batch=True, keep_ratio=0.75)
    model = merged_model(stock, keep_ratio=0.75)
    sess = session(path)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        with torch.inference_mode():
            assert np.abs(run_session(sess, x.numpy())[0] - model(x).logits.numpy()).max() < 1e-4
    assert read_metadata(path)["batch_size"] == "dynamic"


def test_stable_sort_translation_breaks_ties_like_torch(tmp_path):
    """The merge ranks energies with a stable sort; exported as TopK, ties must still go to the lower index."""
    from pitome_hf.deployment.onnx import translation_table

    class Ranks(torch.nn.Module):
        def forward(self, x):
            return (torch.sort(x, dim=1, descending=True, stable=True).indices,
                    torch.sort(x, dim=1, stable=True).indices)

    x = torch.randint(0, 3, (4, 50)).float()
    path = tmp_path / "ties.onnx"
    torch.onnx.export(Ranks().eval(), (x,), str(path), dynamo=True, opset_version=18, input_names=["x"],
                      custom_translation_table=translation_table())
    sess = session(path)
    for t in (x, torch.zeros(4, 50), torch.randint(0, 2, (4, 50)).float()):
        down, up = sess.run(None, {"x": t.numpy()})
        want_down, want_up = Ranks()(t)
        assert (down == want_down.numpy()).all() and (up == want_up.numpy()).all()


def test_refusals_name_the_setting(tmp_path):
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ValueError, match="per-row budgets.*attention_mask"):
        export_onnx(bert, tmp_path / "b.onnx", keep_ratio=0.9)
    clip = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=50, max_position_embeddings=16), vision_config=dict(VISION, num_hidden_layers=1)))
    with pytest.raises(ValueError, match="takes text.*PiToMeCLIPVisionModel"):
        export_onnx(clip, tmp_path / "c.onnx")
    vit = _stock("ViTForImageClassification")
    with pytest.raises(ValueError, match="keep_ratio=1.5.*\\(0, 1\\]"):
        export_onnx(vit, tmp_path / "v.onnx", keep_ratio=1.5)
    with pytest.raises(ValueError, match="image size 48 px.*allowed: its config's 32 px"):
        export_onnx(vit, tmp_path / "v.onnx", image_size=48, keep_ratio=0.9)
    with pytest.raises(ValueError, match="batch size 0"):
        export_onnx(vit, tmp_path / "v.onnx", batch_size=0, keep_ratio=0.9)
    resnet = transformers.ResNetModel(transformers.ResNetConfig(hidden_sizes=[8], depths=[1], embedding_size=8))
    with pytest.raises(ValueError, match="ResNetModel cannot be exported to ONNX; export takes CLIPVisionModel, .*ViTModel"):
        export_onnx(resnet, tmp_path / "r.onnx")  # the classes export takes, not those convert takes
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging file left


def test_missing_onnx_stack_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=r'onnxscript is not installed.*pip install "pitome_hf\[onnx\]"'):
        require_onnx()


def test_cli_export_default_and_refusals(tmp_path, capsys, monkeypatch):
    from pitome_hf.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["export", "default", "--output", "out", "--batch-size", "3", "--merge-method", "tome",
                 "--keep-ratio", "0.8", "--margin", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "onnx.checker passed" in printed and "top-1 agreement 1.000" in printed
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["config.json", "model.onnx", "onnx_export.json", "preprocessor_config.json"]
    meta = read_metadata(tmp_path / "out" / "model.onnx")
    settings = json.loads(meta["merge_settings"])
    assert settings["merge_method"] == "tome" and settings["keep_ratio"] == 0.8 and settings["margin"] == 0.5
    assert meta["input"] == "pixel_values (3, 3, 28, 28) float32"
    before = (tmp_path / "out" / "model.onnx").read_bytes()
    # an existing output is refused (exit 2), and left as it was
    assert main(["export", "default", "--output", "out", "--keep-ratio", "0.9"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "out" / "model.onnx").read_bytes() == before
    # --force replaces an earlier export folder; onnx_export.json records the written graph
    assert main(["export", "default", "--output", "out", "--keep-ratio", "0.9", "--force"]) == 0
    capsys.readouterr()
    recorded = json.loads((tmp_path / "out" / "onnx_export.json").read_text())
    assert recorded["opset"] == 18 and recorded["batch_size"] is None and recorded["image_size"] == 28  # dynamic
    assert recorded["metadata"]["pitome_hf.exporter"].endswith("opset 18")
    assert json.loads(recorded["metadata"]["pitome_hf.keep_ratio"]) == 0.9
    # failures write nothing: a bad ratio, a wrong size for a fixed-size export
    assert main(["export", "default", "--output", "bad", "--keep-ratio", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keep_ratio=0" in err[0]
    assert main(["export", "default", "--output", "bad", "--image-size", "32"]) == 2
    assert "image size 32 px" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_export_folder_loads_as_optimum_loads_its_own_exports(tmp_path, monkeypatch):
    """The contract optimum's ORTModelFor... classes rely on (issue 34): config.json loads with stock AutoConfig and
    no remote code (stock model_type and class, no auto_map, the merge settings kept as fields), the input and output
    names optimum's classes read, and a dynamic batch by default (ONNX Runtime runs batches of 1 and 3)."""
    from pitome_hf.cli import main
    from pitome_hf.paths import DEFAULT_MODEL

    monkeypatch.chdir(tmp_path)
    assert main(["export", "default", "--output", "out", "--merge-method", "tome", "--keep-ratio", "0.8"]) == 0
    folder = tmp_path / "out"
    raw = json.loads((folder / "config.json").read_text())
    assert raw["model_type"] == "vit" and raw["architectures"] == ["ViTForImageClassification"]
    assert "auto_map" not in raw
    config = transformers.AutoConfig.from_pretrained(folder)  # no trust_remote_code
    assert type(config) is transformers.ViTConfig
    assert config.merge_method == "tome" and config.keep_ratio == 0.8 and config.margin == 0.9
    assert config.id2label[9] == "Ankle boot"
    assert transformers.AutoImageProcessor.from_pretrained(folder).size == {"height": 28, "width": 28}
    sess = session(folder / "model.onnx")
    assert [i.name for i in sess.get_inputs()] == ["pixel_values"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    assert sess.get_inputs()[0].shape[0] == "batch" and sess.get_inputs()[0].shape[1:] == [3, 28, 28]
    model = merged_model(transformers.AutoModelForImageClassification.from_pretrained(DEFAULT_MODEL),
                         merge_method="tome", keep_ratio=0.8)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 28, 28, generator=torch.Generator().manual_seed(batch))
        got = run_session(sess, x.numpy())[0]
        with torch.inference_mode():
            want = model(pixel_values=x).logits.numpy()
        assert got.shape == (batch, 10) and np.abs(got - want).max() < 1e-4
    recorded = json.loads((folder / "onnx_export.json").read_text())
    assert recorded["batch_size"] is None and json.loads(recorded["metadata"]["pitome_hf.keep_ratio"]) == 0.8
    assert read_metadata(folder / "model.onnx")["batch_size"] == "dynamic"
    # a static batch stays one flag away
    assert main(["export", "default", "--output", "static", "--batch-size", "4", "--keep-ratio", "0.8"]) == 0
    assert session(tmp_path / "static" / "model.onnx").get_inputs()[0].shape == [4, 3, 28, 28]


@pytest.mark.parametrize("name", ["SiglipVisionModel", "Dinov2Model"])
def test_a_dynamic_batch_traced_on_one_image_stays_dynamic(name, tmp_path):
    """Traced on one image, torch.export specialised SigLIP's batch axis to 1 (then refused as another graph than
    asked); a dynamic batch is traced on at least two, and the export's own check runs another batch size."""
    stock = _stock(name)
    path = tmp_path / "m.onnx"
    info = export_onnx(stock, path, batch_size=1, dynamic_batch=True, keep_ratio=0.75)
    assert info["batch_size"] is None and read_metadata(path)["batch_size"] == "dynamic"
    model = merged_model(stock, keep_ratio=0.75)
    for batch in (1, 3):
        _, diffs, got, _ = _ort_vs_torch(path, model, batch=batch)
        assert got[0].shape[0] == batch and max(diffs.values()) < 1e-4, diffs


def _saved(folder, name="ViTForImageClassification"):
    _stock(name).save_pretrained(folder)
    return folder


def _cli_error(capsys, *argv):
    """(exit code, the one error line) of `pitome-hf ARGV`; fails unless the error is one line."""
    from pitome_hf.cli import main

    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1, err
    return code, err[0]


def test_force_replaces_only_a_folder_export_wrote(tmp_path, capsys):
    """--force on another model's checkpoint folder (issue 31): refused in one line, its weights kept."""
    base = _saved(tmp_path / "vit")
    other = _saved(tmp_path / "other", "Dinov2Model")
    weights = (other / "model.safetensors").read_bytes()
    code, err = _cli_error(capsys, "export", base, "--output", other, "--force")
    assert code == 2 and f"--output {other} exists and is not empty, and is not an export folder" in err
    assert "it has no model.onnx or onnx_export.json" in err and "choose another --output" in err
    assert (other / "model.safetensors").read_bytes() == weights
    # an export folder with a file export does not write is not replaced either
    looks = tmp_path / "looks"
    looks.mkdir()
    for name in ("model.onnx", "onnx_export.json", "config.json", "notes.txt"):
        (looks / name).write_text("x")
    code, err = _cli_error(capsys, "export", base, "--output", looks, "--force")
    assert code == 2 and "it holds notes.txt, which export does not write" in err
    assert sorted(p.name for p in looks.iterdir()) == ["config.json", "model.onnx", "notes.txt", "onnx_export.json"]


@pytest.mark.parametrize("opset", [5, 17, 26, 99])
def test_an_opset_outside_the_exporters_range_is_refused(opset, tmp_path, capsys):
    """Below 18 the exporter silently wrote opset 18 (its metadata said the request); above 25 it failed in a
    traceback (issue 31)."""
    vit = _stock("ViTForImageClassification")
    with pytest.raises(ValueError, match=f"opset {opset} is out of range: .* writes opsets 18 to 25; the default is 18"):
        export_onnx(vit, tmp_path / "v.onnx", opset=opset)
    code, err = _cli_error(capsys, "export", _saved(tmp_path / "vit"), "--output", tmp_path / "out", "--opset", opset)
    assert code == 2 and f"opset {opset} is out of range" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vit"]


def test_metadata_records_the_written_graph_never_the_request(tmp_path, monkeypatch):
    """The opset, batch and size in metadata_props come from the file; an exporter that writes another opset than
    asked (as torch's does below 18) is refused, nothing written."""
    vit = _stock("ViTForImageClassification")
    info = export_onnx(vit, tmp_path / "v19.onnx", batch_size=2, opset=19, keep_ratio=0.75, check=False)
    proto = onnx.load(str(tmp_path / "v19.onnx"))
    assert [i.version for i in proto.opset_import if i.domain == ""] == [19] and info["opset"] == 19
    meta = read_metadata(tmp_path / "v19.onnx")
    assert meta["exporter"].endswith("opset 19") and meta["input"] == "pixel_values (2, 3, 32, 32) float32"
    real = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **kw: real(*a, **{**kw, "opset_version": 18}))
    with pytest.raises(RuntimeError, match="the exporter wrote another graph than asked .opset 18 instead of 20."):
        export_onnx(vit, tmp_path / "v20.onnx", opset=20, keep_ratio=0.75)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v19.onnx"]


def test_a_killed_exports_partial_file_is_removed_by_the_next(tmp_path):
    import os

    dead = tmp_path / ".model.onnx.partial-999999999-0123abcd"  # left by an export_onnx killed mid-write
    dead.write_bytes(b"\x08" * 1000)
    alive = tmp_path / f".model.onnx.partial-{os.getppid()}-89abcdef"  # a live process is still writing it
    alive.write_bytes(b"\x08")
    other = tmp_path / ".other.onnx.partial-999999999-0123abcd"  # another output's: not ours to remove
    other.write_bytes(b"\x08")
    export_onnx(_stock("ViTForImageClassification"), tmp_path / "model.onnx", keep_ratio=0.9, check=False)
    assert not dead.exists() and alive.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["model.onnx"]


def test_unreadable_weights_and_unsupported_checkpoints_are_one_line(tmp_path, capsys):
    base = _saved(tmp_path / "broken")
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, err = _cli_error(capsys, "export", base, "--output", tmp_path / "out")
    assert code == 1 and f"{weights} cannot be read (SafetensorError" in err and "truncated or corrupt" in err
    transformers.ResNetModel(transformers.ResNetConfig(hidden_sizes=[8], depths=[1], embedding_size=8)).save_pretrained(
        tmp_path / "resnet")
    code, err = _cli_error(capsys, "export", tmp_path / "resnet", "--output", tmp_path / "out")
    assert code == 2 and "a 'resnet' model, architectures ['ResNetModel']) cannot be exported to ONNX" in err
    assert "export takes CLIPVisionModel, " in err and "BertModel" not in err and "LlavaModel" not in err
    transformers.BertModel(transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=64)).save_pretrained(
        tmp_path / "bert")
    code, err = _cli_error(capsys, "export", tmp_path / "bert", "--output", tmp_path / "out")
    assert code == 2 and "BertModel cannot be exported: text models merge padded batches" in err
    assert not (tmp_path / "out").exists()

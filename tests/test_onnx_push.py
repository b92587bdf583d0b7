"""`pitome-hf push --onnx` (model.onnx beside the weights, checked first) and `pitome-hf benchmark --modes onnx`."""

import json

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from .test_hub import hub, pitome_folder, push_cli, snapshot  # noqa: E402,F401  (fixtures)


def test_push_onnx_uploads_a_checked_model_onnx_and_names_it_on_the_card(hub, pitome_folder, tmp_path):  # noqa: F811
    done = push_cli(hub, tmp_path, pitome_folder, "org/vit-onnx", "--onnx", "--no-verify")
    assert done.returncode == 0, done.stderr[-3000:]
    files = snapshot(hub, "org/vit-onnx")
    assert "model.onnx" in files and "model.safetensors" in files
    assert hub.state.commits == 1
    card = files["README.md"].decode()
    assert "## ONNX" in card and "`model.onnx`" in card and 'hf_hub_download("org/vit-onnx", "model.onnx")' in card

    import numpy as np
    import onnxruntime as ort
    import torch

    from pitome_hf import PiToMeViTForImageClassification

    path = tmp_path / "pushed.onnx"
    path.write_bytes(files["model.onnx"])
    meta = {p.key: p.value for p in __import__("onnx").load(str(path)).metadata_props}
    assert json.loads(meta["pitome_hf.keep_ratio"]) == 0.8 and meta["pitome_hf.batch_size"] == "dynamic"
    x = torch.randn(3, 3, 64, 64)
    model = PiToMeViTForImageClassification.from_pretrained(pitome_folder).eval()
    with torch.inference_mode():
        want = model(x).logits.numpy()
    got = ort.InferenceSession(str(path)).run(None, {"pixel_values": x.numpy()})[0]
    assert np.abs(got - want).max() < 1e-4


def test_push_onnx_refuses_a_file_of_other_settings_before_any_request(hub, pitome_folder, tmp_path):  # noqa: F811
    from pitome_hf.commands.export import export_folder

    other = export_folder(str(pitome_folder), tmp_path / "other", keep_ratio=0.5)["path"]
    refused = push_cli(hub, tmp_path, pitome_folder, "org/vit-onnx2", "--onnx", other, "--no-verify")
    assert refused.returncode == 2
    err = [line for line in refused.stderr.splitlines() if "error" in line]  # (transformers' loading bar aside)
    assert len(err) == 1 and "other merge settings" in err[0] and "keep_ratio: 0.5 vs 0.8" in err[0]
    assert "org/vit-onnx2" not in hub.state.repos
    missing = push_cli(hub, tmp_path, pitome_folder, "org/vit-onnx2", "--onnx", tmp_path / "none.onnx", "--no-verify")
    assert missing.returncode == 1 and "no such file" in missing.stderr
    assert "org/vit-onnx2" not in hub.state.repos


def test_benchmark_onnx_mode_rows_side_by_side(tmp_path):
    from pitome_hf.commands.benchmark import main

    out = tmp_path / "rows.json"
    assert main(["default", "--modes", "eager", "onnx", "--keep-ratios", "0.9", "--methods", "tome", "--batch-size", "8",
                 "--warmup", "1", "--repeats", "3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    onnx_rows = [r for r in rows if r["mode"] == "onnx"]
    assert [(r["method"], r["keep_ratio"]) for r in onnx_rows] == [("none", 1.0), ("tome", 0.9)]
    eager = {r["method"]: r for r in rows if r["mode"] == "eager"}
    for r in onnx_rows:  # the same FLOPs owner and ideal as the eager rows; a measured ratio of its own
        assert r["ideal_speedup"] == eager[r["method"]]["ideal_speedup"]
        assert r["images_per_s"] > 0 and r["measured_over_ideal"] == pytest.approx(r["speedup"] / r["ideal_speedup"])
        assert r["merge_ms_per_layer"] is None
    with pytest.raises(ValueError, match="--modes onnx runs float32 graphs; got --dtype bfloat16"):
        main(["default", "--modes", "onnx", "--keep-ratios", "0.9", "--methods", "tome", "--batch-size", "2",
              "--dtype", "bfloat16", "--warmup", "1", "--repeats", "3"])


def test_push_onnx_given_no_export_of_this_model_names_the_file(pitome_folder, tmp_path, capsys):  # noqa: F811
    """Another input size, a config.json, a truncated file, the export folder instead of its file: one line naming
    the file and what to give, before any request (issue 31)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from pitome_hf.cli import main
    from pitome_hf.deployment.onnx import export_onnx

    from .conftest import tiny_vit_kwargs

    def refused(path):
        code = main(["push", str(pitome_folder), "org/never", "--onnx", str(path), "--no-verify"])
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert code in (1, 2) and len(err) == 1, err
        return err[0]

    torch.manual_seed(0)  # the folder's model at 32 px instead of 64, with the folder's merge settings
    small = ViTForImageClassification(ViTConfig(**tiny_vit_kwargs(image_size=32, patch_size=8, num_hidden_layers=4)))
    folder = tmp_path / "export"
    path = folder / "model.onnx"
    export_onnx(small, path, keep_ratio=0.8, check=False)
    err = refused(path)
    assert f"--onnx {path} was exported for 32 px images, another input size than this model's" in err
    assert "allowed: its config's 64 px" in err
    assert f"--onnx {folder} is a folder, not an ONNX file; give the file in it: {path}." in refused(folder)
    config = pitome_folder / "config.json"
    assert f"--onnx {config} is not a valid ONNX model (" in refused(config)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    err = refused(cut)
    assert f"--onnx {cut} is not a valid ONNX model (" in err and "written by `pitome-hf export`" in err

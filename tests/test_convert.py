"""`pitome-hf convert`: stock checkpoint folder -> PiToMe folder, all weights or nothing written."""

import json

import pytest
import torch

from pitome_hf import PiToMeViTForImageClassification
from pitome_hf.checkpoint import convert_checkpoint, main


def test_convert_vit_folder(stock_vit_dir, tmp_path):
    out = convert_checkpoint(str(stock_vit_dir), tmp_path / "vit-pitome", keep_ratio=0.8, merge_method="tome")
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_pitome_vit.py", "configuration_pitome_vit.py",
            "merging.py", "preprocessor_config.json"} <= files
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "pitome_vit" and config["merge_method"] == "tome" and config["keep_ratio"] == 0.8
    assert config["architectures"] == ["PiToMeViTForImageClassification"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    model, info = PiToMeViTForImageClassification.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    direct = PiToMeViTForImageClassification.from_pretrained(stock_vit_dir, keep_ratio=0.8, merge_method="tome")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x).logits, direct.eval()(x).logits)


def test_convert_clip_folder(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from pitome_hf import PiToMeCLIPModel

    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=99, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(tmp_path / "clip")
    out = convert_checkpoint(str(tmp_path / "clip"), tmp_path / "clip-pitome", keep_ratio=0.9)
    model, info = PiToMeCLIPModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert json.loads((out / "config.json").read_text())["model_type"] == "pitome_clip"


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="cannot convert a 'gpt2' model.*supported base architectures are.*ViTModel"):
        convert_checkpoint(str(tmp_path / "gpt2"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_output_is_not_overwritten_unless_forced(stock_vit_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty"):
        convert_checkpoint(str(stock_vit_dir), out)
    assert (out / "keep.txt").read_text() == "mine"
    convert_checkpoint(str(stock_vit_dir), out, force=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()


def test_corrupt_weights_write_nothing(stock_vit_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(stock_vit_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(Exception):
        convert_checkpoint(str(broken), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_rejects_a_bad_ratio_with_a_message(stock_vit_dir, tmp_path, capsys):
    from pitome_hf.cli import main as cli

    assert cli(["convert", str(stock_vit_dir), "--keep-ratio", "1.7", "--output", str(tmp_path / "o")]) == 2
    assert "keep_ratio=1.7 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main([str(stock_vit_dir), "--keep-ratio", "0.9", "--output", str(tmp_path / "ok")]) == 0

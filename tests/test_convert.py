"""`pitome-hf convert`: stock checkpoint folder -> PiToMe folder, all weights or nothing written."""

import json

import pytest
import torch

from pitome_hf import PiToMeViTForImageClassification
from pitome_hf.commands.convert import convert_checkpoint, main


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
    with pytest.raises(ValueError, match="is not a PiToMe checkpoint folder .*: it has no config.json. --force "
                                         "replaces only such a folder; choose another --output"):
        convert_checkpoint(str(stock_vit_dir), out, force=True)  # --force never empties an arbitrary folder
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    convert_checkpoint(str(stock_vit_dir), out, keep_ratio=0.8)
    (out / "stale.txt").write_text("from before")
    convert_checkpoint(str(stock_vit_dir), out, force=True)  # an earlier checkpoint folder is replaced
    assert not (out / "stale.txt").exists() and json.loads((out / "config.json").read_text())["keep_ratio"] == 0.9


def test_force_never_replaces_another_models_checkpoint(stock_vit_dir, tmp_path, capsys):
    """A folder holding config.json is not yet one convert wrote (issue 31): a stock checkpoint is refused, kept."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(stock_vit_dir, other)
    weights = (other / "model.safetensors").read_bytes()
    from pitome_hf.cli import main as cli

    assert cli(["convert", str(stock_vit_dir), "--output", str(other), "--force"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and f"--output {other} exists and is not empty, and is not a PiToMe checkpoint folder" in err[0]
    assert "its config.json holds a 'vit' model, not a PiToMe one" in err[0]
    assert (other / "model.safetensors").read_bytes() == weights
    exported = tmp_path / "exported"  # an export folder: a PiToMe config.json, but not written by convert
    exported.mkdir()
    (exported / "config.json").write_text(json.dumps({"model_type": "pitome_vit"}))
    (exported / "model.onnx").write_bytes(b"\x08")
    with pytest.raises(ValueError, match="is not a PiToMe checkpoint folder .*it holds no weights"):
        convert_checkpoint(str(stock_vit_dir), exported, force=True)
    assert (exported / "model.onnx").read_bytes() == b"\x08"


def test_corrupt_weights_write_nothing(stock_vit_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(stock_vit_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match=f"{weights} cannot be read .SafetensorError.*truncated or corrupt"):
        convert_checkpoint(str(broken), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_rejects_a_bad_ratio_with_a_message(stock_vit_dir, tmp_path, capsys):
    from pitome_hf.cli import main as cli

    assert cli(["convert", str(stock_vit_dir), "--keep-ratio", "1.7", "--output", str(tmp_path / "o")]) == 2
    assert "keep_ratio=1.7 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main([str(stock_vit_dir), "--keep-ratio", "0.9", "--output", str(tmp_path / "ok")]) == 0


def test_local_folder_never_asks_the_hub(stock_vit_dir, tmp_path, monkeypatch):
    """A bare relative folder name is a folder: no model card or file is requested from the Hub for it."""
    import shutil

    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: calls.append(("snapshot", a)))
    real_load = huggingface_hub.ModelCard.load
    monkeypatch.setattr(huggingface_hub.ModelCard, "load",
                        classmethod(lambda cls, x, *a, **k: calls.append(("card", x)) or real_load(x, *a, **k)))
    shutil.copytree(stock_vit_dir, tmp_path / "stock-vit")
    monkeypatch.chdir(tmp_path)
    out = convert_checkpoint("stock-vit", "pitome-vit", keep_ratio=0.9)
    assert calls == []  # no README.md in the folder: the licence is simply unknown
    config = json.loads((out / "config.json").read_text())
    assert "pitome_base_model" not in config  # a local folder is no Hub id: the card names no base model
    (tmp_path / "stock-vit" / "README.md").write_text("---\nlicense: apache-2.0\n---\n# x\n")
    out = convert_checkpoint("stock-vit", "pitome-vit2", base_model="google/vit-base-patch16-224")
    config = json.loads((out / "config.json").read_text())
    assert config["pitome_base_license"] == "apache-2.0" and config["pitome_base_model"] == "google/vit-base-patch16-224"
    assert [c[0] for c in calls] == ["card"] and str(calls[0][1]).endswith("README.md")


def test_missing_local_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_checkpoint(str(tmp_path / "nope"), tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        convert_checkpoint(str(tmp_path / "empty"), tmp_path / "out")


def test_tokenizer_files_are_copied_never_invented(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         vocab_size=30)).save_pretrained(tmp_path / "bare")
    out = convert_checkpoint(str(tmp_path / "bare"), tmp_path / "bare-pitome", keep_ratio=0.9)
    assert not [p.name for p in out.iterdir() if "token" in p.name or p.name == "vocab.txt"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat"]))
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(tmp_path / "bare")
    out = convert_checkpoint(str(tmp_path / "bare"), tmp_path / "with-tok", keep_ratio=0.9)
    assert (out / "tokenizer_config.json").is_file()
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out)("a photo of a cat")["input_ids"] == \
        AutoTokenizer.from_pretrained(tmp_path / "bare")("a photo of a cat")["input_ids"]


def test_stale_staging_from_a_killed_run_is_removed(stock_vit_dir, tmp_path):
    dead = tmp_path / ".out.partial-999999999-0123abcd"
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"x" * 1000)
    old = tmp_path / ".out.old-999999999-89abcdef"
    old.mkdir()
    other = tmp_path / ".other.partial-999999999-0123abcd"  # another output's: not ours to remove
    other.mkdir()
    convert_checkpoint(str(stock_vit_dir), tmp_path / "out")
    assert not dead.exists() and not old.exists() and other.exists()


def test_convert_with_a_preset_and_per_layer_methods(stock_vit_dir, tmp_path):
    out = convert_checkpoint(str(stock_vit_dir), tmp_path / "deit", preset="authors-deit", keep_ratio=0.8,
                             classifier_pooling="mean")
    config = json.loads((out / "config.json").read_text())
    assert config["merge_preset"] == "authors-deit" and config["merge_method"] == ["pitome_bsm"] * 2 + ["pitome"] * 2
    assert config["classifier_pooling"] == "mean" and config["energy"] == "elu"
    assert main([str(stock_vit_dir), "--method", "tome", "pitome_bsm", "none", "pitome", "--output",
                 str(tmp_path / "mixed")]) == 0
    assert json.loads((tmp_path / "mixed" / "config.json").read_text())["merge_method"] == ["tome", "pitome_bsm", "none", "pitome"]


def test_output_that_is_a_file_is_refused(stock_vit_dir, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        convert_checkpoint(str(stock_vit_dir), tmp_path / "f")
    with pytest.raises(ValueError, match=f"cannot be written: {tmp_path / 'f'} is a file, not a folder"):
        convert_checkpoint(str(stock_vit_dir), tmp_path / "f" / "sub" / "out")


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where, relation", [("input", "is the input checkpoint"),
                                             ("parent", "contains the input checkpoint"),
                                             ("inside", "is inside the input checkpoint")])
def test_output_that_is_holds_or_sits_in_the_input_is_refused_even_forced(stock_vit_dir, tmp_path, capsys, where,
                                                                         relation):
    import shutil

    from pitome_hf.cli import main as cli

    base = tmp_path / "models" / "stock"
    shutil.copytree(stock_vit_dir, base)
    (tmp_path / "models" / "notes.txt").write_text("beside the input")
    before = _tree(tmp_path)
    output = {"input": base, "parent": tmp_path / "models", "inside": base / "pitome"}[where]
    for extra in ([], ["--force"]):
        assert cli(["convert", str(base), "--output", str(output), *extra]) == 2
        err = capsys.readouterr().err
        assert f"--output {output} {relation} {base}" in err and len(err.strip().splitlines()) == 1
        assert _tree(tmp_path) == before  # nothing deleted, nothing written
    # the same folder named another way (relative, through a symlinked parent) is the same folder
    (tmp_path / "alias").symlink_to(tmp_path / "models")
    with pytest.raises(ValueError, match="is the input checkpoint"):
        convert_checkpoint(str(base), tmp_path / "alias" / "stock", force=True)
    assert _tree(tmp_path / "models") == {k[len("models/"):]: v for k, v in before.items()}


def test_output_that_is_a_symlink_is_refused_before_writing(stock_vit_dir, tmp_path):
    real = convert_checkpoint(str(stock_vit_dir), tmp_path / "real", keep_ratio=0.8)
    before = _tree(real)
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for link in ("link", "dangling"):
        with pytest.raises(ValueError, match=f"--output {tmp_path / link} is a symbolic link"):
            convert_checkpoint(str(stock_vit_dir), tmp_path / link, force=True)
    assert _tree(real) == before and (tmp_path / "link").is_symlink() and not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "link", "real"]  # no staging left


def test_output_that_is_the_current_folder_or_empty_is_refused(stock_vit_dir, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.json").write_text("{}")  # even a folder that looks like a checkpoint
    monkeypatch.chdir(work)
    for output in (".", str(work), str(tmp_path)):
        with pytest.raises(ValueError, match="is the current folder or holds it"):
            convert_checkpoint(str(stock_vit_dir), output, force=True)
    with pytest.raises(ValueError, match="--output is empty"):
        convert_checkpoint(str(stock_vit_dir), "")
    assert [p.name for p in work.iterdir()] == ["config.json"]


def test_unwritable_output_is_refused_before_loading(stock_vit_dir, tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(ValueError, match=f"--output {locked / 'out'} cannot be written: {locked} is not writable"):
            convert_checkpoint(str(stock_vit_dir), locked / "out")
    finally:
        locked.chmod(0o755)


def test_base_model_that_is_no_hub_id_is_refused(stock_vit_dir, tmp_path):
    for bad in ("./local", "not an id", str(stock_vit_dir)):
        with pytest.raises(ValueError, match="--base-model .* must be a Hub model id"):
            convert_checkpoint(str(stock_vit_dir), tmp_path / "out", base_model=bad)
    assert not (tmp_path / "out").exists()


def test_a_killed_runs_staging_files_and_folders_are_removed_alike(tmp_path):
    """One mechanism for the staging of folders (convert, export) and files (export_onnx): dead processes' go, a
    live one's and this process's current one stay."""
    import os

    from pitome_hf.commands.convert import remove_stale_staging, staging_path

    out = tmp_path / "model.onnx"
    dead_file, dead_dir = tmp_path / ".model.onnx.partial-999999999-0123abcd", tmp_path / ".model.onnx.old-999999999-0123abcd"
    dead_file.write_bytes(b"x")
    dead_dir.mkdir()
    live = tmp_path / f".model.onnx.partial-{os.getppid()}-89abcdef"
    live.write_bytes(b"x")
    with staging_path(out) as mine:
        mine.write_bytes(b"x")
        remove_stale_staging(out)
        assert mine.exists() and live.exists() and not dead_file.exists() and not dead_dir.exists()
    remove_stale_staging(out)  # this process's, once its block ended, is stale too
    assert not mine.exists() and live.exists()

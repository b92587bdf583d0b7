"""`convert` of a sharded (or > 1 GiB) safetensors checkpoint copies the base's weight files as they are instead of
loading the model and saving it again, after checking their headers against the PiToMe model on the meta device
(issue #35): the same folder as the loading path, and the same refusals, with nothing written."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from pitome_hf.commands import convert
from pitome_hf.commands.convert import convert_checkpoint
from pitome_hf.families import entry_for_config_dict, family_of

from .test_contract import MAIN_ENTRIES, stock_model

INDEX = "model.safetensors.index.json"


def _sharded_stock(name, path):
    entry = next(e for e in MAIN_ENTRIES if e.stock.__name__ == name)
    stock_model(entry).save_pretrained(path, max_shard_size="40KB")
    assert (path / INDEX).is_file()
    return path


def _outputs(folder):
    config = json.loads((folder / "config.json").read_text())
    model = entry_for_config_dict(config).pitome.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(**family_of(model.config).dummy_inputs(model.config))
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


@pytest.mark.parametrize("name", ["ViTForImageClassification", "CLIPModel", "LlavaForConditionalGeneration"])
def test_a_sharded_base_is_copied_file_by_file_into_the_folder_loading_would_write(name, tmp_path, monkeypatch):
    base = _sharded_stock(name, tmp_path / "stock")
    loaded = convert_checkpoint(str(base), tmp_path / "loaded", keep_ratio=0.8, stream=False)
    monkeypatch.setattr(convert, "load_cleanly", lambda *a, **k: pytest.fail("the streamed path loaded the model"))
    streamed = convert_checkpoint(str(base), tmp_path / "streamed", keep_ratio=0.8)  # sharded: streamed by default
    non_weights = lambda folder: sorted(p.name for p in folder.iterdir() if "safetensors" not in p.name)  # noqa: E731
    assert non_weights(streamed) == non_weights(loaded)
    assert json.loads((streamed / "config.json").read_text()) == json.loads((loaded / "config.json").read_text())
    for shard in base.glob("*.safetensors*"):
        assert (streamed / shard.name).read_bytes() == shard.read_bytes()
    a, b = _outputs(loaded), _outputs(streamed)
    assert a.keys() == b.keys()
    for key in a:  # the same weights; CLIP differs in the last float bits between the two files' tensor layouts
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)


def test_a_small_single_file_base_still_loads_and_saves(stock_vit_dir, tmp_path, monkeypatch):
    calls = []
    load = convert.load_cleanly
    monkeypatch.setattr(convert, "load_cleanly", lambda *a, **k: calls.append(a) or load(*a, **k))
    convert_checkpoint(str(stock_vit_dir), tmp_path / "out", keep_ratio=0.8)
    assert len(calls) == 1 and not (tmp_path / "out" / INDEX).exists()


def _edit(folder, key, change):
    index = json.loads((folder / INDEX).read_text())
    shard = folder / index["weight_map"][key]
    tensors = load_file(str(shard))
    change(tensors, key)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    index["weight_map"] = {**{k: v for k, v in index["weight_map"].items() if v != shard.name},
                           **{k: shard.name for k in tensors}}
    (folder / INDEX).write_text(json.dumps(index))


@pytest.mark.parametrize("change, kind", [
    (lambda t, k: t.pop(k), "missing_keys"),
    (lambda t, k: t.__setitem__(k.replace(".query.", ".queries."), t.pop(k)), "unexpected_keys"),
    (lambda t, k: t.__setitem__(k, t[k][:, :-1].contiguous()), "mismatched_keys"),
], ids=["missing", "renamed", "mis-shaped"])
def test_a_broken_sharded_base_is_refused_with_nothing_written(tmp_path, change, kind):
    base = _sharded_stock("ViTForImageClassification", tmp_path / "stock")
    key = next(k for k in json.loads((base / INDEX).read_text())["weight_map"] if ".query.weight" in k)
    _edit(base, key, change)
    with pytest.raises(ValueError, match=f"did not load cleanly into PiToMeViTForImageClassification: .*{kind}.*"
                                         "Nothing was written"):
        convert_checkpoint(str(base), tmp_path / "out", keep_ratio=0.8)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["stock"]


def test_a_truncated_shard_is_named_with_nothing_written(tmp_path):
    base = _sharded_stock("ViTForImageClassification", tmp_path / "stock")
    shard = sorted(base.glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-50])
    with pytest.raises(RuntimeError, match=f"{shard} cannot be read .* Nothing was written"):
        convert_checkpoint(str(base), tmp_path / "out", keep_ratio=0.8)
    assert not (tmp_path / "out").exists()

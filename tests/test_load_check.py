"""push's load check on a big checkpoint (pitome_hf/commands/load_check.py), forced onto small SHARDED checkpoints
with a threshold of 0 bytes: the headers against the model built on the meta device, then the forward on a model
that holds only its first layers, each other position a stand-in sharing their weights (issue #35)."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from pitome_hf.commands import load_check
from pitome_hf.commands.push import VerificationError, verify_loads

LAYER = re.compile(r"^(.*\.(?:layer|layers|blocks)\.)(\d+)(\..*)$")


def _sharded_copy(model, path):
    model.save_pretrained(path, max_shard_size="40KB")
    assert len(list(path.glob("model-*.safetensors"))) > 2 and (path / load_check.SAFE_INDEX).is_file()
    return path


@pytest.fixture(scope="module")
def sharded(stock_vit_dir, tmp_path_factory):
    """A PiToMe ViT (4 layers, keep 0.8) saved in several shards with their index."""
    from pitome_hf import PiToMeViTForImageClassification
    from pitome_hf.commands.convert import convert_checkpoint

    folder = convert_checkpoint(str(stock_vit_dir), tmp_path_factory.mktemp("conv") / "pitome", keep_ratio=0.8)
    return _sharded_copy(PiToMeViTForImageClassification.from_pretrained(folder),
                         tmp_path_factory.mktemp("sharded") / "pitome")


def _copy(folder, tmp_path):
    target = tmp_path / "broken"
    shutil.copytree(folder, target)
    return target


def _edit(folder, key, change):
    """Apply `change(tensors, key)` to the shard holding `key` and rewrite the index to what the shards hold."""
    index_path = folder / load_check.SAFE_INDEX
    index = json.loads(index_path.read_text())
    shard = folder / index["weight_map"][key]
    tensors = load_file(str(shard))
    change(tensors, key)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    weight_map = {k: v for k, v in index["weight_map"].items() if v != shard.name}
    weight_map.update({k: shard.name for k in tensors})
    index["weight_map"] = weight_map
    index_path.write_text(json.dumps(index))


KEY = "vit.encoder.layer.2.attention.attention.key.weight"  # on disk the legacy name; in memory vit.layers.2.*
CHANGES = {
    "missing": (lambda t, k: t.pop(k), "missing_keys"),
    "renamed": (lambda t, k: t.__setitem__(k.replace(".key.", ".keys."), t.pop(k)), "unexpected_keys"),
    "mis-shaped": (lambda t, k: t.__setitem__(k, t[k][:, :-1].contiguous()), "mismatched_keys"),
}


def test_bounded_check_passes_a_sharded_checkpoint_loading_only_the_first_layers(sharded):
    result = verify_loads(sharded, max_full_bytes=0)
    index = json.loads((sharded / load_check.SAFE_INDEX).read_text())["weight_map"]
    assert result["check"] == "bounded" and result["problems"] == [] and result["finite"]
    assert result["tensors"] == len(index) and result["files"] == sorted(set(index.values()))
    assert result["cut"] == {"vit.layers": {"layers": 4, "loaded": [0, 1]}}
    assert "check" not in verify_loads(sharded)  # below the default 1 GiB: today's full check


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_bounded_check_refuses_a_missing_renamed_or_mis_shaped_tensor(sharded, tmp_path, change):
    edit, kind = CHANGES[change]
    broken = _copy(sharded, tmp_path)
    _edit(broken, KEY, edit)
    with pytest.raises(VerificationError) as refused:
        verify_loads(broken, max_full_bytes=0)
    message = str(refused.value)
    assert message.startswith(f"{broken} does not load every weight (") and kind in message
    assert "vit.layers.2.attention.k_proj.weight" in message and "\n" not in message


def test_push_refuses_through_the_command_line_in_one_line(sharded, tmp_path):
    """The env var forces the bounded check in `pitome-hf push`; the refusal is one line, before any request."""
    import os

    broken = _copy(sharded, tmp_path)
    _edit(broken, KEY, CHANGES["missing"][0])
    env = {**os.environ, "PITOME_HF_FULL_CHECK_MAX_BYTES": "0", "HF_HOME": str(tmp_path / "home"),
           "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "pitome_hf.cli", "push", str(broken), "org/never"], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 1 and "does not load every weight" in done.stderr and "missing_keys" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _index(folder):
    return json.loads((folder / load_check.SAFE_INDEX).read_text())


def _write_index(folder, index):
    (folder / load_check.SAFE_INDEX).write_text(json.dumps(index))


def test_an_index_that_disagrees_with_its_shards_is_refused_naming_the_file(sharded, tmp_path):
    broken = _copy(sharded, tmp_path)
    good = _index(broken)
    shards = sorted(set(good["weight_map"].values()))
    elsewhere = {**good, "weight_map": {**good["weight_map"], KEY: next(s for s in shards
                                                                         if s != good["weight_map"][KEY])}}
    _write_index(broken, elsewhere)
    with pytest.raises(load_check.FolderError, match=f"lists {re.escape(KEY)} in model-.*, but it is in model-"):
        load_check.read_headers(broken)
    unlisted = {**good, "weight_map": {k: v for k, v in good["weight_map"].items() if k != KEY}}
    _write_index(broken, unlisted)
    with pytest.raises(load_check.FolderError, match=f"holds {re.escape(KEY)}, which .* does not list"):
        load_check.read_headers(broken)
    _write_index(broken, good)
    (broken / good["weight_map"][KEY]).unlink()
    with pytest.raises(load_check.FolderError, match=r"names model-\d+-of-\d+\.safetensors, which is not in the folder"):
        load_check.read_headers(broken)
    (broken / load_check.SAFE_INDEX).write_text("[1, 2]")
    with pytest.raises(load_check.FolderError, match="is not a safetensors index"):
        load_check.read_headers(broken)


def test_a_truncated_shard_is_refused_before_any_model_is_built(sharded, tmp_path):
    broken = _copy(sharded, tmp_path)
    shard = broken / _index(broken)["weight_map"][KEY]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(load_check.FolderError, match=f"{re.escape(str(shard))} cannot be read .*truncated or corrupt"):
        load_check.read_headers(broken)
    with pytest.raises(VerificationError, match="does not load as remote code: .* cannot be read"):
        verify_loads(broken, max_full_bytes=0)


def test_header_dtypes_are_checked_against_the_model(sharded):
    """A float weight stored as an integer is refused; float32 weights into a bfloat16 model are a cast (loaded)."""
    from pitome_hf import PiToMeViTConfig, PiToMeViTForImageClassification

    config = PiToMeViTConfig.from_pretrained(sharded)
    headers = load_check.read_headers(sharded)
    bad, dtypes, _ = load_check.check_keys(PiToMeViTForImageClassification, config, headers)
    assert bad == {} and dtypes == {}
    name, shape, _ = headers[KEY]
    bad, dtypes, _ = load_check.check_keys(PiToMeViTForImageClassification, config, {**headers, KEY: (name, shape, "I64")})
    assert bad == {} and dtypes["refused"] == [f"{name}: {KEY} is I64, but the model holds "
                                               "vit.layers.2.attention.k_proj.weight as torch.float32"]
    config.dtype = torch.bfloat16
    bad, dtypes, _ = load_check.check_keys(PiToMeViTForImageClassification, config, headers)
    assert bad == {} and dtypes == {"cast": {"F32 -> torch.bfloat16": len(headers)}}


def _same_layers(model):
    """Every layer of every stack given the weights of the first layer holding the same tensor (layer 0, or for
    Qwen3.5's full-attention layers the first of them): then the stand-ins are exact and the bounded forward must
    equal the whole model's."""
    state = model.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            match = LAYER.match(key)
            if match:
                first = next(f"{match[1]}{j}{match[3]}" for j in range(int(match[2]) + 1)
                             if f"{match[1]}{j}{match[3]}" in state)
                value.copy_(state[first])
    return model


def _bounded_sums(folder, inputs, tmp_path, auto, keep=1):
    torch.save(inputs, tmp_path / "inputs.pt")
    done = subprocess.run([sys.executable, load_check.__file__, str(folder), auto, str(tmp_path / "inputs.pt"),
                           "--keep-layers", str(keep)], capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={**__import__("os").environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["problems"] == [], result
    return result


@pytest.mark.parametrize("name", ["ViTForImageClassification", "LlavaForConditionalGeneration",
                                  "Qwen3_5ForConditionalGeneration"])
def test_the_stand_ins_run_every_position_as_the_whole_model(name, tmp_path):
    """With equal layers, the forward of the model holding one layer per stack (and the first of each other
    structure: Qwen3.5's full-attention layer among linear-attention ones) equals the whole model's: the merge
    schedule, LLaVA-1.5's merged image-token count and hidden_states[-2] are those of every layer."""
    from pitome_hf.commands.convert import convert_checkpoint
    from pitome_hf.families import entry_for_config_dict, family_of

    from .test_contract import MAIN_ENTRIES, stock_model

    entry = next((e for e in MAIN_ENTRIES if e.stock.__name__ == name), None)
    if entry is None:
        pytest.skip(f"{name} is not in this registry")
    _same_layers(stock_model(entry)).save_pretrained(tmp_path / "stock")
    folder = convert_checkpoint(str(tmp_path / "stock"), tmp_path / "pitome", keep_ratio=0.8)
    model = entry_for_config_dict(json.loads((folder / "config.json").read_text())).pitome.from_pretrained(folder)
    _sharded_copy(model, tmp_path / "sharded")
    inputs = family_of(model.config).dummy_inputs(model.config)
    with torch.no_grad():
        out = model.eval()(**inputs)
    whole = {k: float(v.double().sum()) for k, v in out.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    result = _bounded_sums(tmp_path / "sharded", inputs, tmp_path, entry.autos[0])
    assert result["cut"] and all(info["layers"] > len(info["loaded"]) for info in result["cut"].values()), result
    assert all(info["loaded"][0] == 0 for info in result["cut"].values())
    if name.startswith("Qwen3_5"):
        assert result["cut"]["model.language_model.layers"]["loaded"] == [0, 3]  # linear x3, then full attention
    assert result["output_sums"].keys() == whole.keys()
    for key, value in whole.items():
        assert result["output_sums"][key] == pytest.approx(value, rel=1e-5, abs=1e-4), key

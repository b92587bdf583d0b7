"""The CLI turns expected failures into one line on stderr naming the file or value (exit 2 usage, 1 failure);
--debug shows the traceback."""

import json

import pytest

from pitome_hf.cli import main


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def test_missing_folder_and_corrupt_files_are_one_line(tmp_path, capsys, stock_vit_dir):
    import shutil

    code, err = run(capsys, "convert", tmp_path / "nope", "--output", tmp_path / "o")
    assert code == 1 and "does not exist" in err and len(err.splitlines()) == 1
    broken = tmp_path / "broken"
    shutil.copytree(stock_vit_dir, broken)
    (broken / "config.json").write_text('{"model_type": "vit", ')
    code, err = run(capsys, "convert", broken, "--output", tmp_path / "o")
    assert code in (1, 2) and "config.json" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    empty = tmp_path / "empty-weights"
    shutil.copytree(stock_vit_dir, empty)
    (empty / "model.safetensors").write_bytes(b"")
    code, err = run(capsys, "convert", empty, "--output", tmp_path / "o")
    assert code != 0 and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_bad_values_are_usage_errors(capsys, tmp_path):
    code, err = run(capsys, "benchmark", "vit", "--batch-size", "0")
    assert code == 2 and "--batch-size 0" in err
    code, err = run(capsys, "evaluate", "--keep-ratios", "1.5", "--out", tmp_path)
    assert code == 2 and "1.5" in err
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    code, err = run(capsys, "push", tmp_path, "org/x", "--eval-json", tmp_path / "list.json")
    assert code != 0 and len(err.splitlines()) == 1


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["convert", str(tmp_path / "nope"), "--output", str(tmp_path / "o"), "--debug"])


def test_llava_keep_order_is_refused_on_every_path(tmp_path):
    from pitome_hf import PiToMeLlavaConfig

    with pytest.raises(ValueError, match="keep_order=False is not supported by PiToMeLlavaConfig"):
        PiToMeLlavaConfig(keep_order=False)
    config = PiToMeLlavaConfig()
    with pytest.raises(ValueError, match="keep_order=False"):
        config.keep_order = False
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="keep_order=False"):
        PiToMeLlavaConfig.from_pretrained(tmp_path, keep_order=False)
    reloaded = PiToMeLlavaConfig.from_pretrained(tmp_path)
    assert reloaded.keep_order is None and reloaded.merge_settings().keep_order is True  # the default reads as True
    # ToMe too runs in spatial order here (elsewhere its default is the original ToMe's order)
    assert PiToMeLlavaConfig(merge_method="tome").merge_settings().layer_values(0).keep_order is True

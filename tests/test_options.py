"""Command-line merge flags are generated from the merge-field table: every field under its own name, in every
command that makes or runs a model, parsed to the values the config takes."""

import argparse

import pytest

from pitome_hf.modeling.merge_config import MERGE_FIELD_TABLE, MergeSettings
from pitome_hf.options import SWEPT, add_merge_arguments, merge_arguments, sweep_values


def parse(*argv, exclude=()):
    parser = argparse.ArgumentParser()
    add_merge_arguments(parser, exclude=exclude)
    return merge_arguments(parser.parse_args(list(argv)))


def test_every_field_has_its_flag_and_unset_flags_stay_out():
    parser = argparse.ArgumentParser()
    add_merge_arguments(parser)
    flags = {a for action in parser._actions for a in action.option_strings}
    assert {"--" + f.name.replace("_", "-") for f in MERGE_FIELD_TABLE} <= flags
    assert parse() == {}


def test_values_parse_to_what_the_config_takes():
    values = parse("--merge-method", "tome", "--merge-r", "3", "--merge-layers", "0", "--margin", "0.5",
                   "--no-proportional-attention", "--energy", "elu", "--protected-tokens", "2", "--trace-source")
    assert values == dict(merge_method="tome", merge_r=3, merge_layers=[0], margin=0.5, proportional_attention=False,
                          energy="elu", protected_tokens=2, trace_source=True)
    MergeSettings(num_layers=4, **values)  # valid settings
    per_layer = parse("--merge-method", "pitome_bsm", "pitome", "tome", "none", "--merge-r", "1", "2", "3", "4")
    assert per_layer == dict(merge_method=["pitome_bsm", "pitome", "tome", "none"], merge_r=[1, 2, 3, 4])


def test_a_bad_choice_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        parse("--energy", "cubic")
    assert "invalid choice: 'cubic'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["convert", "evaluate", "benchmark default", "fidelity text"])
def test_every_model_command_takes_the_fields_under_their_own_names(command, capsys):
    from pitome_hf import cli

    with pytest.raises(SystemExit):
        cli.main([*command.split(), "--help"])
    text = capsys.readouterr().out
    sweeping = command != "convert"
    for f in MERGE_FIELD_TABLE:
        flag = "--" + f.name.replace("_", "-")
        if sweeping and f.name in SWEPT:
            continue
        assert flag in text, (command, flag)
    if sweeping:
        assert "--keep-ratios" in text
    else:
        assert "--keep-ratio " in text or "--keep-ratio KEEP_RATIO" in text


def test_sweeps_refuse_out_of_range_and_repeated_values():
    with pytest.raises(ValueError, match="--keep-ratios: keep_ratio=1.5 is out of range"):
        sweep_values(argparse.Namespace(keep_ratios=[0.9, 1.5], methods=["tome"]))
    with pytest.raises(ValueError, match="--keep-ratios lists 0.9 more than once"):
        sweep_values(argparse.Namespace(keep_ratios=[0.9, 0.9], methods=["tome"]))
    with pytest.raises(ValueError, match="--methods lists tome more than once"):
        sweep_values(argparse.Namespace(keep_ratios=[0.9], methods=["tome", "tome"]))


def test_evaluate_applies_the_merge_flags_to_every_merged_row(tmp_path):
    from pitome_hf.commands import evaluate as evaluation

    assert evaluation.main(["--limit", "64", "--keep-ratios", "0.8", "--methods", "none", "tome", "pitome",
                            "--no-proportional-attention", "--out", str(tmp_path), "--no-progress"]) == 0
    import json

    report = json.loads((tmp_path / "results.json").read_text())
    methods = [r["method"] for r in report["results"]]
    assert methods == ["none", "tome, proportional_attention=False", "pitome, proportional_attention=False"]


def test_one_spelling_for_batch_device_and_dtype_across_commands():
    """evaluate and benchmark (and export's batch) spell these options alike; --batch stays an alias."""
    from pitome_hf.commands.benchmark import build_parser as benchmark_parser
    from pitome_hf.commands.evaluate import build_parser as evaluate_parser

    ev = evaluate_parser().parse_args(["--batch-size", "8", "--device", "cpu", "--dtype", "bfloat16"])
    bench = benchmark_parser().parse_args(["vit", "--batch", "8", "--device", "cpu", "--dtype", "bfloat16"])
    for args in (ev, bench):
        assert (args.batch_size, args.device, args.dtype) == (8, "cpu", "bfloat16")


@pytest.mark.parametrize("command", ["convert", "export", "evaluate", "study", "fidelity", "overview"])
def test_every_command_writes_to_one_spelling_of_the_output_folder(command, capsys):
    """`--output` (alias `--out`) in every command that writes a folder (options.add_output_argument)."""
    import importlib

    module = importlib.import_module(f"pitome_hf.commands.{command}")
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert "--output OUTPUT, --out OUTPUT" in capsys.readouterr().out

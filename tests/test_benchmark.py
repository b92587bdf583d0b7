"""The benchmark command: every family it covers runs side by side (tiny shapes here), eager and compiled, with the
merge step's time per layer; settings too short to measure are refused or flagged."""

import json

import pytest

from pitome_hf.commands import benchmark as command
from pitome_hf.measurement import benchmark
from pitome_hf.measurement.timing import check_timing_settings

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)


def args_for(*argv):
    return command.build_parser().parse_args(list(argv))


@pytest.mark.parametrize("family, extra", [
    ("vit", dict(TINY, num_labels=3)),
    ("clip", dict(TINY, projection_dim=16)),
    ("siglip", TINY),
])
def test_each_family_runs_side_by_side(family, extra):
    args = args_for(family, "--batch-size", "2", "--keep-ratios", "0.8", "--warmup", "1", "--repeats", "3", "--device", "cpu")
    rows = benchmark.bench_family(family, args, config_overrides=extra)
    methods = [r["method"] for r in rows]
    assert methods[:3] == ["none", "tome", "pitome"]
    merged = [r for r in rows if r["method"] != "none"]
    assert all(r["ideal_speedup"] > 1 and r["merge_ms_per_layer"] > 0 and 0 < r["merge_share"] < 1 for r in merged)
    assert all("time_vs_tome" in r for r in rows if r["method"] == "pitome")
    assert "PiToMe time / ToMe" in benchmark.markdown_table(rows, benchmark.COLUMNS)


def test_embedded_default_eager_and_compiled_in_one_run():
    args = args_for("default", "--batch-size", "8", "--keep-ratios", "0.8", "0.7", "--warmup", "1", "--repeats", "3",
                    "--modes", "eager", "compiled", "--device", "cpu")
    rows = benchmark.bench_default(args)
    # several settings compiled in one process (floats read from configs must not become symbolic on recompiles)
    assert [(r["mode"], r["method"]) for r in rows] == [
        (m, x) for m in ("eager", "compiled") for x in ("none", "tome", "pitome", "tome", "pitome")]
    assert all(r["merge_ms_per_layer"] is None for r in rows if r["mode"] == "compiled")


def test_short_settings_are_refused_or_flagged(tmp_path, capsys):
    with pytest.raises(ValueError, match="--warmup 0 --repeats 1 is too short.*--allow-short"):
        command.main(["vit", "--warmup", "0", "--repeats", "1"])
    assert check_timing_settings(1, 3) is None
    assert check_timing_settings(0, 1, allow_short=True).startswith("CAUTION")
    with pytest.raises(ValueError, match="--batch-size 0"):
        command.main(["vit", "--batch-size", "0"])
    assert command.main(["default", "--batch-size", "4", "--keep-ratios", "0.8", "--warmup", "0", "--repeats", "1",
                         "--allow-short", "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "CAUTION" in out and "not measurements" in out
    assert json.loads((tmp_path / "b.json").read_text())["caveat"].startswith("CAUTION")


def test_subcommands_come_from_the_registry():
    from pitome_hf.families import FAMILIES

    from pitome_hf.measurement import benchmark_vlm

    vlm = benchmark_vlm.is_vlm_benchmark  # vision-language families: their own subcommand (tests/test_benchmark_vlm.py)
    assert list(benchmark.subcommands()) == ["default"] + [f.name for f in FAMILIES if f.benchmark and not vlm(f)]
    assert list(benchmark_vlm.subcommand_names()) == [f.name for f in FAMILIES if f.benchmark and vlm(f)]
    assert benchmark.stock_for_shape("clip", "L/14-336", num_hidden_layers=1).config.image_size == 336
    with pytest.raises(ValueError, match="clip shape 'H/14' is not known"):
        benchmark.stock_for_shape("clip", "H/14")


def test_help_names_the_subcommand_and_defaults(capsys):
    with pytest.raises(SystemExit):
        command.main(["vit", "--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: pitome-hf benchmark vit") and "(default: 32)" in text and "(default: 5" in text


@pytest.mark.parametrize("command", ["benchmark", "evaluate", "study", "fidelity", "convert", "push", "overview"])
def test_every_subcommand_help_names_itself_with_defaults(command, capsys):
    from pitome_hf.cli import main

    argv = [command, "vit", "--help"] if command == "benchmark" else [command, "--help"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: pitome-hf {command}") and "default" in text


def test_version_and_top_level_help(capsys):
    from pitome_hf.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("pitome-hf ")
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in ("overview", "study", "fidelity", "benchmark", "push")) and "examples:" in text


def test_runs_are_timed_interleaved_round_by_round():
    """All runs warm up first, then each round times every run once, in turn: a slow spell falls on all alike."""
    import torch

    from pitome_hf.measurement.timing import time_interleaved

    calls = []
    warmed = []
    fns = [lambda i=i: calls.append(i) for i in range(3)]
    times = time_interleaved(fns, torch.device("cpu"), warmup=2, repeats=4, on_warm=warmed.append)
    assert calls == [0, 0, 1, 1, 2, 2] + [0, 1, 2] * 4 and warmed == [0, 1, 2]
    assert len(times) == 3 and all(t >= 0 for t in times)


def test_many_compiled_settings_each_get_a_whole_graph():
    """torch.compile recompiles once per merge setting; past dynamo's recompile limit (8) the rest would silently run
    frame by frame, and a float setting read as a symbolic value would break the graph. Inside `compiled_runs` each
    of 10 settings is one whole graph (a counting backend sees 10)."""
    import torch
    import torch._dynamo
    from transformers import ViTConfig, ViTModel

    from pitome_hf.apply import apply_pitome
    from pitome_hf.measurement.timing import compiled_runs

    torch.manual_seed(0)
    stock = ViTModel(ViTConfig(**TINY, attn_implementation="sdpa")).eval()
    x = torch.randn(1, 3, 32, 32)
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    before = torch._dynamo.config.recompile_limit
    runs = [dict(keep_ratio=0.95 - 0.05 * i) for i in range(8)]  # margins and alpha differ in the presets
    runs += [dict(keep_ratio=0.8, preset="authors-deit"), dict(keep_ratio=0.8, preset="authors-mae", margin=0.75)]
    with compiled_runs(len(runs)), torch.no_grad():
        assert torch._dynamo.config.recompile_limit >= 2 * len(runs)
        for settings in runs:
            torch.compile(apply_pitome(stock, **settings), backend=counting)(x)
    assert torch._dynamo.config.recompile_limit == before
    assert len(graphs) == len(runs)
    torch._dynamo.reset()


def test_attention_backend_and_allocator_are_the_same_for_every_row(monkeypatch, capsys):
    """--attn sets the backend of the stock model every row is built from; glibc's malloc is pinned before timing
    (and said so in the output) unless --system-malloc."""
    from pitome_hf.measurement import timing as measure

    seen = []
    monkeypatch.setattr(benchmark, "compare_methods",
                        lambda stock, *a, **k: seen.append(stock.config._attn_implementation) or [])
    benchmark._run(benchmark.stock_for_shape("vit", "ViT-B/16", **TINY),
                   None, args_for("vit", "--attn", "eager", "--device", "cpu"))
    assert seen == ["eager"]
    note = measure.pin_allocator()
    assert note is None or ("pinned" in note and measure.pin_allocator() == note)  # once per process, glibc only

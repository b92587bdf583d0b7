"""`pitome-hf benchmark <vision-language family>` (pitome_hf.measurement.benchmark_vlm), on the registry's Qwen2.5-VL
shape shrunk by overrides: analytic prefill FLOPs against FlopCounterMode for every selection and budget kind, the
rows (order, budgets, visual tokens reaching the language model, ideal speed-ups), the JSON and table of the command,
and bad input. Timings of random tiny models mean nothing: the tests check structure and counts."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pitome_hf.apply import apply_pitome
from pitome_hf.families import family_named
from pitome_hf.measurement import benchmark_vlm

# The Qwen2.5-VL-3B shape of the registry, shrunk: 2 vision blocks (the last one full attention), 1 LM layer.
TINY = {"vision_config": dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                              fullatt_block_indexes=[1]),
        "text_config": dict(hidden_size=128, intermediate_size=256, num_attention_heads=1, num_key_value_heads=1,
                            num_hidden_layers=1, vocab_size=151700)}
TINY_ARGS = ["--image-size", "224", "--lm-layers", "1", "--set", "vision_config.depth=2", "vision_config.hidden_size=64",
             "vision_config.intermediate_size=128", "vision_config.num_heads=2", "vision_config.out_hidden_size=128",
             "vision_config.fullatt_block_indexes=[1]", "text_config.hidden_size=128",
             "text_config.intermediate_size=256", "text_config.num_attention_heads=1",
             "text_config.num_key_value_heads=1", "text_config.vocab_size=151700"]
N_224 = (224 // 14) ** 2 // 4  # 64 visual tokens for a 224 px image before any reduction


@pytest.fixture(scope="module")
def stock():
    return benchmark_vlm.stock_model(family_named("qwen2_5_vl"), "Qwen2.5-VL-3B", TINY, torch.device("cpu"),
                                     torch.float32)


@pytest.mark.parametrize("settings", [dict(merge_method="none"), dict(visual_tokens=16), dict(visual_tokens=40, merge_method="tome"),
                                      dict(visual_tokens=16, visual_selection="visionzip"), dict(keep_ratio=0.3),
                                      dict(keep_ratio=0.5, merge_method="tome", merge_metric="hidden")])
def test_analytic_prefill_flops_equal_flop_counter(stock, settings):
    family = family_named("qwen2_5_vl")
    model = apply_pitome(stock, **settings)
    inputs, kwargs = family.benchmark.prompt(model.config, 224, 20)
    analytic = family.flops(model.config, **kwargs)
    counted = benchmark_vlm.counted_flops(model, inputs)
    assert abs(analytic - counted) / counted < 0.01, (analytic, counted)
    reduced = settings.get("merge_method") != "none"
    assert (analytic < family.flops(stock.config, **family.benchmark.prompt(stock.config, 224, 20)[1])) == reduced


def test_prompt_holds_the_configs_visual_token_count(stock):
    spec = family_named("qwen2_5_vl").benchmark
    for settings, want in ((dict(merge_method="none"), N_224), (dict(visual_tokens=24), 24),
                           (dict(keep_ratio=0.3), N_224 - math.floor(N_224 - N_224 * 0.3))):
        model = apply_pitome(stock, **settings)
        inputs, kwargs = spec.prompt(model.config, 224, 20)
        assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == want
        assert kwargs["prompt_text_tokens"] == inputs["input_ids"].shape[1] - want == 20
        assert inputs["pixel_values"].shape[0] == (224 // 14) ** 2


def test_rows_side_by_side():
    result = benchmark_vlm.bench_vlm("qwen2_5_vl", overrides=TINY, lm_layers=1, image_size=224, text_tokens=8,
                                     visual_tokens=(16, 32), keep_ratios=(0.5,), selections=("merge", "visionzip"),
                                     device="cpu", warmup=1, repeats=1, progress=False)
    rows = result["rows"]
    assert [(r["method"], r["visual_tokens"], r["keep_ratio"]) for r in rows] == [
        ("none", None, 1.0), ("pitome", 16, None), ("tome", 16, None), ("visionzip", 16, None),
        ("pitome", 32, None), ("tome", 32, None), ("visionzip", 32, None),
        ("pitome", None, 0.5), ("tome", None, 0.5), ("visionzip", None, 0.5)]
    assert [r["visual_tokens_in"] for r in rows] == [64, 16, 16, 16, 32, 32, 32, 32, 32, 32]
    assert rows[0]["ttft_speedup"] == rows[0]["ideal_ttft_speedup"] == 1.0
    for r in rows[1:]:  # fewer tokens in the language model: cheaper prefill, ideal speed-up > 1, from the FLOPs
        assert r["ideal_ttft_speedup"] == pytest.approx(rows[0]["prefill_gflops"] / r["prefill_gflops"])
        assert r["ideal_ttft_speedup"] > 1
        assert r["measured_over_ideal"] == pytest.approx(r["ttft_speedup"] / r["ideal_ttft_speedup"])
        assert r["ttft_s"] > 0 and r["peak_mib"] > 0
    # the same budget costs the same language model: ToMe and PiToMe rows differ only in the similarity matmuls
    assert rows[1]["prefill_gflops"] > rows[2]["prefill_gflops"]
    assert [c["method"] for c in result["flops_check"]] == ["none", "pitome"]
    assert all(c["relative_error"] < 0.01 for c in result["flops_check"])
    assert result["setup"]["lm_layers"] == 1 and result["setup"]["image_size"] == 224


def test_divprune_and_dart_rows_come_with_the_others_by_default():
    """Every visual_selection value has its rows by default (the command's --visual-selections too): DivPrune's and
    DART's rows give the language model the budget, as the others."""
    from pitome_hf.commands.benchmark import build_parser

    assert build_parser().parse_args(["qwen2_5_vl"]).visual_selections == ["merge", "visionzip", "divprune", "dart"]
    result = benchmark_vlm.bench_vlm("qwen2_5_vl", overrides=TINY, lm_layers=1, image_size=224, text_tokens=8,
                                     visual_tokens=(16,), keep_ratios=(), methods=(), device="cpu", warmup=1,
                                     repeats=1, check_flops=False, progress=False)
    assert [(r["method"], r["visual_tokens"], r["visual_tokens_in"]) for r in result["rows"]] == [
        ("none", None, 64), ("visionzip", 16, 16), ("divprune", 16, 16), ("dart", 16, 16)]


def test_command_writes_json_and_table(tmp_path, capsys):
    from pitome_hf.commands.benchmark import main

    out = tmp_path / "ttft.json"
    assert main(["qwen2_5_vl", *TINY_ARGS, "--visual-tokens", "16", "--keep-ratios", "0.5", "--methods", "pitome",
                 "--visual-selections", "merge", "visionzip", "--device", "cpu", "--warmup", "1", "--repeats", "1",
                 "--allow-short", "--merge-metric", "hidden", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| method | visual_tokens budget | keep ratio | visual tokens in LM | TTFT (s)" in text
    assert text.count("FLOPs check") == 2 and "CAUTION" in text
    data = json.loads(out.read_text())
    assert set(data) == {"rows", "flops_check", "setup", "caveat"}
    assert [(r["method"], r["visual_tokens_in"]) for r in data["rows"]] == [
        ("none", 64), ("pitome", 16), ("visionzip", 16), ("pitome", 32), ("visionzip", 32)]
    assert data["setup"]["overrides"]["vision_config"]["depth"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--visual-tokens", "65"], "visual_tokens=65 asks for 65 visual tokens.*allowed values are 1..64"),
    (["--visual-tokens", "0"], r"--visual-tokens: visual_tokens=0 is out of range"),
    (["--visual-tokens", "16", "16"], "--visual-tokens lists 16 more than once"),
    (["--batch-size", "2"], "--batch-size 2: the vision-language benchmark times one prompt"),
    (["--set", "vision_config.depth"], "--set 'vision_config.depth': give KEY=VALUE"),
    (["--set", "vision_config.dept=2"], "'vision_config.dept' is not a field of the Qwen2.5-VL-3B config .*did you "
                                        "mean depth"),
    (["--lm-layers", "0"], "--lm-layers 0: must be >= 1"),
])
def test_bad_input_is_refused_before_timing(argv, message):
    from pitome_hf.commands.benchmark import main

    with pytest.raises(ValueError, match=message):
        main(["qwen2_5_vl", *TINY_ARGS, "--device", "cpu", "--no-flops-check", *argv])


def test_classifier_benchmarks_do_not_offer_the_vlm_family():
    from pitome_hf.commands.benchmark import build_parser
    from pitome_hf.measurement.benchmark import subcommands

    assert "qwen2_5_vl" not in subcommands() and "vit" in subcommands()
    args = build_parser().parse_args(["qwen2_5_vl", "--visual-tokens", "64", "128"])
    assert args.visual_budgets == [64, 128] and not hasattr(args, "visual_tokens")
    assert args.visual_selections == ["merge", "visionzip", "divprune", "dart"] and args.keep_ratios == [0.5]


# ---- the Qwen3 families: their registry shapes shrunk alike, an image and a video (issue #33)
QWEN3_TINY = {"vision_config": dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128),
              "text_config": dict(hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1,
                                  head_dim=64, num_hidden_layers=1, vocab_size=248400)}


@pytest.mark.parametrize("family_name, shape, extra", [
    ("qwen3_vl", "Qwen3-VL-2B", {"vision_config": dict(deepstack_visual_indexes=[0])}),
    ("qwen3_5", "Qwen3.5-2B", {"text_config": dict(num_hidden_layers=4, linear_num_key_heads=2,
                                                   linear_num_value_heads=2)})])
@pytest.mark.parametrize("frames", [0, 2])
def test_qwen3_prompts_images_and_videos_and_their_flops(family_name, shape, extra, frames):
    """The prompt builder writes the config's count (a video: one run per temporal patch after its timestamp text, the
    budget per temporal patch), and the family's analytic FLOPs equal the counter for the unreduced model and each
    selection."""
    from pitome_hf.measurement.shapes import merged_fields

    family = family_named(family_name)
    stock = benchmark_vlm.stock_model(family, shape, merged_fields(QWEN3_TINY, extra), torch.device("cpu"),
                                      torch.float32)
    token = stock.config.video_token_id if frames else stock.config.image_token_id
    for settings in (dict(merge_method="none"), dict(visual_tokens=16), dict(visual_tokens=16, merge_method="tome"),
                     dict(visual_tokens=16, visual_selection="visionzip"),
                     dict(visual_tokens=16, visual_selection="divprune"), dict(keep_ratio=0.3, visual_selection="dart")):
        model = apply_pitome(stock, **settings)
        inputs, kwargs = family.benchmark.prompt(model.config, 256, 20, frames=frames)
        per = 64 if settings.get("merge_method") == "none" else settings.get("visual_tokens", 64 - math.floor(64 - 64 * 0.3))
        runs = [len(r) for r in "".join("x" if t == token else " " for t in inputs["input_ids"][0].tolist()).split()]
        assert runs == [per] * max(1, frames)
        analytic, counted = family.flops(model.config, **kwargs), benchmark_vlm.counted_flops(model, inputs)
        assert analytic == counted, (settings, analytic, counted)  # exact: every matmul is counted


def test_video_frames_refused_where_the_prompt_builder_has_no_video(capsys):
    from pitome_hf.cli import main

    assert main(["benchmark", "llava_onevision", "--video-frames", "2"]) == 2
    assert "--video-frames 2: the llava_onevision benchmark builds image prompts only" in capsys.readouterr().err


def test_the_shape_is_named_as_the_other_benchmarks_name_theirs(capsys):
    """`--shapes` (the image benchmarks' spelling), one shape per run: two are refused in one line."""
    from pitome_hf.cli import main

    assert main(["benchmark", "qwen3_vl", "--shapes", "Qwen3-VL-2B", "Qwen3-VL-4B"]) == 2
    assert "--shapes Qwen3-VL-2B Qwen3-VL-4B: the vision-language benchmark times one shape per run" in \
        capsys.readouterr().err

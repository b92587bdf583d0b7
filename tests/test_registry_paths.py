"""LLaVA-1.5's special paths are registry fields (issue #32): a family of that kind (a vision-language model whose
vision tower merges) is one registry entry, not a branch in the tools.

* `Family.generation_benchmark` gives `pitome-hf benchmark <family>` (pitome_hf.measurement.benchmark_llava: image
  tokens, time to first token, latency, KV cache): a second entry of that kind gets the subcommand and runs;
* `Family.vision_merge_settings` makes evaluate's vqa rows report the vision tower's token schedule (else the image
  tokens reaching the language model per question).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from pitome_hf import families
from pitome_hf.commands import benchmark as benchmark_command
from pitome_hf.evaluation.tasks import VisualQuestionAnswering
from pitome_hf.measurement import benchmark_llava
from pitome_hf.modeling import token_schedule
from pitome_hf.modeling.configuration_pitome_llava import PiToMeLlavaConfig, llava_merge_settings

from .test_llava import llava_dict

TINY_TOWER = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=2, image_size=32, patch_size=4)


@pytest.fixture
def twin(monkeypatch):
    """The registry with a second family of LLaVA-1.5's kind: LLaVA-1.5's entry under another name."""
    entry = dataclasses.replace(families.family_named("llava"), name="llava_twin")
    extended = (*families.FAMILIES, entry)
    for module in (families, benchmark_llava, benchmark_command):
        monkeypatch.setattr(module, "FAMILIES", extended)
    return entry


def test_llava_is_the_registry_s_generation_benchmark():
    assert [f.name for f in families.FAMILIES if f.generation_benchmark] == ["llava"]
    assert benchmark_llava.subcommand_names() == ("llava",)
    assert [f.name for f in families.FAMILIES if f.vision_merge_settings] == ["llava"]


def test_a_second_entry_of_that_kind_gets_the_benchmark(twin, capsys):
    assert benchmark_llava.subcommand_names() == ("llava", "llava_twin")
    with pytest.raises(SystemExit):
        benchmark_command.main(["llava_twin", "--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: pitome-hf benchmark llava_twin") and "--lm-layers" in text and "[0.95," in text
    rows = benchmark_llava.bench_llava(ratios=(0.9,), device="cpu", new_tokens=2, text_tokens=4, repeats=1,
                                       lm_layers=1, lm_hidden=32, vision=TINY_TOWER, family="llava_twin")
    assert [r["method"] for r in rows] == ["none", "tome", "pitome"] and rows[0]["image_tokens"] == 64 > rows[2]["image_tokens"]
    with pytest.raises(ValueError, match="vit has no generation benchmark"):
        benchmark_llava.bench_llava(family="vit")


def test_vqa_token_counts_read_the_registry():
    config = PiToMeLlavaConfig(**llava_dict(), keep_ratio=0.8)
    net = SimpleNamespace(config=config)
    tower = SimpleNamespace(family=families.family_named("llava"), image_size=32, _mean=lambda net, column: 99.6)
    assert VisualQuestionAnswering.token_counts(tower, net) == token_schedule(llava_merge_settings(config),
                                                                               num_tokens=64)
    assert VisualQuestionAnswering.token_counts(tower, net)[-1] < 64
    at_input = SimpleNamespace(family=families.family_named("qwen2_5_vl"), image_size=32, _mean=lambda net, column: 99.6)
    assert VisualQuestionAnswering.token_counts(at_input, net) == [100]

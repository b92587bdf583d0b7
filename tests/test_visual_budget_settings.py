"""The settings of the families that reduce visual tokens at the language model's input (Qwen2.5-VL,
LLaVA-OneVision), on every path (constructor, config.json, from_pretrained keywords, attribute assignment,
apply_pitome, the command line; issue #31):

* the two budgets, `visual_tokens` and `keep_ratio`, are resolved in one place (`merge_config.resolve_budgets`):
  both given is refused in one line naming both values; the one given replaces the other; a config.json, which writes
  every field, is not read as giving its default keep_ratio;
* `visual_selection="visionzip"` (and "divprune", "dart") refuses a merge method it would not run;
* a per-layer list (methods, layers) is refused by what the family allows (one reduction point), not by a layer count.
"""

from __future__ import annotations

import json

import pytest
import transformers

from pitome_hf import apply_pitome
from pitome_hf.modeling import (
    PiToMeLlavaOnevisionForConditionalGeneration, PiToMeLlavaOnevisionProcessor, PiToMeQwen2_5_VLForConditionalGeneration,
    PiToMeQwen2_5_VLProcessor,
)
from pitome_hf.modeling.configuration_pitome_llava_onevision import PiToMeLlavaOnevisionConfig
from pitome_hf.modeling.configuration_pitome_qwen2_5_vl import PiToMeQwen2_5_VLConfig
from pitome_hf.modeling.merge_config import MergeSettings, count_settings

from .contract_fixtures import llava_onevision_config, qwen2_5_vl_config

FAMILIES = {
    "qwen2_5_vl": (qwen2_5_vl_config, transformers.Qwen2_5_VLForConditionalGeneration, PiToMeQwen2_5_VLConfig,
                   PiToMeQwen2_5_VLForConditionalGeneration, PiToMeQwen2_5_VLProcessor),
    "llava_onevision": (llava_onevision_config, transformers.LlavaOnevisionForConditionalGeneration,
                        PiToMeLlavaOnevisionConfig, PiToMeLlavaOnevisionForConditionalGeneration,
                        PiToMeLlavaOnevisionProcessor),
}
BOTH = "visual_tokens=4 and keep_ratio={} were both given: .*give one of them"


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(stock model, its saved folder, the PiToMe config class, the PiToMe model class, the processor class)."""
    stock_config, stock_class, config_class, model_class, processor_class = FAMILIES[request.param]
    stock = stock_class(stock_config()).eval()
    folder = tmp_path_factory.mktemp(request.param)
    stock.save_pretrained(folder)
    return stock, folder, config_class, model_class, processor_class


def paths(family, tmp_path, **settings):
    """The same settings given together through every path: {path: () -> the config it builds}."""
    stock, folder, config_class, model_class, _ = family

    def assigned():  # attribute assignment: the fields set one after the other on a config that has none of them
        config = config_class()
        config.update_merge_settings(**settings)
        return config

    def config_json():  # a config.json written by hand (a saved one holds every field: see the round trip below)
        saved = tmp_path / "saved"
        if not saved.exists():
            config_class().save_pretrained(saved)
            values = json.loads((saved / "config.json").read_text())
            (saved / "config.json").write_text(json.dumps({**values, **settings}))
        return config_class.from_pretrained(saved)

    return {
        "constructor": lambda: config_class(**settings),
        "constructor reversed": lambda: config_class(**dict(reversed(list(settings.items())))),
        "config.json": config_json,
        "from_pretrained": lambda: model_class.from_pretrained(folder, **settings).config,
        "attribute assignment": assigned,
        "apply_pitome": lambda: apply_pitome(stock, **settings).config,
    }


@pytest.mark.parametrize("ratio", [0.5, 1.0, 0.9])  # 0.9 is the default: given explicitly, it still conflicts
def test_both_budgets_given_are_refused_on_every_path(family, tmp_path, ratio):
    for path, build in paths(family, tmp_path, visual_tokens=4, keep_ratio=ratio).items():
        if path == "config.json" and ratio == 0.9:
            continue  # a config.json's keep_ratio at its default is the default written there (next test)
        with pytest.raises(ValueError, match=BOTH.format(ratio)) as info:
            build()
            pytest.fail(path)
        assert "\n" not in str(info.value)


def test_both_budgets_on_the_command_line_are_refused_before_anything_is_written(family, tmp_path, capsys):
    from pitome_hf.cli import main as cli

    _, folder, *_ = family
    code = cli(["convert", str(folder), "--visual-tokens", "4", "--keep-ratio", "0.5", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "visual_tokens=4 and keep_ratio=0.5 were both given" in err[0]
    assert not (tmp_path / "o").exists()


def test_a_saved_budget_reads_back_and_the_budget_given_replaces_the_other(family, tmp_path):
    stock, folder, config_class, model_class, _ = family
    config = apply_pitome(stock, visual_tokens=4).config
    assert (config.visual_tokens, config.keep_ratio) == (4, 0.9)
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["keep_ratio"] == 0.9  # every field is written
    assert config_class.from_pretrained(tmp_path).visual_tokens == 4
    assert config_class.from_json_file(tmp_path / "config.json").visual_tokens == 4
    # the budget given later is the one in force; the other goes back to unset
    assert (config_class.from_pretrained(tmp_path, keep_ratio=0.5).visual_tokens, ) == (None, )
    config = config_class(keep_ratio=0.5)
    config.visual_tokens = 3
    assert (config.visual_tokens, config.keep_ratio) == (3, 0.9)
    config.keep_ratio = 0.4
    assert (config.visual_tokens, config.keep_ratio) == (None, 0.4)
    model = apply_pitome(apply_pitome(stock, keep_ratio=0.5), visual_tokens=2)
    assert (model.config.visual_tokens, model.config.keep_ratio) == (2, 0.9)


def test_saved_settings_holding_both_budgets_are_refused(family):
    *_, processor_class = family
    with pytest.raises(ValueError, match=BOTH.format(0.5)):
        count_settings({"visual_tokens": 4, "keep_ratio": 0.5}, processor_class.__name__)
    with pytest.raises(ValueError, match=BOTH.format(0.5)):
        MergeSettings(visual_tokens=4, keep_ratio=0.5, num_layers=1)
    assert count_settings({"visual_tokens": 4, "keep_ratio": 0.9})["visual_tokens"] == 4  # as a processor saves it


@pytest.mark.parametrize("selection, method", [("visionzip", "tome"), ("visionzip", "pitome_bsm"), ("divprune", "tome"),
                                               ("dart", "pitome_bsm")])
def test_a_selection_without_merging_refuses_a_merge_method_it_would_not_run_on_every_path(family, tmp_path, selection,
                                                                                            method):
    for path, build in paths(family, tmp_path, visual_selection=selection, merge_method=method).items():
        with pytest.raises(ValueError, match=f"merge_method='{method}' does not apply with "
                                             f"visual_selection='{selection}'.*'pitome' .* or 'none'") as info:
            build()
            pytest.fail(path)
        assert "\n" not in str(info.value)
    _, _, config_class, *_ = family
    assert config_class(visual_selection=selection, merge_method="none").merge_method == "none"  # nothing reduced
    assert config_class(visual_selection=selection).merge_method == "pitome"


@pytest.mark.parametrize("field, value, words", [
    ("merge_method", ["tome", "pitome"], r"merge_method=\['tome', 'pitome'\] is a per-layer list, but .* reduces at "
                                         r"one point: give one method \('pitome', 'tome', 'pitome_bsm' or 'none'\)"),
    ("merge_layers", [0, 1], r"merge_layers=\[0, 1\] names layers, but .* reduces at one point \(index 0\): give None "
                             r"or \[0\] \(reduce\) or \[\] \(reduce nothing\)"),
])
def test_a_per_layer_list_is_refused_by_what_the_family_allows_on_every_path(family, tmp_path, field, value, words):
    for path, build in paths(family, tmp_path, **{field: value}).items():
        with pytest.raises(ValueError, match=words) as info:
            build()
            pytest.fail(path)
        assert "layers:" not in str(info.value) and "1 layers" not in str(info.value)

"""Per-layer methods, margin_end, named presets and MAE-style pooling: settings, round trips, errors."""

import pytest
import torch

from pitome_hf import PiToMeViTConfig, PiToMeViTForImageClassification, apply_pitome, token_schedule
from pitome_hf.modeling.merge_config import MERGE_PRESETS, MergeSettings, preset_settings


def test_presets_expand_as_the_authors_table_says():
    deit = preset_settings("authors-deit", 12)
    assert deit["merge_method"] == ["pitome_bsm"] * 6 + ["pitome"] * 6
    assert (deit["energy"], deit["margin"], deit["margin_end"], deit["proportional_attention"]) == ("elu", 0.75, 0.0, False)
    assert preset_settings("authors-deit", 7)["merge_method"] == ["pitome_bsm"] * 4 + ["pitome"] * 3  # ceil(L/2)
    mae = preset_settings("authors-mae", 24)
    assert mae["merge_method"] == ["pitome"] * 12 + ["pitome_bsm"] * 12
    bert = preset_settings("authors-bert", 6)
    assert bert["merge_layers"] == [0, 1, 2] and bert["energy"] == "gaussian" and bert["merge_split"] == "top"
    assert MergeSettings(num_layers=6, merge_preset="authors-bert").margin_at(3) == pytest.approx(0.9 - 0.25 * 3 / 6)
    blip = MergeSettings(num_layers=40, merge_preset="authors-blip2")
    assert blip.margin_at(20) == pytest.approx(0.75 - 0.4 * 20 / 40) and blip.proportional_attention
    assert preset_settings("paper", 12) == {k: v for k, v in preset_settings("paper", 12).items()}
    assert set(MERGE_PRESETS) == {"paper", "authors-deit", "authors-mae", "authors-bert", "authors-blip2"}


def test_preset_in_config_round_trips_and_labels(vit_kwargs, tmp_path):
    model = PiToMeViTForImageClassification(PiToMeViTConfig(**vit_kwargs(), merge_preset="authors-deit"))
    model.save_pretrained(tmp_path)
    again = PiToMeViTForImageClassification.from_pretrained(tmp_path)
    assert again.config.merge_preset == "authors-deit"
    assert again.config.merge_method == ["pitome_bsm"] * 6 + ["pitome"] * 6
    assert MergeSettings.from_config(again.config).label() == "authors-deit"
    switched = PiToMeViTForImageClassification.from_pretrained(tmp_path, merge_preset="paper")
    assert switched.config.merge_method == "pitome" and switched.config.energy == "exp"


def test_changing_a_preset_field_clears_the_preset_name(vit_kwargs):
    config = PiToMeViTConfig(**vit_kwargs(), merge_preset="authors-deit")
    config.keep_ratio = 0.8  # not a selection setting: the preset stays
    assert config.merge_preset == "authors-deit"
    config.energy = "exp"
    assert config.merge_preset is None
    label = MergeSettings.from_config(config).label()
    assert label.startswith("pitome_bsm x6 + pitome x6") and "margin=0.75" in label and "energy" not in label


def test_preset_conflicting_with_an_explicit_setting_is_refused(vit_kwargs):
    with pytest.raises(ValueError, match="merge_preset='authors-deit' sets energy='elu', but energy='gaussian'"):
        PiToMeViTConfig(**vit_kwargs(), merge_preset="authors-deit", energy="gaussian")
    with pytest.raises(ValueError, match="merge_preset='deit'"):
        PiToMeViTConfig(**vit_kwargs(), merge_preset="deit")


def test_apply_pitome_with_a_preset_and_back(vit_kwargs):
    from transformers import ViTConfig, ViTForImageClassification

    stock = ViTForImageClassification(ViTConfig(**vit_kwargs(num_hidden_layers=4)))
    deit = apply_pitome(stock, preset="authors-deit", keep_ratio=0.9)
    assert deit.config.merge_method == ["pitome_bsm", "pitome_bsm", "pitome", "pitome"]
    tome = apply_pitome(deit, merge_method="tome")
    assert tome.config.merge_preset is None and tome.config.merge_method == "tome"
    assert MergeSettings.from_config(tome.config).label() == "tome, proportional_attention=False"
    bert_like = apply_pitome(deit, preset="authors-bert")
    assert bert_like.config.merge_layers == [0, 1, 2] and bert_like.config.energy == "gaussian"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(merge_method=["pitome", "fast"] * 6), "invalid entries \\['fast'"),
        (dict(merge_method=["pitome"] * 5), "5 entries but the model has 12 layers"),
        (dict(margin_end=1.0), "margin_end=1.0"),
        (dict(margin_end=float("nan")), "margin_end=nan"),
        (dict(margin=float("inf")), "margin=inf"),
        (dict(alpha=float("inf")), "alpha=inf"),
        (dict(keep_ratio=float("nan")), "keep_ratio=nan"),
    ],
)
def test_new_settings_are_validated(kwargs, fragment, vit_kwargs):
    with pytest.raises(ValueError, match=fragment):
        MergeSettings(num_layers=12, **kwargs)
    with pytest.raises(ValueError, match=fragment):
        PiToMeViTConfig(**vit_kwargs(), **kwargs)


def test_a_none_layer_in_the_list_merges_nothing(vit_kwargs):
    methods = ["pitome", "none", "tome", "pitome_bsm"] * 3
    config = PiToMeViTConfig(**vit_kwargs(), merge_method=methods, keep_ratio=0.9)
    schedule = token_schedule(config)
    assert [schedule[i] == schedule[i + 1] for i in range(12)] == [m == "none" for m in methods]
    model = PiToMeViTForImageClassification(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.token_counts.tolist() == schedule


def test_margin_end_schedule():
    s = MergeSettings(num_layers=10, margin=0.8, margin_end=0.3)
    assert [round(s.margin_at(l), 6) for l in (0, 5, 10)] == [0.8, 0.55, 0.3]
    assert MergeSettings(num_layers=10, margin=0.8, margin_end=0.3, margin_schedule="constant").margin_at(5) == 0.8


def test_mean_pooling_head_is_mae_global_pool(vit_kwargs):
    """classifier_pooling='mean': fc_norm(size-weighted mean of the last layer's patch tokens), before the final norm."""
    torch.manual_seed(0)
    config = PiToMeViTConfig(**vit_kwargs(num_hidden_layers=4), classifier_pooling="mean", keep_ratio=1.0)
    model = PiToMeViTForImageClassification(config).eval()
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = model(pixels)
        hidden = model.vit(pixels, output_hidden_states=True).hidden_states[-1]
        want = model.classifier(model.vit.layernorm(hidden[:, 1:].mean(1)))
        torch.testing.assert_close(out.logits, want)
        assert out.hidden_states is None
        merged = apply_pitome(model, keep_ratio=0.8)
        out = merged(pixels, output_hidden_states=True)
        last, sizes = out.hidden_states[-1][:, 1:], out.token_sizes[:, 1:]
        want = merged.classifier(merged.vit.layernorm((last * sizes[..., None]).sum(1) / sizes.sum(1, keepdim=True)))
        torch.testing.assert_close(out.logits, want)
        assert sizes.sum(1).tolist() == [196.0, 196.0]
    with pytest.raises(ValueError, match="classifier_pooling='max'"):
        PiToMeViTConfig(**vit_kwargs(), classifier_pooling="max")

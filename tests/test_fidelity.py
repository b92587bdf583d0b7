"""The fidelity benchmark's command-line merge settings (the benchmark itself needs the bench-real wheels and runs
by hand: python -m pitome_hf.fidelity text|dinov2)."""

import pytest

from pitome_hf.fidelity import parse_setting, settings_grid


def test_settings_are_parsed_and_reach_both_merging_methods():
    extra = dict(map(parse_setting, ["merge_metric=hidden", "proportional_attention=false", "margin=0.5",
                                     "merge_r=3", "protected_tokens=none"]))
    assert extra == dict(merge_metric="hidden", proportional_attention=False, margin=0.5, merge_r=3,
                         protected_tokens=None)
    grid = settings_grid([0.9], extra)
    assert grid[0] == dict(merge_method="none", keep_ratio=1.0)
    assert grid[1] == dict(extra, merge_method="tome", keep_ratio=0.9)
    assert grid[2] == dict(extra, merge_method="pitome", keep_ratio=0.9)


@pytest.mark.parametrize("text", ["merge_metric", "speed=fast", "keep_ratio=0.5"])
def test_unknown_or_reserved_settings_are_refused(text):
    with pytest.raises(ValueError, match="expected NAME=VALUE with NAME one of .*merge_metric"):
        parse_setting(text)

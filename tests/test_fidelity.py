"""The fidelity benchmark's merge settings (the benchmark itself needs the bench-real wheels and runs by hand:
pitome-hf fidelity text|dinov2)."""

from pitome_hf.commands.fidelity import settings_grid


def test_settings_reach_both_merging_methods():
    extra = dict(merge_metric="hidden", proportional_attention=False, margin=0.5)
    grid = settings_grid([0.9], extra)
    assert grid[0] == dict(merge_method="none", keep_ratio=1.0)
    assert grid[1] == dict(extra, merge_method="tome", keep_ratio=0.9)
    assert grid[2] == dict(extra, merge_method="pitome", keep_ratio=0.9)

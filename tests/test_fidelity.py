"""The fidelity benchmark's merge settings (the benchmark itself needs the bench-real wheels and runs by hand:
pitome-hf fidelity text|dinov2)."""

from pitome_hf.commands.fidelity import settings_grid


def test_settings_reach_both_merging_methods():
    extra = dict(merge_metric="hidden", proportional_attention=False, margin=0.5)
    grid = settings_grid([0.9], extra)
    assert grid[0] == dict(merge_method="none", keep_ratio=1.0)
    assert grid[1] == dict(extra, merge_method="tome", keep_ratio=0.9)
    assert grid[2] == dict(extra, merge_method="pitome", keep_ratio=0.9)


def test_sweep_rows_scores_each_setting_against_the_unmerged_run():
    import types

    from pitome_hf.commands.fidelity import sweep_rows
    from pitome_hf.modeling import PiToMeViTConfig

    model = types.SimpleNamespace(config=PiToMeViTConfig(num_hidden_layers=2, image_size=32, patch_size=8))
    seen, lines = [], []

    def measure():  # the "output" of a run: the keep ratio it ran at
        seen.append(model.config.merge_method)
        return model.config.keep_ratio

    def score(output, reference):
        return dict(output=output, reference=reference, gflops_x=output)

    rows = sweep_rows(model, [0.5], {}, measure, score, lambda row: f"got {row['output']}", ("x",), lines.append)
    assert seen == ["none", "tome", "pitome"]
    assert [r["reference"] for r in rows] == [1.0, 1.0, 1.0]  # every row against the unmerged run
    assert [r["flops_rel_x"] for r in rows] == [1.0, 0.5, 0.5]
    assert lines[1] == "    tome rho=0.5: got 0.5"

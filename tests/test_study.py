"""The study command: rows differ only where their names say, paired intervals, verdicts, outputs."""

import json

import numpy as np
import pytest

from pitome_hf.commands import study
from pitome_hf.modeling.merge_config import MergeSettings


def test_rows_differ_from_the_paper_only_where_named():
    paper = MergeSettings(num_layers=12, **study.configuration_settings("pitome", "vit", 12))
    for name, differs in [("tome", {"merge_method"}), ("pitome-elu", {"energy", "margin"}),
                          ("pitome_bsm", {"merge_method"}), ("pitome-hidden", {"merge_metric"}),
                          ("tome-paper", {"merge_method", "proportional_attention"}),
                          ("pitome-noprop", {"proportional_attention"})]:
        row = MergeSettings(num_layers=12, **study.configuration_settings(name, "vit", 12))
        changed = {f for f in ("merge_method", "energy", "margin", "margin_end", "merge_metric", "merge_split",
                               "proportional_attention", "merge_layers") if getattr(row, f) != getattr(paper, f)}
        assert changed == differs, name
    assert study.configuration_settings("authors", "bert", 6) == {"merge_preset": "authors-bert"}
    authors = MergeSettings(num_layers=12, merge_preset="authors-deit")
    with_prop = MergeSettings(num_layers=12, **study.configuration_settings("authors-prop", "vit", 12))
    assert with_prop.proportional_attention and not authors.proportional_attention
    assert {f for f in ("merge_method", "energy", "margin", "margin_end", "merge_metric", "merge_split",
                        "merge_layers") if getattr(with_prop, f) != getattr(authors, f)} == set()
    text = study.configuration_settings("tome", "bert", 6, {"merge_layers": [0, 1, 2]})
    assert text["merge_layers"] == [0, 1, 2]
    with pytest.raises(ValueError, match="configuration 'best'"):
        study.configuration_settings("best", "vit", 12)


def test_paired_interval_and_verdict():
    a = np.array([1] * 90 + [0] * 10)
    b = np.array([1] * 70 + [0] * 30)
    d, lo, hi = study.paired_interval(a, b)
    assert d == pytest.approx(0.2) and 0.1 < lo < 0.2 < hi < 0.3
    assert study.verdict((d, lo, hi), "pitome", "tome") == "pitome better"
    assert study.verdict(study.paired_interval(b, a), "pitome", "tome") == "tome better"
    same = study.paired_interval(a, np.roll(a, 1))
    assert same[1] < 0 < same[2] and study.verdict(same, "x", "y") == "no significant difference"


def test_fmnist_study_runs_and_writes(tmp_path):
    assert study.main(["fmnist", "--limit", "300", "--keep-ratios", "0.8", "--configurations", "none", "tome",
                       "pitome", "authors", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "study_fmnist.json").read_text())
    rows = {r["configuration"]: r for r in result["rows"]}
    assert list(rows) == ["none", "tome", "pitome", "authors"]
    assert rows["authors"]["settings"] == "authors-deit" and rows["tome"]["settings"] == "tome"
    assert rows["none"]["accuracy"] > 0.8 and len(rows["tome"]["correct"]) == 300
    assert rows["tome"]["gflops"] < rows["none"]["gflops"]
    assert "vs_tome" in rows["pitome"] and "vs_tome" not in rows["tome"]
    assert (tmp_path / "study_fmnist.png").stat().st_size > 1000
    assert "keep ratio 0.8" in (tmp_path / "study_fmnist.md").read_text()


def test_the_papers_comparison_is_paired_and_summarised(tmp_path):
    assert study.main(["fmnist", "--limit", "200", "--keep-ratios", "0.75", "--configurations", "none", "tome",
                       "authors", "tome-paper", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "study_fmnist.json").read_text())
    rows = {r["configuration"]: r for r in result["rows"]}
    assert rows["tome-paper"]["settings"] == "tome, proportional_attention=False"
    a, t = np.array(rows["authors"]["correct"]), np.array(rows["tome-paper"]["correct"])
    assert rows["authors"]["vs_tome_paper"] == pytest.approx(list(study.paired_interval(a, t)))
    assert "vs_tome_paper" not in rows["tome-paper"] and "vs_tome" in rows["tome-paper"]
    text = (tmp_path / "study_fmnist.md").read_text()
    assert "keep ratio 0.75, the paper's comparison: authors" in text and "the original ToMe" in text


def test_summary_sides_are_read_from_exact_verdicts():
    rows = [dict(configuration="tome-paper", keep_ratio=0.9, vs_tome=(0.01, 0.005, 0.02),
                 verdict_vs_tome="tome-paper better"),
            dict(configuration="pitome", keep_ratio=0.9, vs_tome=(-0.01, -0.02, -0.005), verdict_vs_tome="tome better")]
    better, worse = study._sides({"rows": rows}, 0.9, "tome", "tome")
    assert better == ["tome-paper (+1.00 [+0.50, +2.00])"] and worse == ["pitome (-1.00 [-2.00, -0.50])"]


def test_bad_ratio_and_missing_data_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"--keep-ratios: keep_ratio=1.5 is out of range"):
        study.main(["fmnist", "--keep-ratios", "1.5", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match=r"--keep-ratios 1.0: the unmerged row is always included"):
        study.main(["fmnist", "--keep-ratios", "0.9", "1.0", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="nope.npz does not exist"):
        study.main(["dinov2", "--data", str(tmp_path / "nope.npz"), "--out", str(tmp_path)])


def test_overview_summarises_what_it_measured(tmp_path, capsys):
    from pitome_hf.commands import overview

    assert overview.main(["--out", str(tmp_path), "--limit", "200", "--skip-dinov2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "What the tables say:" in out and "unmerged" in out and "DINOv2 part skipped" in out
    result = json.loads((tmp_path / "overview.json").read_text())
    assert result["accuracy"]["num_samples"] == 200 and (tmp_path / "evaluate" / "results.json").is_file()


def test_dinov2_study_needs_data_named_by_the_user(tmp_path, monkeypatch):
    """The package never reaches outside itself for data: --data, or PITOME_STUDY_DATA."""
    monkeypatch.delenv("PITOME_STUDY_DATA", raising=False)
    with pytest.raises(ValueError, match="study dinov2 needs --data"):
        study.main(["dinov2", "--out", str(tmp_path)])

"""The shipped `evaluate` module as evaluate's own tools use it (issue 34): `evaluate.load(path)` with no config_name is
accuracy, it combines with other modules in `evaluate.combine`, and it has a metric card in evaluate's format."""

import configparser
from pathlib import Path

import pytest
import yaml

evaluate = pytest.importorskip("evaluate")

from pitome_hf.evaluation.metrics import MODULE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

ERROR_RATE = '''
import datasets
import evaluate


class ErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="wrong / all", citation="", inputs_description="",
                                   features=datasets.Features({"predictions": datasets.Value("int64"),
                                                               "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        return {"error_rate": sum(p != r for p, r in zip(predictions, references)) / len(predictions)}
'''


@pytest.fixture(autouse=True)
def _writable_hf_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_loading_by_path_without_config_name_is_accuracy():
    metric = evaluate.load(str(MODULE))
    assert metric.config_name == "default"
    assert metric.compute(predictions=[1, 2, 3, 4], references=[1, 2, 0, 4]) == {"accuracy": 0.75}
    assert evaluate.load(str(MODULE), config_name="accuracy").compute(predictions=[1], references=[0]) == {
        "accuracy": 0.0}
    with pytest.raises(ValueError, match=r"config_name='f1' is not a pitome_hf metric; allowed: accuracy, "
                                         r"recall_at_k, vqa_accuracy \(none: accuracy\)"):
        evaluate.load(str(MODULE), config_name="f1")


def test_combines_with_other_modules(tmp_path):
    other = tmp_path / "error_rate"
    other.mkdir()
    (other / "error_rate.py").write_text(ERROR_RATE)
    combined = evaluate.combine([str(MODULE), str(other)])
    assert combined.compute(predictions=[1, 2, 3, 4], references=[1, 2, 0, 4]) == {"accuracy": 0.75,
                                                                                   "error_rate": 0.25}
    prefixed = evaluate.combine({"bare": str(MODULE), "named": evaluate.load(str(MODULE), config_name="accuracy")},
                                force_prefix=True)
    assert prefixed.compute(predictions=[0, 1], references=[0, 0]) == {"bare_accuracy": 0.5, "named_accuracy": 0.5}


def test_the_metric_card_is_in_evaluates_format_and_its_examples_hold():
    card = (MODULE / "README.md").read_text()
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["title"] == "pitome_metrics" and {"evaluate", "metric"} <= set(header["tags"])
    assert "accuracy (the default)" in header["description"]
    for section in ("# Metric Card for pitome_metrics", "## Metric Description", "## How to Use", "### Inputs",
                    "### Output Values", "## Limitations and Bias", "## Citation"):
        assert section in card, section
    # the values the card shows
    recall = evaluate.load(str(MODULE), config_name="recall_at_k")
    assert "{'recall@1': 0.0, 'recall@2': 0.5}" in card
    assert recall.compute(predictions=[[3, 1, 2], [0, 1, 2]], references=[[1], [2, 5]], k=[1, 2]) == {
        "recall@1": 0.0, "recall@2": 0.5}
    assert "{'vqa_accuracy': 1.0}" in card
    assert evaluate.load(str(MODULE), config_name="vqa_accuracy").compute(
        predictions=["a cat"], references=[["cat"] * 10]) == {"vqa_accuracy": 1.0}
    # shipped in the wheel beside the module
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert "*/README.md" in setup["options.package_data"]["pitome_hf.evaluation.metrics"].split()

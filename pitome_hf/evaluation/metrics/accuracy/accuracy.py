"""Accuracy: the fraction of predictions equal to their reference (an `evaluate` module shipped with pitome_hf).

Shipped as package data and loaded by path (`evaluate.load(<folder>)`), since `evaluate.load("accuracy")` needs the
Hugging Face Hub. Inputs: integer `predictions` and `references`. Output: {"accuracy": float}.
"""

import datasets
import evaluate

_DESCRIPTION = "Accuracy = correct predictions / all predictions."
_KWARGS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
Returns:
    accuracy (float): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("accuracy needs at least one prediction; got none.")
        correct = sum(int(p == r) for p, r in zip(predictions, references))
        return {"accuracy": correct / len(predictions)}

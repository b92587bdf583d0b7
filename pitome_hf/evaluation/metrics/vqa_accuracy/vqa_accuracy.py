"""VQA soft accuracy (an `evaluate` module shipped with pitome_hf, loaded by path).

The VQAv2 rule: an answer scores min(1, (number of annotators who gave it) / 3), averaged over the 10 choose 9
subsets of annotators. Answers are normalised (lower case, punctuation and articles removed, number words to digits)
before comparison. Inputs: `predictions` (str) and `references` (list of str, the annotators' answers).
Output: {"vqa_accuracy": float in [0, 1]}.
"""

import re
from itertools import combinations

import datasets
import evaluate

_DESCRIPTION = "VQA accuracy: min(1, #matching human answers / 3), averaged over annotator subsets."
_KWARGS = """
Args:
    predictions (list of str): the model's answers.
    references (list of list of str): the human answers for each question (usually 10).
Returns:
    vqa_accuracy (float): in [0, 1].
"""
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    text = text.lower().replace("\n", " ").replace("\t", " ").strip()
    text = re.sub(r"(?<=\d),(?=\d)", "", text)
    text = re.sub(r"[^\w\s']", " ", text)
    words = [_NUMBERS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def soft_score(prediction: str, answers: list) -> float:
    pred = normalize_answer(prediction)
    gold = [normalize_answer(a) for a in answers]
    if len(gold) <= 1:
        return float(bool(gold) and pred == gold[0])
    subsets = list(combinations(range(len(gold)), len(gold) - 1))
    return sum(min(1.0, sum(gold[i] == pred for i in s) / 3.0) for s in subsets) / len(subsets)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class VqaAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("vqa_accuracy needs at least one prediction; got none.")
        return {"vqa_accuracy": sum(soft_score(p, r) for p, r in zip(predictions, references)) / len(predictions)}

"""The metrics pitome_hf reports, as one `evaluate` module with a configuration per metric (as `glue` has one per task).

Shipped as package data and loaded by path (`evaluate.load(<folder>, config_name=...)`), since `evaluate.load("accuracy")`
needs the Hugging Face Hub. Without a config_name (evaluate then asks for "default") it is "accuracy", so
`evaluate.load(<folder>)` and `evaluate.combine([<folder>, ...])` work. Its metric card is README.md beside this file.
Configurations:

- "accuracy": integer `predictions` and `references`; {"accuracy": correct / all}.
- "recall_at_k": retrieval. Each example is one query: `predictions` the ranked retrieved ids (best first, at least
  max(k) long), `references` the ids that count as correct (e.g. the 5 captions of an image); recall@k is the fraction
  of queries with a correct id among the first k. {"recall@1": ..., "recall@5": ..., "recall@10": ...}.
- "vqa_accuracy": the VQAv2 rule. An answer scores min(1, (annotators who gave it) / 3), averaged over the 10 choose 9
  subsets of annotators, after normalising answers (lower case, punctuation and articles removed, number words to
  digits). `predictions` (str), `references` (list of str). {"vqa_accuracy": float in [0, 1]}.
"""

import re
from itertools import combinations

import datasets
import evaluate

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


def _accuracy(predictions, references):
    return {"accuracy": sum(int(p == r) for p, r in zip(predictions, references)) / len(predictions)}


def _recall_at_k(predictions, references, k=(1, 5, 10)):
    bad = [c for c in k if int(c) < 1]
    if bad:
        raise ValueError(f"k={list(k)!r} has invalid cut-offs {bad!r}: every k must be >= 1.")
    return {f"recall@{int(cut)}": sum(bool(set(p[: int(cut)]) & set(r)) for p, r in zip(predictions, references))
            / len(predictions) for cut in k}


def _vqa_accuracy(predictions, references):
    return {"vqa_accuracy": sum(soft_score(p, r) for p, r in zip(predictions, references)) / len(predictions)}


_INT, _INTS = datasets.Value("int64"), datasets.Sequence(datasets.Value("int64"))
# configuration -> (description, prediction feature, reference feature, compute)
METRICS = {
    "accuracy": ("Accuracy = correct predictions / all predictions.", _INT, _INT, _accuracy),
    "recall_at_k": ("Recall@k: fraction of queries whose top-k retrieved items contain a correct one (k: cut-offs, "
                    "default [1, 5, 10]).", _INTS, _INTS, _recall_at_k),
    "vqa_accuracy": ("VQA accuracy: min(1, #matching human answers / 3), averaged over annotator subsets.",
                     datasets.Value("string"), datasets.Sequence(datasets.Value("string")), _vqa_accuracy),
}


DEFAULT = "accuracy"  # the configuration of `evaluate.load(<folder>)` (evaluate names it "default")


class PitomeMetrics(evaluate.Metric):
    @property
    def metric_name(self) -> str:
        """The configuration in force: config_name, or accuracy for evaluate's "default"."""
        return DEFAULT if self.config_name == "default" else self.config_name

    def _info(self):
        if self.metric_name not in METRICS:
            raise ValueError(f"config_name={self.config_name!r} is not a pitome_hf metric; allowed: "
                             f"{', '.join(METRICS)} (none: {DEFAULT}).")
        description, prediction, reference, _ = METRICS[self.metric_name]
        return evaluate.MetricInfo(description=description, citation="", inputs_description=description,
                                   features=datasets.Features({"predictions": prediction, "references": reference}))

    def _compute(self, predictions, references, **kwargs):
        if len(predictions) == 0:
            raise ValueError(f"{self.metric_name} needs at least one prediction; got none.")
        return METRICS[self.metric_name][3](predictions, references, **kwargs)

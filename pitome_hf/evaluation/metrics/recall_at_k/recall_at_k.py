"""Recall@k for retrieval (an `evaluate` module shipped with pitome_hf, loaded by path).

Each example is one query: `predictions` is the ranked list of retrieved item ids (best first, at least max(k) long),
`references` the list of ids that count as correct (e.g. the 5 captions of an image). Recall@k is the fraction of
queries with at least one correct id among the first k. Output: {"recall@1": ..., "recall@5": ..., "recall@10": ...}.
"""

import datasets
import evaluate

_DESCRIPTION = "Recall@k: fraction of queries whose top-k retrieved items contain a correct one."
_KWARGS = """
Args:
    predictions (list of list of int): ranked retrieved ids per query.
    references (list of list of int): correct ids per query.
    k (list of int, optional): cut-offs, default [1, 5, 10].
Returns:
    recall@k (float) for each k.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RecallAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, k=(1, 5, 10)):
        if len(predictions) == 0:
            raise ValueError("recall@k needs at least one query; got none.")
        bad = [c for c in k if int(c) < 1]
        if bad:
            raise ValueError(f"k={list(k)!r} has invalid cut-offs {bad!r}: every k must be >= 1.")
        out = {}
        for cut in k:
            hits = sum(bool(set(p[: int(cut)]) & set(r)) for p, r in zip(predictions, references))
            out[f"recall@{int(cut)}"] = hits / len(predictions)
        return out

"""The project's `evaluate` metric modules, shipped as package data and loaded by path (works offline)."""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).parent
AVAILABLE = ("accuracy", "recall_at_k", "vqa_accuracy")


def metric_path(name: str) -> str:
    if name not in AVAILABLE:
        raise ValueError(f"unknown metric {name!r}; the shipped metrics are {', '.join(AVAILABLE)}.")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs):
    """`evaluate.load` on the shipped module folder (no Hub access)."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)

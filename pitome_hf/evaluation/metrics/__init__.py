"""The project's `evaluate` metrics: one module (`pitome_metrics/`, a configuration per metric), shipped as package
data and loaded by path (works offline)."""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).parent
MODULE = METRICS_DIR / "pitome_metrics"


def load_metric(name: str, **kwargs):
    """`evaluate.load` of the shipped module's configuration `name` (no Hub access); an unknown name is refused with
    the list of the module's configurations."""
    import evaluate

    return evaluate.load(str(MODULE), config_name=name, **kwargs)

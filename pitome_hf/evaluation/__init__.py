"""Evaluation: `evaluate.py` (the sweep, the journal, the report; `pitome-hf evaluate`), `tasks.py` (one class per
task), `retrieval.py` (image-text recall), `metrics/` (the `evaluate` metric modules, loaded by path)."""

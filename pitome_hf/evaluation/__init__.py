"""Evaluation (what `pitome-hf evaluate` runs; its command line is pitome_hf.commands.evaluate): `evaluate.py` (the
sweep), `data.py` (the dataset and its columns), `fingerprints.py` (what the rows depend on), `journal.py` (rows.jsonl
and its lock), `report.py` (the report and its files), `tasks.py` (one class per task), `retrieval.py` (image-text
recall), `metrics/` (the `evaluate` metric modules, loaded by path)."""

"""The commands that are not a capability of their own: `convert`, `push`, `overview`, `study`, `fidelity`, and the
merge flags every command shares (`options.py`). `evaluate` lives in pitome_hf.evaluation and `benchmark` in
pitome_hf.measurement; `pitome_hf/cli.py` dispatches to all of them."""

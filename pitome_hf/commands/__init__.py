"""The commands: `overview`, `convert`, `evaluate`, `benchmark`, `study`, `fidelity`, `export`, `push`, each a module
with `main(argv)` that `pitome_hf/cli.py` dispatches to. A command reads its flags (the shared ones come from
pitome_hf.options) and calls the rooms below it: evaluation, measurement, deployment, the registry; nothing below
imports a command (tests/test_layering.py)."""

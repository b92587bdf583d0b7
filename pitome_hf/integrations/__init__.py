"""Plug-ins that other tools load from pitome_hf (each imports its tool; nothing here is imported by `import pitome_hf`):
`lmms_eval.py` (the `lmms_eval.models` entry point: `lmms-eval --model pitome_<family>`)."""

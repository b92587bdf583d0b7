"""Measurement (what `pitome-hf benchmark` runs; its command line is pitome_hf.commands.benchmark): `timing.py`
(interleaved timing, the pinned allocator, progress, tables), `benchmark.py`, `benchmark_llava.py` and
`benchmark_vlm.py` (the benchmarks), `shapes.py` (the benchmark shapes). The analytic FLOPs are pitome_hf.flops
(`flops.py` here is a deprecated alias)."""

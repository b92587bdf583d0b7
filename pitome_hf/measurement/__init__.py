"""Measurement: `flops.py` (the analytic FLOPs of every family, one owner), `timing.py` (interleaved timing, the
pinned allocator, progress, tables), `benchmark.py` and `benchmark_llava.py` (`pitome-hf benchmark`)."""

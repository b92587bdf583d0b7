"""Measurement: the one place for device sync, timers, the merge step's own time, peak memory, progress lines,
sweeps over configurations x keep ratios, and markdown tables. Evaluation, benchmarks, the study, fidelity and the
Space import this module; it imports nothing of the toolkit but the merge state it instruments.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import resource
import statistics
import sys
import time
from typing import Callable, Iterable, Optional, Sequence

import torch

# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf.modeling.merge_state import MergeState

MIN_WARMUP, MIN_REPEATS = 1, 3  # below this a timing is not a measurement


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache
def pin_allocator() -> Optional[str]:
    """Keep freed memory in this process from now on: glibc's mallopt with no heap trimming and no mmap below 1 GiB.

    With glibc's defaults a large tensor is often a fresh mmap whose pages fault in on first touch, and the thresholds
    that decide it move with what the process allocated before; measured here on the embedded default, the
    unmerged model ran 35% faster once they were pinned, and side-by-side ratios moved by 10% between identical
    runs before. Timing commands call this first (jemalloc or tcmalloc setups behave like this too). Returns a short
    note for the output, or None where the C library is not glibc (nothing changed)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-1, 2**31 - 1) == 1 and libc.mallopt(-3, 2**30) == 1  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return None
    return "glibc malloc pinned (no trim, no mmap below 1 GiB)" if ok else None


def check_timing_settings(warmup: int, repeats: int, allow_short: bool = False) -> Optional[str]:
    """None when warm-up and repeats can measure; else refuses (ValueError), or with `allow_short` returns the caveat
    to print next to the figures."""
    if warmup >= MIN_WARMUP and repeats >= MIN_REPEATS:
        return None
    message = (f"--warmup {warmup} --repeats {repeats} is too short to measure (at least --warmup {MIN_WARMUP} "
               f"--repeats {MIN_REPEATS}): the first calls include one-time costs and one repeat has no spread")
    if not allow_short:
        raise ValueError(message + "; pass --allow-short to run it anyway, flagged.")
    return "CAUTION: " + message + ". These figures are not measurements."


def time_call(fn: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds of `fn()` after `warmup` calls, with device synchronisation around each call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_interleaved(fns: Sequence[Callable[[], object]], device: torch.device, warmup: int = 2,
                     repeats: int = 5, on_warm: Optional[Callable[[int], None]] = None,
                     on_round: Optional[Callable[[int], None]] = None) -> list[float]:
    """Median seconds of each `fn()`, measured side by side: every function is warmed up first (`on_warm(i)` after
    each), then `repeats` rounds time each function once, in turn (`on_round(k)` after round k). A slow spell of a
    shared machine then falls on every function alike instead of on whichever ran during it, so the ratios between
    them are what they measure."""
    for i, fn in enumerate(fns):
        for _ in range(warmup):
            fn()
        synchronize(device)
        if on_warm is not None:
            on_warm(i)
    times: list[list[float]] = [[] for _ in fns]
    for k in range(max(1, repeats)):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[i].append(time.perf_counter() - start)
        if on_round is not None:
            on_round(k)
    return [statistics.median(t) for t in times]


@contextlib.contextmanager
def compiled_runs(count: int):
    """Room for `count` torch.compile'd configurations of one model in one process (benchmark and evaluate sweeps).

    The merge settings are constants of a compiled graph, so each configuration recompiles the forward (and an input
    of a new shape may once more). Past torch._dynamo's recompile limit (8 per function) dynamo silently runs the rest
    frame by frame, mostly eagerly, and the "compiled" rows would not be compiled: the limit is raised meanwhile."""
    import torch._dynamo

    limit = max(int(torch._dynamo.config.recompile_limit), 2 * count + 2)
    with torch._dynamo.config.patch(recompile_limit=limit):
        yield


@contextlib.contextmanager
def merge_step_timer(device: torch.device):
    """Wall time spent inside `MergeState.step`, in total and per layer (instrumentation for eager runs only: a
    compiled graph has no step to time). Yields {"seconds": float, "per_layer": {layer: seconds}, "calls": int}."""
    spent = {"seconds": 0.0, "per_layer": {}, "calls": 0}
    original = MergeState.step

    def timed(self, x, layer, keys=None):
        synchronize(device)
        start = time.perf_counter()
        out = original(self, x, layer, keys)
        synchronize(device)
        seconds = time.perf_counter() - start
        spent["seconds"] += seconds
        spent["per_layer"][layer] = spent["per_layer"].get(layer, 0.0) + seconds
        spent["calls"] += 1
        return out

    MergeState.step = timed
    try:
        yield spent
    finally:
        MergeState.step = original


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset (CUDA), else the process's peak resident memory (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_bytes(fn, device) -> int:
    """Peak memory allocated while `fn()` runs, beyond what was allocated before it (CUDA: the caching allocator's
    peak; CPU: torch's profiler memory events, cumulated in time order)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    return max([0, *itertools.accumulate(e.nbytes() for e in events)])


@contextlib.contextmanager
def _quiet_native_stderr():
    """The profiler's native library prints two lines per session on file descriptor 2: silence them meanwhile."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class Progress:
    """One line per finished step with its figures and the time left, on stderr, whether or not it is a terminal."""

    def __init__(self, total: int, label: str = "", enabled: bool = True, stream=None):
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.done, self.start = 0, time.perf_counter()

    def step(self, text: str, show: bool = True) -> None:
        """Count one step; print its line unless `show` is False (long runs of short steps print every few)."""
        self.done += 1
        if not (self.enabled and show):
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done)
        print(f"{self.label}[{self.done}/{self.total}] {text} ({elapsed:.0f} s elapsed, about {left:.0f} s left)",
              file=self.stream, flush=True)


def sweep(methods: Sequence[str], keep_ratios: Sequence[float], presets: Iterable[str] = (),
          extra: dict | None = None) -> list[tuple[dict, float]]:
    """(merge settings, keep ratio) for every row: the unmerged model once (when "none" is among the methods), then
    each method and each preset at every keep ratio, each with the `extra` merge settings."""
    extra = extra or {}
    configs = [(dict(merge_method="none"), 1.0)] if "none" in methods else []
    rows = [dict(extra, merge_method=m) for m in methods if m != "none"] + [dict(extra, merge_preset=p) for p in presets]
    return configs + [(settings, float(r)) for r in keep_ratios for settings in rows]


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple]) -> str:
    """columns: (key, title, format) with format a callable value -> str; a missing key prints empty."""
    head = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(row[key]) if row.get(key) is not None else "" for key, _, fmt in columns) + " |"
            for row in rows]
    return "\n".join([head, rule, *body])


def fixed(digits: int) -> Callable:
    return lambda v: f"{v:.{digits}f}"

@contextlib.contextmanager
def frozen_parameters(model):
    """`model`'s parameters with requires_grad off inside the block, restored after. FlopCounterMode counts with it:
    its module tracker cannot hook, under no_grad, a parameter that requires grad passed to a module as an input
    (Qwen3.5's Gated DeltaNet layers give their convolution's weight to the `kernels` causal-conv1d layer: "Expected
    gradient function to be set")."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


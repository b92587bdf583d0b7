"""The speed benchmarks behind `pitome-hf benchmark` (the command line is pitome_hf.commands.benchmark): none vs ToMe
vs PiToMe measured side by side in one run, eager, compiled or in ONNX Runtime (`compare_methods`), for every family
with a benchmark shape in the registry (`bench_family`) and the embedded default (`bench_default`); `subcommands`
names what each runs, `check_modes` the modes it has. LLaVA and the vision-language families: benchmark_llava,
benchmark_vlm.
"""

from __future__ import annotations

import sys
import tempfile
import time
from functools import partial

import torch

from pitome_hf.families import FAMILIES, family_named
from pitome_hf.measurement import benchmark_vlm
from pitome_hf.measurement.shapes import stock_for_shape
from pitome_hf.measurement.timing import (  # noqa: F401 (markdown_table: the tables of these rows, with COLUMNS)
    Progress,
    compiled_runs,
    default_device,
    markdown_table,
    merge_step_timer,
    synchronize,
    time_interleaved,
)
from pitome_hf.options import merge_arguments

MODES = ("eager", "compiled", "onnx")


def _model_for(stock, method: str, ratio: float, mode: str, extra: dict | None = None):
    from pitome_hf.apply import apply_pitome

    settings = {} if method == "none" else (extra or {})
    model = apply_pitome(stock, merge_method=method, keep_ratio=ratio, **settings)
    return torch.compile(model) if mode == "compiled" else model


class OnnxRun:
    """An `onnx` row: the PiToMe model exported as a static graph for this input (`deployment.onnx`), run by an ONNX
    Runtime session (CPU provider, or CUDA's on a CUDA device; torch's thread count; no spinning threads, since the
    rows take turns on the cores). Calling it runs the session on
    the input (for CUDA the host-to-device copy of the input is part of each call); `.config` is the model's, for the
    FLOPs."""

    def __init__(self, model, x: torch.Tensor, folder: str):
        from pitome_hf.deployment.onnx import session, temporary_export

        if x.dtype != torch.float32:
            raise ValueError(f"--modes onnx runs float32 graphs; got --dtype {str(x.dtype).removeprefix('torch.')}.")
        self.config = model.config
        self.path = temporary_export(model.cpu(), x.shape[0], directory=folder)  # the PyTorch model is not run again
        providers = ("CUDAExecutionProvider",) if x.device.type == "cuda" else ("CPUExecutionProvider",)
        self.session = session(self.path, providers=providers, spinning=False)  # runs take turns on the cores
        self.feed = {"pixel_values": x.detach().cpu().numpy()}

    def __call__(self, x=None):
        return self.session.run(None, self.feed)


def compare_methods(stock, x: torch.Tensor, flops_fn, ratios, dtype: str, warmup: int, repeats: int,
                    modes=("eager",), methods=("tome", "pitome"), extra: dict | None = None) -> list[dict]:
    """Time `stock` unmerged, then each method at each keep ratio, on input `x`, in each mode; one row per run.

    `flops_fn(config)` gives one sample's analytic FLOPs. Every run shares the stock model's weights; the runs of one
    mode are timed interleaved (`time_interleaved`: round after round, each run once per round) and compared with
    that mode's unmerged run. `extra`: merge settings of every merged run (the command line's merge flags)."""
    dev, batch = x.device, x.shape[0]
    rows = []
    runs = [("none", 1.0)] + [(m, r) for r in ratios for m in methods]
    rounds = max(1, repeats)
    lines = Progress((len(runs) + rounds) * len(modes), "benchmark ")  # warm-ups, then timing rounds
    folder = tempfile.TemporaryDirectory(prefix="pitome_bench_onnx_") if "onnx" in modes else None
    for mode in modes:
        models = [_model_for(stock, method, ratio, "eager" if mode == "onnx" else mode, extra) for method, ratio in runs]
        if mode == "onnx":
            models = [OnnxRun(m, x, folder.name) for m in models]
        with torch.inference_mode(), compiled_runs(len(runs)):
            warmed = lambda i: lines.step(f"{mode} {runs[i][0]} {runs[i][1]}: warmed up"
                                          + (" (compiled)" if mode == "compiled" else ""))
            every = max(1, rounds // 5)
            timed = lambda k: lines.step(f"{mode}: timing round {k + 1}/{rounds} (every run once per round)",  # noqa: E731
                                         show=(k + 1) % every == 0 or k + 1 == rounds)
            times = time_interleaved([lambda m=m: m(x) for m in models], dev, warmup, repeats, on_warm=warmed,
                                     on_round=timed)
            steps = [_merge_step_share(m, x, dev) if mode == "eager" and run[0] != "none" else (None, None)
                     for m, run in zip(models, runs)]
        base_flops, base_time = flops_fn(models[0].config), times[0]
        for (method, ratio), model, seconds, (per_layer, share) in zip(runs, models, times, steps):
            flops = flops_fn(model.config)
            ideal, measured = base_flops / flops, base_time / seconds
            rows.append(dict(method=method, keep_ratio=ratio, mode=mode, images_per_s=batch / seconds,
                             gflops=flops / 1e9, ideal_speedup=ideal, speedup=measured,
                             measured_over_ideal=measured / ideal, seconds=seconds,
                             merge_ms_per_layer=None if per_layer is None else 1e3 * per_layer,
                             merge_share=share,
                             device=str(dev), dtype=dtype, batch=batch))
        print(f"benchmark {mode}: " + ", ".join(f"{r['method']} {r['keep_ratio']} {r['images_per_s']:.0f}/s"
                                                for r in rows if r["mode"] == mode), file=sys.stderr, flush=True)
    if folder is not None:
        folder.cleanup()
    tome = {(r["mode"], r["keep_ratio"]): r["seconds"] for r in rows if r["method"] == "tome"}
    for r in rows:
        if r["method"] == "pitome" and (r["mode"], r["keep_ratio"]) in tome:
            r["time_vs_tome"] = r["seconds"] / tome[(r["mode"], r["keep_ratio"])]
    return rows


def _merge_step_share(model, x: torch.Tensor, dev) -> tuple[float, float]:
    """Three more, instrumented eager calls: the merge step's seconds per merging layer and its share of the forward."""
    total = 0.0
    with merge_step_timer(dev) as spent:
        for _ in range(3):
            begin = time.perf_counter()
            model(x)
            synchronize(dev)
            total += time.perf_counter() - begin
    return spent["seconds"] / max(1, spent["calls"]), spent["seconds"] / total


def _inputs(stock, batch: int, dev, dtype):
    vision = getattr(stock.config, "vision_config", None) or stock.config
    size = vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]
    return torch.randn(batch, 3, size, size, device=dev, dtype=dtype)


def _run(stock, flops_fn, args) -> list[dict]:
    dev = torch.device(args.device) if args.device else default_device()
    torch_dtype = getattr(torch, args.dtype)
    stock = stock.eval().to(dev, torch_dtype)
    stock.set_attn_implementation(args.attn)  # every row, merged or not, runs this attention backend
    x = _inputs(stock, args.batch_size, dev, torch_dtype)
    return compare_methods(stock, x, flops_fn, args.keep_ratios, args.dtype, args.warmup, args.repeats, args.modes,
                           methods=args.methods, extra=merge_arguments(args))


def bench_family(family: str, args, config_overrides: dict | None = None) -> list[dict]:
    """Every shape of `family`'s benchmark (`--shapes`), each unmerged vs merged, side by side."""
    spec = family_named(family).benchmark
    flops, kwargs = family_named(family).flops, dict(spec.flops_kwargs)
    rows = []
    for shape in getattr(args, "shapes", None) or list(spec.shapes):
        stock = stock_for_shape(family, shape, **(config_overrides or {}))
        label = {"model": f"{spec.label} {shape}"} if len(spec.shapes) > 1 else {}
        rows += [dict(row, **label) for row in _run(stock, lambda cfg: flops(cfg, **kwargs), args)]
    return rows


def bench_default(args) -> list[dict]:
    """The embedded Fashion-MNIST ViT with its real weights (49 patch tokens, width 96, 4 layers)."""
    # pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
    from pitome_hf.modeling import PiToMeViTForImageClassification
    from pitome_hf.paths import DEFAULT_MODEL

    model = PiToMeViTForImageClassification.from_pretrained(DEFAULT_MODEL, merge_method="none")
    return _run(model, family_named("vit").flops, args)


COLUMNS = [
    ("method", "method", str), ("keep_ratio", "keep ratio", str), ("mode", "mode", str),
    ("images_per_s", "images/s", lambda v: f"{v:.1f}"), ("gflops", "GFLOPs", lambda v: f"{v:.4g}"),
    ("ideal_speedup", "FLOPs-ideal speed-up", lambda v: f"{v:.3f}"), ("speedup", "measured speed-up",
                                                                       lambda v: f"{v:.3f}"),
    ("measured_over_ideal", "measured/ideal", lambda v: f"{v:.3f}"),
    ("merge_ms_per_layer", "merge step ms/layer", lambda v: f"{v:.3f}"),
    ("merge_share", "merge share", lambda v: f"{100 * v:.1f}%"), ("time_vs_tome", "PiToMe time / ToMe", lambda v: f"{v:.3f}"),
]

DEFAULT = ([0.95, 0.9, 0.85, 0.8, 0.75], 64, 100, "embedded Fashion-MNIST ViT (real weights)")


def subcommands() -> dict:
    """subcommand -> (runner, default keep ratios, default batch, default repeats, title): the embedded default,
    then every family with a benchmark shape in the registry."""
    out = {"default": (bench_default, *DEFAULT)}
    for family in FAMILIES:
        if family.benchmark is not None and not benchmark_vlm.is_vlm_benchmark(family):
            spec = family.benchmark
            out[family.name] = (partial(bench_family, family.name), list(spec.ratios), 32, 5, spec.title)
    return out


def modes_of(family: str) -> tuple:
    """The --modes `pitome-hf benchmark <family>` runs: every mode for the vision benchmarks; eager only for LLaVA
    and the vision-language families (they time the prefill of a prompt, which has no compiled or ONNX rows here)."""
    return MODES if family in subcommands() else ("eager",)


def check_modes(family: str, modes) -> None:
    """Refuse (ValueError, one line) a --modes value the family's benchmark does not run, naming what it allows."""
    allowed = modes_of(family)
    other = [m for m in modes if m not in allowed]
    if other:
        vision = [name for name in subcommands() if modes_of(name) == MODES]
        raise ValueError(f"--modes {' '.join(other)}: `benchmark {family}` runs only {', '.join(allowed)} rows (a "
                         f"vision-language prefill); {'/'.join(other)} rows are for the vision benchmarks: "
                         f"{', '.join(vision)}.")




# Deprecated names: the command line (its parser and main) moved to pitome_hf.commands.benchmark, a command like the
# others. They are looked up only when old code asks for them (this module's __getattr__, with a DeprecationWarning):
# measurement imports no command (tests/test_layering.py lists these aliases).
_MOVED = ("main", "build_parser")


def __getattr__(name: str):
    if name in _MOVED:
        import warnings

        warnings.warn(f"pitome_hf.measurement.benchmark.{name} moved to pitome_hf.commands.benchmark.{name}; import "
                      "it from there", DeprecationWarning, stacklevel=2)
        from pitome_hf.commands import benchmark as command

        return getattr(command, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

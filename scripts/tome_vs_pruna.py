"""Our ToMe against Pruna's ToMe (pruna==0.3.4, `token_merging`), side by side on a ViT-B/16-shaped model (issue #36).

    bash scripts/setup_pruna_env.sh                     # once: builds .venv-pruna (transformers 4.x, pruna 0.3.4)
    .venv/bin/python scripts/tome_vs_pruna.py           # 3 alternating passes per side, r = 8 and 16 in every layer
    .venv/bin/python scripts/tome_vs_pruna.py --passes 5 --warmup 2 --repeats 7
    .venv/bin/python scripts/tome_vs_pruna.py --profile 16   # instead: one profiled forward of each side at r=16

Pruna's token merging needs transformers < 5, ours transformers 5, so each side runs in its own virtualenv and its
own process (ours: the interpreter running this script, pitome_hf from this checkout; Pruna's: --pruna-python,
default .venv-pruna/bin/python). This script, run by ours, is the orchestrator: it builds the stock
google/vit-base-patch16-224 config shape (the registry's "ViT-B/16" benchmark shape: 224 px, patch 16, width 768,
12 layers, 12 heads, 1000 labels) with random weights (seed 0; the Hub is not reached), saves it once with
save_pretrained and one input batch with torch.save in a temporary folder, then starts the workers (this same file
with --worker ours|pruna), which load both from that folder: the same weights and the same inputs on both sides.

The passes alternate, ours, pruna, ours, pruna, ...: a slow spell of the shared machine then falls on both sides
alike. In each pass the worker loads the stock (unmerged) model and the merged model at each r, and times them
interleaved in that process with pitome_hf.measurement.timing.time_interleaved (every run warmed up, then --repeats
rounds of each run once in turn, medians), after glibc's malloc is pinned (timing.pin_allocator), as `pitome-hf
benchmark` does. Pruna's worker runs the same two functions: timing.py is loaded from this checkout by its path (its
one pitome_hf import, MergeState, is given a placeholder: the two functions do not use it).

  ours:  stock transformers ViTForImageClassification.from_pretrained(folder) vs
         PiToMeViTForImageClassification.from_pretrained(folder, merge_method="tome", merge_r=r)
         (with --with-none also merge_method="none": the PiToMe model's unmerged path, against the stock model)
  pruna: stock transformers (4.x) ViTForImageClassification.from_pretrained(folder) vs
         pruna.smash(model, SmashConfig({"token_merging": {"r": r}})), Pruna's public API (prop_attn and the class
         token protected by its defaults), called as the PrunaModel it returns

Each side's speed-up is over its own stock model. Its FLOPs-ideal speed-up comes from one formula for both:
pitome_hf.flops.vit_flops of a PiToMe ViT config whose merge_r is the per-layer r each side was seen to
merge (forward hooks count the tokens entering and leaving every layer in the first pass; the counts are checked
against pitome_hf's token_schedule). The first pass also checks that each side at r = 0 gives its stock model's logits,
that the stock models of the two environments agree, and prints how far ours and Pruna's merged logits are apart.

Printed: per pass and side, each r's measured speed-up, FLOPs-ideal speed-up and measured/ideal; then the median per
side over the passes, and the load average around each pass. Run it on a quiet machine for numbers to quote: on
cores shared with other jobs every multi-threaded operator can stall at OpenMP's barrier for a scheduler slice (a
(16, 181) log was seen to take 12 ms at 2 threads), which weighs on the side that calls more small operators, not on
the FLOPs. --profile with --threads 1 shows the operators' own work even then.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PRUNA_PYTHON = ROOT / ".venv-pruna" / "bin" / "python"
SHAPE = ("vit", "ViT-B/16")  # pitome_hf.families: the stock google/vit-base-patch16-224 config shape

# Packages that `import pruna` reaches although its token_merging algorithm never uses them (its data modules,
# diffusion, telemetry, LoRA recovery, ...): in Pruna's worker each is a placeholder module (see _import_pruna).
PRUNA_PLACEHOLDERS = ("datasets", "diffusers", "torchvision", "pytorch_lightning", "opentelemetry", "accelerate",
                      "peft", "trl", "jaxtyping")


# ----------------------------------------------------------------------------------------------------------------
# Both workers
# ----------------------------------------------------------------------------------------------------------------
def _repo_timing():
    """pitome_hf.measurement.timing: imported in ours; in Pruna's environment (transformers 4, no pitome_hf) loaded
    from this checkout by its path, its one pitome_hf import (MergeState, used by merge_step_timer only) a
    placeholder."""
    try:
        import transformers

        if int(transformers.__version__.split(".")[0]) >= 5:
            sys.path.insert(0, str(ROOT))
            from pitome_hf.measurement import timing

            return timing
    except ImportError:
        pass
    import importlib.util
    import types

    for name in ("pitome_hf", "pitome_hf.modeling"):
        module = types.ModuleType(name)
        module.__path__ = []
        sys.modules.setdefault(name, module)
    merge_state = types.ModuleType("pitome_hf.modeling.merge_state")
    merge_state.MergeState = None
    sys.modules.setdefault("pitome_hf.modeling.merge_state", merge_state)
    spec = importlib.util.spec_from_file_location("_pitome_timing", ROOT / "pitome_hf" / "measurement" / "timing.py")
    timing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(timing)
    return timing


def _encoder_layers(model):
    from transformers.models.vit.modeling_vit import ViTLayer

    return [m for m in model.modules() if isinstance(m, ViTLayer)]  # stock, ours and Pruna's layers all are


def _forward_with_counts(fn, model, x):
    """(logits, [(tokens entering, tokens leaving) per layer]) of one call, read by forward hooks on the layers."""
    import torch

    counts = []

    def hook(module, args, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        counts.append((int(args[0].shape[1]), int(out.shape[1])))

    handles = [layer.register_forward_hook(hook) for layer in _encoder_layers(model)]
    try:
        with torch.inference_mode():
            logits = fn(x).logits.float()
    finally:
        for handle in handles:
            handle.remove()
    return logits, counts


def _import_pruna():
    """Import pruna with placeholders for PRUNA_PLACEHOLDERS that are not installed.

    `import pruna` imports its data modules (datasets, torchvision, pytorch_lightning), diffusion helpers (diffusers,
    accelerate), telemetry (opentelemetry) and more at module level. None of these is on the path of its
    token_merging algorithm (torch, transformers, ConfigSpace), so instead of installing them a meta-path finder gives
    each missing one a placeholder module whose every attribute is an inert dummy class (constructible, callable,
    never matched by isinstance). Telemetry is switched off (PRUNA_METRICS_ENABLED=false) before the import. An
    installed package of that list is imported as usual."""
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import types

    os.environ["PRUNA_METRICS_ENABLED"] = "false"
    import torch  # noqa: F401  (import the real libraries before the finder exists)
    import transformers  # noqa: F401
    import transformers.models.vit.modeling_vit  # noqa: F401

    class Meta(type):
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Placeholder

    class Placeholder(metaclass=Meta):
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, *args, **kwargs):
            return None

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return lambda *args, **kwargs: None

    class PlaceholderModule(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            value = type(name, (Placeholder,), {"__module__": self.__name__})
            setattr(self, name, value)
            return value

    missing = {name for name in PRUNA_PLACEHOLDERS if importlib.util.find_spec(name) is None}

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in missing:
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = PlaceholderModule(spec.name)
            module.__path__, module.__version__ = [], "0.0.0"
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its registry warns about every algorithm whose packages are missing
    try:
        import pruna
        from pruna.algorithms.token_merging import ToMeViTLayer  # noqa: F401
    finally:
        logging.disable(previous)
    return pruna, sorted(missing)


class Side:
    """One environment's models: `stock()`, `merged(r)`; calling either's result on pixel values returns logits."""

    def __init__(self, name: str, folder: str):
        import transformers

        self.name, self.folder = name, folder
        self.transformers = transformers
        self.placeholders: list[str] = []
        if name == "pruna":
            self.pruna, self.placeholders = _import_pruna()
            import logging

            logging.getLogger("pruna_logger").setLevel(logging.WARNING)
        else:
            sys.path.insert(0, str(ROOT))
            from pitome_hf.modeling import PiToMeViTForImageClassification

            self.pitome_class = PiToMeViTForImageClassification

    def stock(self):
        model = self.transformers.ViTForImageClassification.from_pretrained(self.folder, attn_implementation="sdpa")
        model = model.eval()
        return model, (lambda x, m=model: m(pixel_values=x))

    def merged(self, r: int):
        """(the model whose layers the hooks count, the callable that is timed)."""
        if self.name == "ours":
            model = self.pitome_class.from_pretrained(self.folder, merge_method="tome", merge_r=r,
                                                      attn_implementation="sdpa").eval()
            return model, (lambda x, m=model: m(pixel_values=x))
        from pruna import SmashConfig, smash

        model, _ = self.stock()
        cache = Path(self.folder) / "pruna_cache"  # SmashConfig's cache folder, removed with the run's folder
        config = SmashConfig({"token_merging": {"r": r}}, device="cpu", cache_dir_prefix=cache)
        smashed = smash(model, config)  # swaps the layers' classes in place and wraps the model
        layer = type(_encoder_layers(model)[0])
        if layer.__module__ != "pruna.algorithms.token_merging":
            raise RuntimeError(f"pruna's smash left the ViT layers as {layer.__module__}.{layer.__name__}")
        return model, (lambda x, m=smashed: m(pixel_values=x))

    def pitome_none(self):
        model = self.pitome_class.from_pretrained(self.folder, merge_method="none", attn_implementation="sdpa").eval()
        return model, (lambda x, m=model: m(pixel_values=x))


def worker(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    timing = _repo_timing()
    malloc = timing.pin_allocator()
    side = Side(args.worker, args.folder)
    x = torch.load(Path(args.folder) / "pixel_values.pt")
    out = {"side": args.worker, "torch": torch.__version__, "transformers": side.transformers.__version__,
           "threads": torch.get_num_threads(), "malloc": malloc, "placeholders": side.placeholders}
    if args.worker == "pruna":
        out["pruna"] = side.pruna.__version__
    if args.profile is not None:
        out["profile"] = profile_side(side, x, args.profile)
        Path(args.result).write_text(json.dumps(out))
        return 0

    stock_model, stock = side.stock()
    runs = [("stock", stock_model, stock)]
    if args.worker == "ours" and args.with_none:
        runs.append(("pitome-none", *side.pitome_none()))
    runs += [(f"r={r}", *side.merged(r)) for r in args.rs]
    if args.checks:
        out["checks"] = checks(side, runs, x, args)
    with torch.inference_mode():
        times = timing.time_interleaved([lambda fn=fn: fn(x) for _, _, fn in runs], x.device, args.warmup,
                                        args.repeats)
    out["seconds"] = {name: t for (name, _, _), t in zip(runs, times)}
    Path(args.result).write_text(json.dumps(out))
    return 0


def checks(side: Side, runs, x, args) -> dict:
    """Token counts of each merged run, r = 0 against the stock model, and the logits to compare across sides."""
    import torch

    stock_logits, _ = _forward_with_counts(runs[0][2], runs[0][1], x)
    zero_model, zero = side.merged(0)
    zero_logits, zero_counts = _forward_with_counts(zero, zero_model, x)
    del zero_model, zero
    out = {"r0_max_abs_diff": float((zero_logits - stock_logits).abs().max()),
           "r0_counts": zero_counts, "counts": {}}
    logits = {"stock": stock_logits}
    for name, model, fn in runs[1:]:
        if not name.startswith("r="):
            continue
        logits[name], out["counts"][name] = _forward_with_counts(fn, model, x)
    torch.save(logits, Path(args.folder) / f"logits_{side.name}.pt")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Profile: one forward of each side's merged model
# ----------------------------------------------------------------------------------------------------------------
def profile_side(side: Side, x, r: int) -> dict:
    """One profiled forward at r (after two warm-up calls): time by part, SDPA by token count, the top operators,
    and what the attention kernel is given (layout and mask) in each layer."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile, record_function

    model, fn = side.merged(r)
    restore = []

    def mark(owner, attr, label):
        original = getattr(owner, attr)

        def wrapped(*a, **k):
            with record_function(label):
                return original(*a, **k)

        setattr(owner, attr, wrapped)
        restore.append((owner, attr, original))

    if side.name == "ours":
        from pitome_hf.modeling.merge_state import MergeState

        mark(MergeState, "step", "merge::step")
        mark(MergeState, "attention_mask", "merge::attention_bias")
    else:
        import pruna.algorithms.token_merging as tm

        mark(tm, "_bipartite_soft_matching", "merge::step")  # matching, then the weighted merge: the step
        mark(tm, "_merge_wavg", "merge::step")

    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, *a, **kw):
        seen.append({"q": list(q.shape), "q_contiguous": q.is_contiguous(), "q_stride": list(q.stride()),
                     "k_contiguous": k.is_contiguous(), "v_contiguous": v.is_contiguous(),
                     "mask": None if attn_mask is None else {"shape": list(attn_mask.shape),
                                                             "dtype": str(attn_mask.dtype).removeprefix("torch."),
                                                             "stride": list(attn_mask.stride()),
                                                             "contiguous": attn_mask.is_contiguous()},
                     "kwargs": sorted(kw)})
        return sdpa(q, k, v, attn_mask, *a, **kw)

    layer_inputs = []
    hooks = [layer.register_forward_pre_hook(
        lambda m, a: layer_inputs.append({"shape": list(a[0].shape), "contiguous": a[0].is_contiguous()}))
        for layer in _encoder_layers(model)]
    try:
        with torch.inference_mode():
            fn(x)
            F.scaled_dot_product_attention = spy
            fn(x)
            F.scaled_dot_product_attention = sdpa
            for hook in hooks:
                hook.remove()
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                begin = time.perf_counter()
                fn(x)
                wall = time.perf_counter() - begin
    finally:
        F.scaled_dot_product_attention = sdpa
        for owner, attr, original in restore:
            setattr(owner, attr, original)
    parts = {"linear": 0.0, "attention (sdpa)": 0.0, "merge step": 0.0, "attention bias": 0.0}
    names = {"aten::linear": "linear", "aten::addmm": "linear", "merge::step": "merge step",
             "aten::scaled_dot_product_attention": "attention (sdpa)", "merge::attention_bias": "attention bias"}
    by_tokens: dict[int, float] = {}
    step_ops: dict[str, int] = {}  # operators called directly by the merge step, by name
    for event in prof.events():
        parent = event.cpu_parent
        if parent is not None and parent.name == "merge::step" and event.name.startswith("aten::"):
            step_ops[event.name] = step_ops.get(event.name, 0) + 1
        if parent is not None and (parent.name.startswith("aten::") or parent.name.startswith("merge::")):
            continue  # top-level calls only
        part = names.get(event.name)
        if part is not None:
            parts[part] += event.cpu_time_total / 1e3
        if event.name == "aten::scaled_dot_product_attention" and event.input_shapes:
            n = event.input_shapes[0][2]
            by_tokens[n] = by_tokens.get(n, 0.0) + event.cpu_time_total / 1e3
    parts["total (wall)"] = 1e3 * wall
    parts["other"] = parts["total (wall)"] - sum(v for k, v in parts.items() if k != "total (wall)")
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:18]
    return {"r": r, "parts_ms": parts, "merge_step_ops": dict(sorted(step_ops.items(), key=lambda kv: -kv[1])),
            "sdpa_ms_by_tokens": {str(k): v for k, v in sorted(by_tokens.items(), reverse=True)},
            "top_self_ms": [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3} for e in top],
            "sdpa_inputs": seen, "layer_inputs": layer_inputs}


# ----------------------------------------------------------------------------------------------------------------
# Orchestrator (ours' environment)
# ----------------------------------------------------------------------------------------------------------------
def ideal_speedup(stock_config, counts) -> tuple[float, list[int]]:
    """FLOPs-ideal speed-up of a run whose layers were seen to turn counts[l][0] tokens into counts[l][1]: the stock
    FLOPs over those of a PiToMe ViT config merging exactly that per-layer r (one formula for both sides)."""
    from pitome_hf.apply import pitome_config

    try:
        from pitome_hf.flops import vit_flops  # its home from issue #32 on
    except ImportError:
        from pitome_hf.measurement.flops import vit_flops
    from pitome_hf.modeling import PiToMeViTConfig
    from pitome_hf.modeling.merge_config import token_schedule

    per_layer = [n_in - n_out for n_in, n_out in counts]
    merged = pitome_config(stock_config, PiToMeViTConfig, merge_method="tome", merge_r=per_layer)
    prefix = 1
    schedule = token_schedule(merged)
    seen = [counts[0][0] - prefix] + [n_out - prefix for _, n_out in counts]
    if schedule != seen:
        raise RuntimeError(f"token schedule {schedule} is not the one seen {seen}")
    return vit_flops(stock_config) / vit_flops(merged), per_layer


def run_worker(python: str, side: str, folder: str, result: str, args, extra=()) -> dict:
    command = [python, str(Path(__file__).resolve()), "--worker", side, "--folder", folder, "--result", result,
               "--threads", str(args.threads), "--warmup", str(args.warmup), "--repeats", str(args.repeats),
               "--rs", *map(str, args.rs), *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PRUNA_METRICS_ENABLED="false")
    env.pop("PYTHONPATH", None)
    begin = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=str(ROOT), capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
        raise SystemExit(f"the {side} worker failed (exit {done.returncode}): {' '.join(command)}")
    out = json.loads(Path(result).read_text())
    out["wall_s"] = time.perf_counter() - begin
    return out


def print_profile(results: dict, args) -> None:
    print(f"\nprofile: one forward at r={results['ours']['profile']['r']} after two warm-up calls, "
          f"{args.threads} threads (torch.profiler, its overhead included; ms)")
    sides = list(results)
    parts = list(results[sides[0]]["profile"]["parts_ms"])
    print("| part | " + " | ".join(sides) + " |\n|---|" + "---|" * len(sides))
    for part in parts:
        print(f"| {part} | " + " | ".join(f"{results[s]['profile']['parts_ms'][part]:.1f}" for s in sides) + " |")
    print("| operators called by the merge step (count) | " + " | ".join(
        str(sum(results[s]["profile"]["merge_step_ops"].values())) for s in sides) + " |")
    tokens = sorted({int(n) for s in sides for n in results[s]["profile"]["sdpa_ms_by_tokens"]}, reverse=True)
    print("\nSDPA ms by the token count N it runs at (summed over the layers at that N)")
    print("| N | " + " | ".join(sides) + " |\n|---|" + "---|" * len(sides))
    for n in tokens:
        print(f"| {n} | " + " | ".join(f"{results[s]['profile']['sdpa_ms_by_tokens'].get(str(n), 0.0):.2f}"
                                       for s in sides) + " |")
    for s in sides:
        p = results[s]["profile"]
        print(f"\n{s}: top operators by self time")
        print("| operator | calls | self ms |\n|---|---|---|")
        for row in p["top_self_ms"]:
            print(f"| {row['op']} | {row['calls']} | {row['self_ms']:.2f} |")
        print(f"{s}: operators the merge step calls directly, per forward: " + ", ".join(
            f"{name.removeprefix('aten::')} {count}" for name, count in p["merge_step_ops"].items()))
        print(f"{s}: what SDPA was given, per layer (q shape, q/k/v contiguous, mask shape dtype stride)")
        for layer, (call, entering) in enumerate(zip(p["sdpa_inputs"], p["layer_inputs"])):
            mask = call["mask"]
            text = "none" if mask is None else (f"{tuple(mask['shape'])} {mask['dtype']} stride {tuple(mask['stride'])}"
                                                f"{'' if mask['contiguous'] else ' (non-contiguous)'}")
            print(f"  layer {layer}: layer input {tuple(entering['shape'])} contiguous={entering['contiguous']}; "
                  f"q {tuple(call['q'])} stride {tuple(call['q_stride'])} contiguous q/k/v="
                  f"{call['q_contiguous']}/{call['k_contiguous']}/{call['v_contiguous']}; mask {text}")


def orchestrate(args) -> int:
    with tempfile.TemporaryDirectory(prefix="tome_vs_pruna_") as folder:  # checkpoint, inputs, results
        return _orchestrate(args, folder)


def _orchestrate(args, folder: str) -> int:
    import torch
    from transformers import ViTConfig

    sys.path.insert(0, str(ROOT))
    from pitome_hf.measurement.shapes import stock_for_shape

    python = str(args.pruna_python)
    if not Path(python).exists():
        raise SystemExit(f"{python} does not exist: build Pruna's environment first (bash scripts/setup_pruna_env.sh)"
                         " or pass --pruna-python")
    stock = stock_for_shape(*SHAPE).eval()
    stock.save_pretrained(folder)
    stock_config = ViTConfig.from_pretrained(folder)
    del stock
    generator = torch.Generator().manual_seed(1)
    torch.save(torch.randn(args.batch_size, 3, 224, 224, generator=generator), Path(folder) / "pixel_values.pt")
    print(f"{SHAPE[1]} shape (stock google/vit-base-patch16-224 config, random weights, seed 0), batch "
          f"{args.batch_size}, 224 px, float32, CPU, {args.threads} threads, r = {', '.join(map(str, args.rs))} in "
          f"every layer; {args.passes} passes per side, alternating, each: warm-up {args.warmup}, {args.repeats} "
          "interleaved rounds (median)", flush=True)

    if args.profile is not None:
        results = {}
        for side, py in (("ours", sys.executable), ("pruna", python)):
            results[side] = run_worker(py, side, folder, str(Path(folder) / f"profile_{side}.json"), args,
                                       ["--profile", str(args.profile)])
        print_profile(results, args)
        return 0

    passes: list[dict] = []
    ideal: dict[tuple[str, str], float] = {}
    for k in range(args.passes):
        for side, py in (("ours", sys.executable), ("pruna", python)):
            extra = (["--checks"] if k == 0 else []) + (["--with-none"] if side == "ours" and args.with_none else [])
            load = os.getloadavg()[0]  # a load above the thread count means the cores are shared meanwhile
            out = run_worker(py, side, folder, str(Path(folder) / f"result_{side}_{k}.json"), args, extra)
            if k == 0:
                c = out["checks"]
                versions = f"torch {out['torch']}, transformers {out['transformers']}" + (
                    f", pruna {out['pruna']}" if side == "pruna" else "")
                print(f"\n{side} ({versions}; {out['threads']} threads; {out['malloc'] or 'system malloc'}"
                      + (f"; placeholder modules: {', '.join(out['placeholders'])}" if out.get("placeholders") else "")
                      + f"): r=0 vs its stock model, largest logit difference {c['r0_max_abs_diff']:.2e}")
                if c["r0_max_abs_diff"] > 1e-4 or any(a != b for a, b in c["r0_counts"]):
                    raise SystemExit(f"{side} at r=0 does not reproduce its stock model")
                for name, counts in c["counts"].items():
                    ideal[(side, name)], per_layer = ideal_speedup(stock_config, counts)
                    print(f"  {name}: tokens entering each layer {[n for n, _ in counts]} -> {counts[-1][1]} "
                          f"(r per layer {per_layer}); FLOPs-ideal speed-up {ideal[(side, name)]:.3f}")
            passes.append(out)
            row = ", ".join(
                f"{name} speed-up {out['seconds']['stock'] / s:.3f} / ideal {ideal[(side, name)]:.3f} = "
                f"{out['seconds']['stock'] / s / ideal[(side, name)]:.3f}"
                for name, s in out["seconds"].items() if name.startswith("r="))
            none = (f"; pitome-none time / stock {out['seconds']['pitome-none'] / out['seconds']['stock']:.3f}"
                    if "pitome-none" in out["seconds"] else "")
            print(f"pass {k + 1} {side:>5}: stock {1e3 * out['seconds']['stock']:.0f} ms; {row}{none} "
                  f"({out['wall_s']:.0f} s; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after)",
                  flush=True)

    logits = {s: torch.load(Path(folder) / f"logits_{s}.pt") for s in ("ours", "pruna")}
    print(f"\nstock models of the two environments: largest logit difference "
          f"{float((logits['ours']['stock'] - logits['pruna']['stock']).abs().max()):.2e}")
    for r in args.rs:
        a, b = logits["ours"][f"r={r}"], logits["pruna"][f"r={r}"]
        print(f"r={r}: ours vs Pruna's merged logits: largest difference {float((a - b).abs().max()):.2e}, "
              f"top-1 agree on {float((a.argmax(-1) == b.argmax(-1)).double().mean()):.0%} of the batch")

    print(f"\nsummary: median over {args.passes} passes per side (range in brackets)")
    print("| side | r | FLOPs-ideal | measured speed-up | measured/ideal |\n|---|---|---|---|---|")
    for side in ("ours", "pruna"):
        for r in args.rs:
            name = f"r={r}"
            speed = [p["seconds"]["stock"] / p["seconds"][name] for p in passes if p["side"] == side]
            ratio = [s / ideal[(side, name)] for s in speed]
            print(f"| {side} | {r} | {ideal[(side, name)]:.3f} | {statistics.median(speed):.3f} "
                  f"[{min(speed):.3f}-{max(speed):.3f}] | {statistics.median(ratio):.3f} "
                  f"[{min(ratio):.3f}-{max(ratio):.3f}] |")
    if args.warmup < 1 or args.repeats < 3:
        print("CAUTION: fewer than 1 warm-up call or 3 repeats: these figures are not measurements.")
    print("The machine may be shared: absolute times move between runs; read the ratios, on a quiet machine.")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=3, help="passes per side, alternating (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each run per pass (default: "
                        "%(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds per pass, median "
                        "(default: %(default)s)")
    parser.add_argument("--rs", type=int, nargs="+", default=[8, 16], help="r per layer (default: 8 16)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pruna-python", default=str(DEFAULT_PRUNA_PYTHON),
                        help="the interpreter of Pruna's environment (default: .venv-pruna/bin/python)")
    parser.add_argument("--with-none", action="store_true", help="also time ours with merge_method='none' (the "
                        "PiToMe model's unmerged path) against the stock model")
    parser.add_argument("--profile", type=int, default=None, metavar="R",
                        help="instead of timing: profile one forward of each side at this r")
    parser.add_argument("--worker", choices=["ours", "pruna"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--checks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--import-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.import_only:  # the setup script's smoke test of Pruna's environment
        pruna, placeholders = _import_pruna()
        from pruna.algorithms.token_merging import TokenMerging

        print(f"pruna {pruna.__version__}: {TokenMerging.algorithm_name} importable; placeholder modules: "
              f"{', '.join(placeholders) or 'none'}")
        return 0
    if args.worker:
        return worker(args)
    if args.passes < 1 or args.batch_size < 1 or args.threads < 1 or any(r < 0 for r in args.rs):
        parser.error("--passes, --batch-size and --threads must be >= 1, --rs >= 0")
    return orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())

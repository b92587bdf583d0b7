"""The sweep of `pitome-hf evaluate` (the command line is pitome_hf.commands.evaluate): a model under none / ToMe /
PiToMe merging at several keep ratios (and visual-token budgets), each row measured for its metric, GFLOPs,
images/s and memory. `evaluate_model` checks every value, the model and the data before anything is written, then
runs the rows, journaling each one as it is measured.

The concerns it draws on live beside it: `data` (DataSpec, load_data), `fingerprints` (what the rows depend on),
`journal` (rows.jsonl and its lock), `report` (the report dict, its check, results.json/.csv/.md/.png) and `tasks`
(one runner per task). Their names stay importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from pitome_hf.evaluation.data import DATA_FILE_KINDS, DataSpec, load_data
from pitome_hf.evaluation.fingerprints import (
    MODEL_FILE_SUFFIXES, code_fingerprint, dataset_fingerprint, files_digest, model_fingerprint, model_folder,
)
from pitome_hf.evaluation.journal import RESULT_FILES, ROW_FIELDS, RowJournal, check_output_folder
from pitome_hf.evaluation.report import (
    REPORT_KEYS, RESULT_KEYS, SCHEMA, RunResult, build_report, markdown_table, plot, primary_metric, validate_report,
    write_report,
)
from pitome_hf.evaluation.tasks import TASK_CLASSES, TASKS, timed_run
from pitome_hf.measurement.timing import Progress, compiled_runs, peak_memory_mb, sweep
# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf.modeling.merge_config import MergeSettings
from pitome_hf.modeling.merging import METHODS
from pitome_hf.options import check_sweep
from pitome_hf.paths import ASSETS, DEFAULT_DATASET, DEFAULT_MODEL

DEFAULT_KEEP_RATIOS = (0.95, 0.9, 0.85, 0.8, 0.75)
DEFAULT_METHODS = ("none", "tome", "pitome")

__all__ = [  # this module's own names, and those of the concerns it was split into (importable from here as before)
    "ASSETS", "DATA_FILE_KINDS", "DEFAULT_DATASET", "DEFAULT_KEEP_RATIOS", "DEFAULT_METHODS", "DEFAULT_MODEL",
    "MODEL_FILE_SUFFIXES", "REPORT_KEYS", "RESULT_FILES", "RESULT_KEYS", "ROW_FIELDS", "SCHEMA", "TASKS",
    "TASK_CLASSES", "DataSpec", "RowJournal", "RunResult", "Sweep", "check_arguments", "check_device", "check_device_map",
    "check_model", "checkpoint_dtype",
    "check_out_dir", "check_output_folder", "check_task_inputs", "check_visual_budgets", "code_fingerprint",
    "dataset_fingerprint", "evaluate_model", "files_digest", "gather_first", "load_data", "markdown_table",
    "model_fingerprint", "model_folder", "plot", "primary_metric", "run_configs", "validate_report", "write_report",
]


# ----------------------------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------------------------
def run_configs(methods, keep_ratios, presets=(), extra: dict | None = None, visual_tokens=(),
                visual_selections=("merge",)) -> list[tuple[dict, Optional[float]]]:
    """(merge settings, keep ratio) for every row (see `measure.sweep`; `extra`: merge settings of every merged row),
    after checking the names and ratios: known, in range, each given once, and at least one row. Vision-language
    sweeps: each `visual_tokens` budget K adds the rows of every method (keep ratio None, settings visual_tokens=K),
    and each selection of `visual_selections` other than "merge" adds one row per budget and keep ratio."""
    from pitome_hf.modeling.merge_config import MERGE_PRESETS
    from pitome_hf.options import check_visual_sweep

    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods {bad} are not supported; choose from {', '.join(METHODS)}.")
    badp = [p for p in presets if p not in MERGE_PRESETS]
    if badp:
        raise ValueError(f"presets {badp} are not known; choose from {', '.join(MERGE_PRESETS)}.")
    check_sweep(keep_ratios, methods, presets)
    check_visual_sweep(visual_tokens, visual_selections)
    merged = [m for m in methods if m != "none"] if "merge" in visual_selections else []
    configs = sweep([m for m in methods if m == "none" or m in merged], keep_ratios, presets, extra)
    # another selection (VisionZip-style) reduces whenever merging is on: merge_method only needs to be other than none
    others = [dict(extra or {}, merge_method="pitome", visual_selection=s) for s in visual_selections if s != "merge"]
    configs += [(settings, float(r)) for r in keep_ratios for settings in others]
    for k in visual_tokens:
        configs += [(dict(extra or {}, merge_method=m, visual_tokens=int(k)), None) for m in merged]
        configs += [(dict(settings, visual_tokens=int(k)), None) for settings in others]
    if not configs:
        raise ValueError(f"nothing to run: methods {list(methods)}, presets {list(presets)} and keep ratios "
                         f"{list(keep_ratios)} give no row.")
    return configs


def check_device(device: Optional[str]) -> Optional[torch.device]:
    """The device `--device` names, refused (ValueError naming it) when it is not one this machine has."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"--device {device}: CUDA is not available on this machine ({why}); use --device cpu, "
                             "or leave --device out to use a GPU when there is one.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {device}: MPS is not available on this machine; use --device cpu.")
    elif dev.type != "cpu":
        raise ValueError(f"--device {device!r} is not supported: use cpu, cuda, cuda:N or mps.")
    return dev


def check_arguments(task: str, batch_size: int, limit: Optional[int], max_new_tokens: int, dtype: str,
                    labels_by_id: bool = False):
    """(task class, torch dtype) after checking the plain values, each refusal naming the value."""
    if task not in TASK_CLASSES:
        raise ValueError(f"task={task!r} is not supported; supported tasks: {', '.join(TASK_CLASSES)}.")
    if labels_by_id and task != "image-classification":
        raise ValueError(f"--labels-by-id applies to image-classification only, not to the task {task}.")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1.")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be >= 1 (or None for the whole split).")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1.")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None and dtype != "auto":
        raise ValueError(f"dtype={dtype!r} is not supported; choose auto (the checkpoint's), float32, bfloat16 or "
                         "float16.")
    return TASK_CLASSES[task], torch_dtype


def checkpoint_dtype(model: str) -> str:
    """The dtype a checkpoint's config.json records (`dtype`, else `torch_dtype`; a composite config's own, else its
    text or vision config's) when it is float32, bfloat16 or float16; else float32."""
    import json

    config = json.loads((model_folder(model) / "config.json").read_text())
    for part in (config, config.get("text_config") or {}, config.get("vision_config") or {}):
        value = part.get("dtype") or part.get("torch_dtype")
        if value in ("float32", "bfloat16", "float16"):
            return value
    return "float32"


def check_device_map(device_map: Optional[str], device: Optional[str], processes: int) -> None:
    """Refuse a device map accelerate does not name, one given with --device, or one under several processes."""
    from pitome_hf.options import DEVICE_MAPS

    if device_map is None:
        return
    if device_map not in DEVICE_MAPS:
        raise ValueError(f"--device-map {device_map!r} is not one of {', '.join(DEVICE_MAPS)}.")
    if device is not None:
        raise ValueError(f"--device {device} and --device-map {device_map}: give one (--device-map places the model "
                         "on every visible GPU; CUDA_VISIBLE_DEVICES chooses them).")
    if processes > 1:
        raise ValueError(f"--device-map {device_map} spreads one model over the GPUs, so it runs in one process: run "
                         f"without accelerate launch (this run has {processes} processes).")


def check_task_inputs(task_class, data: "DataSpec", prompt: Optional[str]) -> None:
    """Refuse a column or prompt that this task would silently ignore."""
    from pitome_hf.evaluation.tasks import DEFAULT_PROMPTS

    given = {"image": data.image_column, "label": data.label_column, "text": data.text_column}
    for role, column in given.items():
        if column is not None and role not in task_class.columns:
            readers = [t.name for t in TASK_CLASSES.values() if role in t.columns]
            raise ValueError(f"--{role}-column {column} does not apply to the task {task_class.name} (it reads "
                             f"{', '.join(task_class.columns)}); only {', '.join(readers)} read a {role} column.")
    if prompt is not None and task_class.name not in DEFAULT_PROMPTS:
        raise ValueError(f"--prompt does not apply to the task {task_class.name}; only {', '.join(DEFAULT_PROMPTS)} "
                         "take a prompt.")


def check_out_dir(out_dir: Path, model_path: str, data: "DataSpec") -> None:
    """Refuse an --output that is, or sits inside, the model's or the dataset's local folder: the reports would change
    the files the rows are keyed by (and an image folder would read the plot as data)."""
    target = Path(out_dir).expanduser().resolve()
    for what, place in (("model", model_path), ("dataset", data.path)):
        if place is None or not Path(place).expanduser().is_dir():
            continue
        folder = Path(place).expanduser().resolve()
        if target == folder or folder in target.parents:
            raise ValueError(f"--output {out_dir} is inside the {what} folder {place}: write the results elsewhere (they "
                             f"would become part of the {what}). Nothing was run.")


def check_model(model: Optional[str], task: str) -> str:
    """The model path or Hub id, after checking that it exists (a path) and that its type serves `task` (before any
    data is read, so a wrong model is named as such, not as a dataset lacking columns)."""
    from pitome_hf.checkpoints import HUB_ID, resolve_base
    from pitome_hf.evaluation.tasks import check_model_type

    if model is None:
        return str(DEFAULT_MODEL)
    path, local = resolve_base(str(model))
    if not local and not HUB_ID.match(path):
        raise ValueError(f"--model {model}: no such folder, and not a Hub id (org/name){_family_hint(path)}. Give a "
                         "checkpoint folder or a Hub model id such as Qwen/Qwen2.5-VL-3B-Instruct.")
    check_model_type(path, task)
    return path


def _family_hint(name: str) -> str:
    """What a bare name that is a family of the registry is (e.g. qwen2_5_vl): words for the refusal of --model."""
    from pitome_hf.families import FAMILIES

    family = next((f for f in FAMILIES if name in (f.name, *f.model_types)), None)
    if family is None:
        return ""
    takes = f"; pitome-hf benchmark {family.name} takes it" if family.benchmark is not None else ""
    return f" ({name} is a model family of this package, not a checkpoint{takes})"


def check_visual_budgets(model_path: str, visual_tokens, visual_selections) -> None:
    """Refuse --visual-tokens / --visual-selections for a model whose family does not read those fields (before any
    data or weights are read): the families that reduce visual tokens at the language model's input read them."""
    from pitome_hf.evaluation.tasks import model_type_of
    from pitome_hf.families import FAMILIES, family_of

    def reads(f) -> bool:
        return any("visual_tokens" in c.family_merge_fields for c in f.config_classes)

    flags = [flag for flag, given in (("--visual-tokens", list(visual_tokens)),
                                      ("--visual-selections", [s for s in visual_selections if s != "merge"])) if given]
    if not flags:
        return
    model_type, _ = model_type_of(model_path)
    try:
        family = family_of(str(model_type))
    except ValueError:
        return  # the task's model check names an unknown type
    if not reads(family):
        raise ValueError(f"{flags[0]} applies to the families that reduce visual tokens at the language model's input "
                         f"({', '.join(f.name for f in FAMILIES if reads(f))}); {model_path} is a {model_type!r} "
                         f"model, whose family does not read it: drop {flags[0]}. Nothing was run.")


@dataclass
class Sweep:
    """What one evaluation runs: the task runner, this process's batches, the rows (key, net, ratio)."""

    runner: object
    batches: object
    rows: list
    device: torch.device
    compile: bool
    show: bool


def _rows(runner, configs) -> list[tuple[str, object, float]]:
    """(key, PiToMe model sharing the runner's weights, keep ratio) per row; two rows with one key are refused."""
    from pitome_hf.apply import apply_pitome

    rows, seen = [], {}
    for settings, ratio in configs:
        net = apply_pitome(runner.base, **({} if ratio is None else {"keep_ratio": ratio}), **settings)
        label = MergeSettings.from_config(net.config).label()  # a VisionZip-style row is labelled "visionzip"
        key = f"{label}@{ratio}" if ratio is not None else f"{label}@{settings['visual_tokens']} visual tokens"
        if key in seen:
            raise ValueError(f"{seen[key]} and {settings} at keep ratio {ratio} are the same configuration ({key}): "
                             "drop one of them.")
        seen[key] = settings
        rows.append((key, net, ratio))
    return rows


def _measure(sweep_: Sweep, key: str, net, ratio: float, num_configs: int) -> RunResult:
    from accelerate.utils import gather_object

    dev, runner = sweep_.device, sweep_.runner
    if sweep_.compile:
        net = torch.compile(net)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with compiled_runs(num_configs):
        outputs, seconds = timed_run(sweep_.batches, runner.forward(net), dev, sweep_.show, key.replace("@", " "))
    gathered = gather_object([(outputs, seconds, len(outputs), peak_memory_mb(dev))])
    merged = {}
    for part, _, _, _ in gathered:
        merged.update(part)
    slowest = max(g[1] for g in gathered)
    return RunResult(
        method=key.rsplit("@", 1)[0], keep_ratio=ratio, metrics=runner.score(merged), gflops=runner.gflops(net),
        images_per_s=sum(g[2] for g in gathered) / slowest if slowest > 0 else float("nan"),
        peak_memory_mb=max(g[3] for g in gathered), num_samples=len(merged), token_counts=runner.token_counts(net),
        device=str(dev), visual_tokens=getattr(net.config, "visual_tokens", None),
    )


def _run(sweep_: Sweep, journal: Optional["RowJournal"], state) -> list[RunResult]:
    """Measure every row, or reuse it from the journal; each new row is journaled as soon as it exists."""
    from accelerate.utils import gather_object

    done = journal.rows if journal is not None else {}
    done = gather_object([done])[0] if state.num_processes > 1 else done  # every process skips the same rows
    lines = Progress(len(sweep_.rows), "evaluate ", enabled=sweep_.show)
    results = []
    for key, net, ratio in sweep_.rows:
        label = key.replace("@", " ")
        if key in done:
            results.append(RunResult(**done[key]))
            lines.step(f"{label}: reused from {journal.path if journal else 'the journal'}")
            continue
        results.append(_measure(sweep_, key, net, ratio, len(sweep_.rows)))
        if journal is not None:
            journal.add(key, results[-1].__dict__)
        row = results[-1]
        metrics = ", ".join(f"{k} {100 * v:.2f}" for k, v in row.metrics.items())
        lines.step(f"{label}: {metrics}, {row.gflops:.4g} GFLOPs, {row.images_per_s:.1f}/s")
    return results


def evaluate_model(
    model: Optional[str] = None,
    data: Optional[DataSpec] = None,
    task: str = "image-classification",
    methods=DEFAULT_METHODS,
    keep_ratios=DEFAULT_KEEP_RATIOS,
    presets=(),
    device: Optional[str] = None,
    dtype: str = "auto",
    batch_size: int = 64,
    limit: Optional[int] = None,
    progress: bool = True,
    prompt: Optional[str] = None,
    max_new_tokens: int = 10,
    out_dir: Optional[Path] = None,
    resume: bool = True,
    compile: bool = False,
    labels_by_id: bool = False,
    merge_settings: Optional[dict] = None,
    visual_tokens=(),
    visual_selections=("merge",),
    device_map: Optional[str] = None,
) -> dict:
    """Evaluate `model` on `data` for every (method or preset, keep ratio); returns the report dict (see
    write_report). Each result's `method` names the configuration that ran (`MergeSettings.label()`: the method, the
    preset's name, or the per-layer methods and the settings that differ from the paper's).

    `task`: one of TASKS (see pitome_hf.evaluation.tasks). `prompt`: the zero-shot class template ("a photo of a
    {}.") or the VQA prompt (with `<image>` and `{}` for the question). `device`: cpu, cuda, cuda:N or mps; one this
    machine lacks is refused (default: a GPU when there is one). `labels_by_id`: image classification only, read
    dataset label k as the model's label k even when the dataset's class names are not the model's (by default classes
    are matched by name, and names the model lacks are refused). Under `accelerate launch` each process takes a
    contiguous shard; per-sample outputs and timings are gathered with accelerate, and every process returns the same
    report.

    `dtype`: float32, bfloat16, float16, or auto (default): the checkpoint's own (`checkpoint_dtype`); the report
    and the journal record the dtype it resolved to. `device_map` ("auto", "balanced", ...): the model is loaded
    through accelerate over every visible GPU (instead of `device`; one process), the inputs go to the device of its
    first layers, and the rows share its weights where they lie.

    `out_dir`: checked for writing (without writing) before anything is read, then made and locked against a second
    evaluate once every refusal is past (the data, the model, every row's settings), before the first row runs: a
    refused or failed run leaves it as it was. Each row is appended to
    `out_dir/rows.jsonl` as soon as it is measured, so an interrupted sweep keeps what it did, and a re-run of the same
    model files, data and settings (`resume`) reuses those rows and measures only the rest. `compile`: run each
    configuration through torch.compile (the first batches include the compilation: use enough samples for the
    timing to mean something)."""
    from accelerate import PartialState

    task_class, torch_dtype = check_arguments(task, batch_size, limit, max_new_tokens, dtype, labels_by_id)
    asked = check_device(device)
    state = PartialState(cpu=(asked is not None and asked.type == "cpu") or not torch.cuda.is_available())
    check_device_map(device_map, device, state.num_processes)
    dev = asked if asked is not None and not (asked.type == "cuda" and asked.index is None) else state.device
    configs = run_configs(methods, keep_ratios, presets, merge_settings, visual_tokens, visual_selections)
    model_path = check_model(model, task)
    if dtype == "auto":
        dtype = checkpoint_dtype(model_path)
        torch_dtype = getattr(torch, dtype)
    check_visual_budgets(model_path, visual_tokens, visual_selections)
    data = data or DataSpec()
    check_task_inputs(task_class, data, prompt)
    if out_dir is not None:
        check_out_dir(out_dir, model_path, data)
        check_output_folder(Path(out_dir))
    # Every refusal comes before anything is written: --output is made and locked (the journal) only once the data,
    # the model and every row's settings have been read and checked; a run that then stops before measuring a row
    # leaves the folder as it was (`RowJournal.close`).
    journal = None
    try:
        columns = data.columns(task_class.columns)
        ds = load_data(data, columns)
        n = len(ds) if limit is None else min(limit, len(ds))
        runner = task_class(model_path, ds, columns, dev, torch_dtype, batch_size, n, prompt=prompt,
                            max_new_tokens=max_new_tokens, labels_by_id=labels_by_id,
                            **({"device_map": device_map} if device_map else {}))
        dev = runner.device  # with a device map: where its first layers are
        rows = _rows(runner, configs)
        runner.check_rows([net for _, net, _ in rows])
        settings = dict(task=task, split=data.split, limit=limit, dtype=dtype, batch_size=batch_size, device=str(dev),
                        processes=state.num_processes, prompt=runner.prompt, max_new_tokens=max_new_tokens,
                        compile=compile, labels_by_id=labels_by_id, columns=columns,
                        merge_settings=merge_settings or {}, visual_tokens=list(visual_tokens),
                        visual_selections=list(visual_selections))
        keep = out_dir is not None and state.is_main_process
        fingerprints = _fingerprints(model_path, data, ds) if keep else {}
        fingerprints = gather_first(fingerprints, state)
        journal = RowJournal(Path(out_dir)) if keep else None
        if journal is not None:
            journal.start({"model": model_path, "dataset": str(data.path or DEFAULT_DATASET), **fingerprints,
                           **settings}, resume)
        with state.split_between_processes(list(range(n))) as shard:
            batches = runner.batches(shard)
        show = progress and state.is_local_main_process
        results = _run(Sweep(runner, batches, rows, dev, compile, show), journal, state)
    finally:
        if journal is not None:
            journal.close()
    run = dict(task=task, model=model_path, data=data, columns=columns, n=n, dev=dev, dtype=dtype,
               batch_size=batch_size, compile=compile, labels_by_id=labels_by_id)
    return build_report(run, state, fingerprints, results)


def gather_first(value, state):
    """The main process's `value` on every process (the value itself when there is one process)."""
    from accelerate.utils import gather_object

    return gather_object([value])[0] if state.num_processes > 1 else value


def _fingerprints(model_path: str, data: DataSpec, ds) -> dict:
    """The journal header's hashes (see `fingerprints`); looked up here, so a test can stand in for one of them."""
    return {"model_fingerprint": model_fingerprint(model_path),
            "weights_fingerprint": model_fingerprint(model_path, weights_only=True),
            "dataset_fingerprint": dataset_fingerprint(data, ds), "code_fingerprint": code_fingerprint()}


# Deprecated names: the command line moved to pitome_hf.commands.evaluate, a command like the others. They are looked
# up only when old code asks for them (this module's __getattr__, with a DeprecationWarning): the sweep imports no
# command (tests/test_layering.py lists these aliases).
_MOVED = ("main", "build_parser")


def __getattr__(name: str):
    if name in _MOVED:
        import warnings

        warnings.warn(f"pitome_hf.evaluation.evaluate.{name} moved to pitome_hf.commands.evaluate.{name}; import it "
                      "from there", DeprecationWarning, stacklevel=2)
        from pitome_hf.commands import evaluate as command

        return getattr(command, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

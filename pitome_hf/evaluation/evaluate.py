"""Evaluate a model under none / ToMe / PiToMe merging at several keep ratios: metric, GFLOPs, images/s, memory.

    pitome-hf evaluate                                  # the embedded default (Fashion-MNIST ViT), all methods
    pitome-hf evaluate --presets authors-deit --keep-ratios 0.9   # add the authors' DeiT configuration
    pitome-hf evaluate --model DIR_OR_ID --dataset DIR_OR_ID --split validation --keep-ratios 0.95 0.9 0.85
    pitome-hf evaluate --task zero-shot-image-classification --model openai/clip-vit-base-patch16 --dataset ...
    pitome-hf evaluate --task image-text-retrieval --model CLIP --dataset ... --text-column caption
    pitome-hf evaluate --task vqa --model llava-hf/llava-1.5-7b-hf --dataset ... --label-column answers
    pitome-hf evaluate --task vqa --model Qwen/Qwen2.5-VL-3B-Instruct --dataset ... --visual-tokens 64 128 192 \
        --methods none pitome tome --visual-selections merge visionzip      # equal visual-token counts per row
    accelerate launch --num_processes 2 -m pitome_hf.cli evaluate ...   # data split across processes

Tasks (pitome_hf.evaluation.tasks): image-classification (ViT/DeiT), zero-shot-image-classification and
image-text-retrieval (CLIP), vqa (the vision-language families: LLaVA-1.5, Qwen2.5-VL, ...). Vision-language
models reducing at the language model's input also sweep `--visual-tokens` (visual tokens per image; rows next to the
keep-ratio rows, which are left out when only budgets are given) and `--visual-selections` (VisionZip-style rows).

Metrics go through `evaluate` modules shipped with the package (loaded by path, offline). GFLOPs come from the
analytic count in pitome_hf.flops; images/s times the model forward only, after warm-up, with device
synchronisation. Writes results.json (read by the model card code), results.csv, results.md and a plot.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pitome_hf.evaluation.tasks import TASK_CLASSES, TASKS, timed_run
from pitome_hf.measurement.timing import Progress, compiled_runs, peak_memory_mb, sweep
from pitome_hf.modeling.merge_config import MergeSettings
from pitome_hf.modeling.merging import METHODS
from pitome_hf.paths import ASSETS, DEFAULT_DATASET, DEFAULT_MODEL  # noqa: F401 (named here before)
from pitome_hf.options import (
    SWEPT, add_batch_argument, add_device_arguments, add_merge_arguments, add_output_argument,
    add_visual_sweep_arguments, check_sweep, merge_arguments,
)

DEFAULT_KEEP_RATIOS = (0.95, 0.9, 0.85, 0.8, 0.75)
DEFAULT_METHODS = ("none", "tome", "pitome")
SCHEMA = "pitome_hf.evaluation.evaluate/1"


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class DataSpec:
    """Where the data is and which columns to read. `path`: a datasets Hub id, a local folder (imagefolder layout or
    parquet files), a .parquet/.csv/.json file, or a .npz with `images`, `labels` and `classes` arrays."""

    path: Optional[str] = None
    split: Optional[str] = None  # of a Hub id or a folder (None: "test"); a single file holds one split
    image_column: Optional[str] = None  # None: the task's default ("image")
    label_column: Optional[str] = None  # class label (classification) or answers (vqa); None: the task's default
    text_column: Optional[str] = None  # captions (retrieval) or questions (vqa); None: the task's default

    @property
    def split_name(self) -> str:
        return self.split or "test"

    def columns(self, defaults: dict[str, str]) -> dict[str, str]:
        """{role: column} for the roles a task reads, with this spec's choices over the task's defaults."""
        chosen = {"image": self.image_column, "label": self.label_column, "text": self.text_column}
        return {role: chosen[role] or default for role, default in defaults.items()}


def _dataset_from_npz(path: Path):
    """A dataset from a .npz with `images` (N, H, W[, C] uint8), `labels` (N integers) and optionally `classes`."""
    import datasets
    import zipfile

    from PIL import Image

    try:
        arrays = np.load(path, allow_pickle=False)
        files = list(arrays.files) if isinstance(arrays, np.lib.npyio.NpzFile) else None
        if files is not None and {"images", "labels"} <= set(files):
            images, labels = arrays["images"], arrays["labels"]
            names = [str(c) for c in arrays["classes"]] if "classes" in files else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{path} is not a valid .npz file (numpy cannot read it: {type(error).__name__}); it must "
                         "hold the arrays images, labels and optionally classes.") from None
    if files is None:
        raise ValueError(f"{path} is not a valid .npz file: it holds a single array (a .npy), not the named arrays "
                         "images and labels.")
    if not {"images", "labels"} <= set(files):
        lacking = sorted({"images", "labels"} - set(files))
        raise ValueError(f"{path} lacks the arrays {lacking}; it has {sorted(files)}.")
    if images.ndim not in (3, 4) or images.dtype != np.uint8 or len(images) != len(labels) or labels.ndim != 1:
        raise ValueError(f"{path}: images must be uint8 (N, H, W) or (N, H, W, C) and labels (N,); got images "
                         f"{images.dtype} {images.shape} and labels {labels.dtype} {labels.shape}.")
    if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        raise ValueError(f"{path}: labels must be integer class ids; got {labels.dtype} values such as {labels[:3]}.")
    labels = labels.astype(np.int64)
    feature = datasets.Value("int64")
    if names:
        bad = labels[(labels < 0) | (labels >= len(names))]
        if bad.size:  # ClassLabel would refuse it with a long message: name the first one
            raise ValueError(f"{path}: label {int(bad[0])} at row {int(np.flatnonzero(labels == bad[0])[0])} is not "
                             f"a class id: {len(names)} classes are named, so labels must be 0..{len(names) - 1}.")
        feature = datasets.ClassLabel(names=names)
    features = datasets.Features({"image": datasets.Image(), "label": feature})
    pil = [Image.fromarray(a) for a in images]
    return datasets.Dataset.from_dict({"image": pil, "label": labels.tolist()}, features=features)


DATA_FILE_KINDS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or Path(name).suffix in (
        *DATA_FILE_KINDS, ".npz")


def _load_folder(path: Path, split: str):
    """A local folder: its parquet files (those of `split` when the file names carry split names, else all of them),
    or an imagefolder layout."""
    import datasets
    from datasets.data_files import get_data_patterns

    parquet = sorted(p for p in path.rglob("*.parquet") if not any(part.startswith(".") for part in p.parts))
    if not parquet:
        return datasets.load_dataset("imagefolder", data_dir=str(path), split=split)
    patterns = get_data_patterns(str(path))
    if list(map(str, patterns)) == ["train"] and list(patterns.values())[0] == ["**"]:  # no split names: all files
        return datasets.load_dataset("parquet", data_files=[str(p) for p in parquet], split="train")
    return datasets.load_dataset("parquet", data_dir=str(path), split=split)


def _load_any(spec: DataSpec, path: Path):
    import datasets

    if path.is_file() and spec.split is not None:
        raise ValueError(f"--split {spec.split}: {path} is a single file, which holds one split; drop --split (it "
                         "applies to Hub ids and folders).")
    if path.suffix == ".npz" and path.is_file():
        return _dataset_from_npz(path)
    if path.is_dir():
        return _load_folder(path, spec.split_name)
    if path.is_file() and path.suffix in DATA_FILE_KINDS:
        return datasets.load_dataset(DATA_FILE_KINDS[path.suffix], data_files=str(path), split="train")
    if path.exists():
        raise ValueError(f"--dataset {path} is a file evaluate cannot read: give a folder (imagefolder or parquet), a "
                         f"{', '.join(DATA_FILE_KINDS)} or .npz file, or a datasets Hub id.")
    if _looks_like_path(str(spec.path)):
        raise FileNotFoundError(f"--dataset {spec.path} does not exist (a local file or folder was meant; a Hub "
                                "dataset id looks like org/name).")
    return datasets.load_dataset(str(spec.path), split=spec.split_name)


def _images_column(ds, column: str, root: Optional[Path]):
    """`ds` with `column` holding images: an Image column as it is; a column of file paths (relative to `root`, the
    table's folder) cast to images; anything else is refused."""
    import datasets

    feature = ds.features[column]
    if isinstance(feature, datasets.Image):
        return ds
    if isinstance(feature, datasets.Value) and "string" in feature.dtype:
        if root is not None:
            ds = ds.map(lambda row: {column: str(root / row[column]) if row[column] and "://" not in row[column]
                                     else row[column]})
        return ds.cast_column(column, datasets.Image())
    raise ValueError(f"the image column {column!r} holds {feature}, not images: pass --image-column with the column "
                     "of images (or of image file paths).")


def load_data(spec: DataSpec, columns: Optional[dict] = None):
    """A `datasets.Dataset` for the spec, with its columns ({role: name}, default image and label) checked: each one
    exists, the image column holds images (file paths are read relative to the table's folder), the split has rows."""
    path = Path(spec.path).expanduser() if spec.path else DEFAULT_DATASET
    try:
        ds = _load_any(spec, path)
    except ValueError as error:
        if str(error).startswith("Unknown split"):
            raise ValueError(f"--split {spec.split_name}: {' '.join(str(error).split())} (for {path}).") from None
        if "corresponds to no data" in str(error):  # datasets' words for a folder without images of that split
            raise ValueError(f"--dataset {path} holds no images or parquet files for the split "
                             f"{spec.split_name!r}.") from None
        raise
    except PermissionError as error:
        raise PermissionError(f"--dataset {path} cannot be read ({error.strerror}: {error.filename}).") from None
    for role, column in (columns or spec.columns({"image": "image", "label": "label"})).items():
        if column not in ds.column_names:
            raise ValueError(
                f"the dataset has no {role} column {column!r}; its columns are {ds.column_names}. "
                f"Pass --{role}-column with one of them."
            )
        if role == "image":
            ds = _images_column(ds, column, (path if path.is_dir() else path.parent) if path.exists() else None)
    if len(ds) == 0:
        where = f"{spec.path or path}" + ("" if path.is_file() else f" (split {spec.split_name})")
        raise ValueError(f"the dataset {where} has no rows: nothing to evaluate.")
    return ds


# ----------------------------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    method: str
    keep_ratio: Optional[float]  # None for a visual-token budget row
    metrics: dict
    gflops: float
    images_per_s: float
    peak_memory_mb: float
    num_samples: int
    token_counts: list = field(default_factory=list)
    device: str = ""  # where this row was measured
    visual_tokens: Optional[int] = None  # the row's visual-token budget per image (vision-language families)


# ----------------------------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------------------------
def run_configs(methods, keep_ratios, presets=(), extra: dict | None = None, visual_tokens=(),
                visual_selections=("merge",)) -> list[tuple[dict, Optional[float]]]:
    """(merge settings, keep ratio) for every row (see `measure.sweep`; `extra`: merge settings of every merged row),
    after checking the names and ratios: known, in range, each given once, and at least one row. Vision-language
    sweeps: each `visual_tokens` budget K adds the rows of every method (keep ratio None, settings visual_tokens=K),
    and each selection of `visual_selections` other than "merge" adds one row per budget and keep ratio."""
    from pitome_hf.options import check_visual_sweep

    from pitome_hf.modeling.merge_config import MERGE_PRESETS

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
    if torch_dtype is None:
        raise ValueError(f"dtype={dtype!r} is not supported; choose float32, bfloat16 or float16.")
    return TASK_CLASSES[task], torch_dtype


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
    dtype: str = "float32",
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
    dev = asked if asked is not None and not (asked.type == "cuda" and asked.index is None) else state.device
    configs = run_configs(methods, keep_ratios, presets, merge_settings, visual_tokens, visual_selections)
    model_path = check_model(model, task)
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
                            max_new_tokens=max_new_tokens, labels_by_id=labels_by_id)
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
    return _report(run, state, fingerprints, results)


def _report(run: dict, state, fingerprints: dict, results: list) -> dict:
    dev = run["dev"]
    return {
        "schema": SCHEMA,
        "task": run["task"],
        "model": run["model"],
        "dataset": {"path": str(run["data"].path or DEFAULT_DATASET), "split": run["data"].split,
                    **{f"{role}_column": column for role, column in run["columns"].items()}},
        "num_samples": run["n"],
        "device": str(dev) if state.num_processes == 1 else f"{state.num_processes} x {dev.type}",
        "num_processes": state.num_processes,
        "dtype": run["dtype"],
        "batch_size": run["batch_size"],
        "compiled": run["compile"],
        "labels_by_id": run["labels_by_id"],
        **fingerprints,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "machine": platform.machine(), "threads": torch.get_num_threads()},
        "results": [r.__dict__ for r in results],
    }


def gather_first(value, state):
    """The main process's `value` on every process (the value itself when there is one process)."""
    from accelerate.utils import gather_object

    return gather_object([value])[0] if state.num_processes > 1 else value


# ----------------------------------------------------------------------------------------------------------------
# The journal: rows keyed by what they depend on, one writer at a time
# ----------------------------------------------------------------------------------------------------------------
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".py", ".txt", ".model", ".jinja", ".tiktoken")


def files_digest(files) -> str:
    """sha256 over (name, sha256 of the content) of each (name, path) in `files`, in name order."""
    digest = hashlib.sha256()
    for name, path in sorted(files):
        with open(path, "rb") as f:
            digest.update(name.encode() + b"\0" + hashlib.file_digest(f, "sha256").digest())
    return "sha256:" + digest.hexdigest()


def model_folder(model: str) -> Path:
    """The folder a model's files are read from: the folder itself, or a Hub id's snapshot in the local cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from transformers.utils import cached_file

    return Path(cached_file(str(model), "config.json")).parent


def model_fingerprint(model, weights_only: bool = False) -> str:
    """A hash of everything a model's results depend on: its config, weights, code and processor/tokenizer files
    (the top-level files with the suffixes in MODEL_FILE_SUFFIXES; README.md and hidden files excluded). With
    `weights_only`, of the weight files alone (*.safetensors, *.bin and their index)."""
    folder = model_folder(str(model))
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix in
             MODEL_FILE_SUFFIXES]
    if weights_only:
        files = [p for p in files if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
    return files_digest((p.name, p) for p in files)


def dataset_fingerprint(spec: DataSpec, ds) -> str:
    """A hash of a local dataset's files (a file, or every file under a folder but hidden ones), else the datasets
    library's fingerprint of what it loaded from the Hub cache."""
    path = Path(spec.path).expanduser() if spec.path else DEFAULT_DATASET
    if path.is_file():
        return files_digest([("", path)])  # the content alone: a renamed copy is the same data
    if path.is_dir():
        names = {str(p.relative_to(path)): p for p in path.rglob("*") if p.is_file()}
        return files_digest((name, p) for name, p in names.items() if not any(
            part.startswith(".") for part in Path(name).parts))
    return f"datasets:{ds._fingerprint}"


def code_fingerprint() -> str:
    """A hash of the code the rows depend on besides the model's own files: every .py file of the installed pitome_hf
    and of its modeling package (the merge code a stock checkpoint is run with, the task runners), and the torch and
    transformers versions. A row measured by other code is measured again, not reused."""
    import transformers

    import pitome_hf
    import pitome_hf.modeling

    names = {}  # named inside the package, wherever it is installed (the modeling folder sits apart when editable)
    for root, prefix in ((Path(pitome_hf.__file__).parent, "pitome_hf"),
                         (Path(pitome_hf.modeling.__file__).parent, "pitome_hf/modeling")):
        for p in root.rglob("*.py"):
            if "__pycache__" not in p.parts:
                names[p.resolve()] = f"{prefix}/{p.relative_to(root).as_posix()}"
    digest = files_digest((name, path) for path, name in names.items())
    return f"{digest} torch {torch.__version__} transformers {transformers.__version__}"


def _fingerprints(model_path: str, data: DataSpec, ds) -> dict:
    return {"model_fingerprint": model_fingerprint(model_path),
            "weights_fingerprint": model_fingerprint(model_path, weights_only=True),
            "dataset_fingerprint": dataset_fingerprint(data, ds), "code_fingerprint": code_fingerprint()}


RESULT_FILES = tuple(f"results.{k}" for k in ("json", "csv", "md", "png"))


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first (what mkdir(parents=True) would make)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def check_output_folder(out_dir: Path) -> None:
    """Refuse an --output evaluate cannot write, without writing anything: a file, a folder under a file or one that
    is not writable, or result names (results.json, ...) or the journal taken by folders. `RowJournal` checks again
    by writing when it takes the folder."""
    out_dir = Path(out_dir)
    missing = _missing_folders(out_dir)
    parent = missing[-1].parent if missing else out_dir  # the folder that is written into first
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--output {out_dir} cannot be written: it is a file, not a folder; choose a folder. Nothing "
                         "was run.")
    if not parent.is_dir():
        raise ValueError(f"--output {out_dir} cannot be written: {parent} is a file, not a folder; choose a folder you "
                         "can write. Nothing was run.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--output {out_dir} cannot be written: {parent} is not writable; choose a folder you can "
                         "write. Nothing was run.")
    blocked = [p for p in (out_dir / "rows.jsonl", *(out_dir / name for name in RESULT_FILES))
               if p.exists() and not p.is_file()]
    if blocked:
        raise ValueError(f"--output {out_dir}: {blocked[0]} is not a file, so the results cannot be written there; "
                         "remove it or choose another --output. Nothing was run.")


class RowJournal:
    """`out_dir/rows.jsonl`: a header line naming everything the rows depend on (the model's and the dataset's file
    hashes, the run's settings), then one line per measured row, each written (and flushed) as soon as it exists. A
    journal whose header matches the new run's is resumed; another is replaced (saying what differs) when the first
    new row is written, so a run that stops before measuring anything leaves the old journal as it was.

    Creating it checks that `out_dir` can be written and takes `out_dir/.rows.lock` (an exclusive flock, released by
    `close()` or when the process ends): a second evaluate into the same folder is refused, naming the lock and the
    process holding it. A journal closed before it wrote a row removes what it made (the lock file and the folders it
    created), so a refused or failed run leaves `out_dir` as it found it."""

    PATHS = ("model", "dataset")  # named for the reader; the rows depend on the files' hashes, not on the paths

    def __init__(self, out_dir: Path):
        check_output_folder(out_dir)
        self._made = _missing_folders(out_dir)  # removed again by close() when no row was written
        self._lock = None
        self._lock_made = False
        self._written = False
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            probe = out_dir / f".pitome_write_check.{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            self._undo()
            raise ValueError(f"--output {out_dir} cannot be written ({type(error).__name__}: {error.strerror or error}); "
                             "choose a folder you can write. Nothing was run.") from None
        self.path = out_dir / "rows.jsonl"
        self.lock_path = out_dir / ".rows.lock"
        lock_existed = self.lock_path.exists()
        try:
            self._lock = _take_lock(self.lock_path, out_dir)
        except BaseException:
            self._undo()  # another run's lock file stays: only the folders this one made (if empty) go
            raise
        self._lock_made = not lock_existed
        self.header: dict = {}
        self.rows: dict[str, dict] = {}

    def start(self, header: dict, resume: bool = True) -> None:
        """Read the rows of a journal with this header (when `resume`); the journal is rewritten (the header, the rows
        kept) when the first new row is added."""
        self.header = json.loads(json.dumps({"schema": SCHEMA, **header}))  # as it reads back
        old_header, rows = _read_journal(self.path) if resume else (None, {})
        keys = (set(old_header or {}) | set(self.header)) - set(self.PATHS)
        differs = sorted(k for k in keys if (old_header or {}).get(k) != self.header.get(k))
        if old_header is not None and not differs:
            self.rows = rows
        elif old_header is not None and rows:
            print(f"note: {self.path} holds {len(rows)} rows of another run ({', '.join(differs)} "
                  f"{'differs' if len(differs) == 1 else 'differ'}); they are measured again.", file=sys.stderr)

    def _rewrite(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w") as f:
            f.write(json.dumps(self.header) + "\n")
            for key, row in self.rows.items():
                f.write(json.dumps({"key": key, "row": row}) + "\n")
        os.replace(partial, self.path)

    def add(self, key: str, row: dict) -> None:
        if not self._written:
            self._rewrite()
            self._written = True
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "row": row}) + "\n")
            f.flush()

    def close(self) -> None:
        if self._lock is None:
            return
        if not self._written and self._lock_made:
            self.lock_path.unlink(missing_ok=True)  # while still held: the next run makes a new one
        self._lock.close()  # closing the file releases the flock
        self._lock = None
        if not self._written:
            self._undo()

    def _undo(self) -> None:
        """Remove the folders this journal made, deepest first, where they are still empty."""
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:
                break


def _take_lock(lock_path: Path, out_dir: Path):
    """An open file holding an exclusive, non-blocking flock on `lock_path` (with this process's id in it)."""
    import fcntl

    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RuntimeError(f"--output {out_dir} is in use by another pitome-hf evaluate (process {holder} holds "
                         f"{lock_path}); wait for it to finish or choose another --output. Nothing was run.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


ROW_FIELDS = set(RunResult.__dataclass_fields__)


def _read_journal(path: Path) -> tuple[Optional[dict], dict]:
    """(header, {key: row}) of a journal; rows after a torn or foreign line are dropped, rows before it kept."""
    if not path.is_file():
        return None, {}
    try:
        lines = path.read_text().splitlines()
        header = json.loads(lines[0]) if lines else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, {}
    rows = {}
    for line in lines[1:]:
        try:
            item = json.loads(line)
            key, row = item["key"], item["row"]
        except (json.JSONDecodeError, KeyError, TypeError):
            break  # a line torn by a kill: what came before it stands
        if not isinstance(row, dict) or not {"method", "keep_ratio", "metrics"} <= set(row) or set(row) - ROW_FIELDS:
            break
        rows[key] = row
    return header if isinstance(header, dict) else None, rows


# ----------------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------------
REPORT_KEYS = {"schema", "task", "model", "dataset", "num_samples", "device", "dtype", "batch_size", "results"}
RESULT_KEYS = {"method", "keep_ratio", "metrics", "gflops", "images_per_s", "peak_memory_mb", "num_samples"}


def validate_report(report: dict) -> dict:
    """Check a results.json (as read by the model-card code); returns it, or raises ValueError naming what is wrong."""
    if report.get("schema") != SCHEMA:
        raise ValueError(f"not a pitome_hf evaluation report: schema={report.get('schema')!r}, expected {SCHEMA!r}.")
    missing = REPORT_KEYS - set(report)
    if missing:
        raise ValueError(f"evaluation report lacks the keys {sorted(missing)}.")
    if report["task"] not in TASKS:
        raise ValueError(f"evaluation report has task {report['task']!r}; known tasks: {', '.join(TASKS)}.")
    if not report["results"]:
        raise ValueError("evaluation report has no results.")
    for i, row in enumerate(report["results"]):
        lacking = RESULT_KEYS - set(row)
        if lacking:
            raise ValueError(f"evaluation result {i} lacks the keys {sorted(lacking)}.")
        if not isinstance(row["method"], str) or not row["method"] or not row["metrics"]:
            raise ValueError(f"evaluation result {i} has method {row['method']!r} or no metrics.")
    return report


def primary_metric(report: dict) -> str:
    return next(iter(report["results"][0]["metrics"]))


def markdown_table(report: dict) -> str:
    """One row per run: every metric (in %), GFLOPs per sample, samples/s, peak memory."""
    names = list(report["results"][0]["metrics"])
    rate = "images/s" if report.get("task") != "vqa" else "questions/s"
    budgets = any(r.get("visual_tokens") is not None for r in report["results"])
    budget = " visual tokens |" if budgets else ""
    lines = [f"| method | keep ratio |{budget} {' | '.join(names)} | GFLOPs | {rate} | peak memory (MB) |",
             "|" + "---|" * (len(names) + 5 + budgets)]
    for r in report["results"]:
        values = " | ".join(f"{100 * r['metrics'][m]:.2f}" for m in names)
        ratio = "" if r["keep_ratio"] is None else f"{r['keep_ratio']:.2f}"
        tokens = f" {'' if r.get('visual_tokens') is None else r['visual_tokens']} |" if budgets else ""
        lines.append(
            f"| {r['method']} | {ratio} |{tokens} {values} | {r['gflops']:.4f} | "
            f"{r['images_per_s']:.1f} | {r['peak_memory_mb']:.0f} |"
        )
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = primary_metric(report)
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"none": ("k", "*"), "tome": ("tab:blue", "o"), "pitome": ("tab:red", "s")}
    names = {"none": "unmerged", "tome": "ToMe", "pitome": "PiToMe"}
    for method in dict.fromkeys(r["method"] for r in report["results"]):
        rows = sorted((r for r in report["results"] if r["method"] == method), key=lambda r: r["gflops"])
        color, marker = styles.get(method, (None, "^"))
        ax.plot([r["gflops"] for r in rows], [100 * r["metrics"][name] for r in rows], marker=marker,
                color=color, label=names.get(method, method), markersize=10 if method == "none" else 6)
    ax.set_xlabel("GFLOPs per image")
    ax.set_ylabel(f"{name} (%)")
    ax.set_title(f"{Path(report['model']).name}: {name} against compute")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict, out_dir: Path) -> dict:
    """results.json, results.csv, results.md and results.png in out_dir; returns their paths. Each file is written
    next to its place and renamed into it, so a failure never leaves a half-written report."""
    import io
    import os

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"results.{k}" for k in ("json", "csv", "md", "png")}
    metric_names = list(report["results"][0]["metrics"])
    table = io.StringIO()
    writer = csv.writer(table)
    budgets = any(r.get("visual_tokens") is not None for r in report["results"])  # a visual_tokens column if any
    writer.writerow(["method", "keep_ratio", *(["visual_tokens"] if budgets else []), *metric_names, "gflops",
                     "images_per_s", "peak_memory_mb"])
    for r in report["results"]:
        writer.writerow([r["method"], r["keep_ratio"], *([r.get("visual_tokens")] if budgets else []),
                         *(r["metrics"][m] for m in metric_names), r["gflops"], r["images_per_s"], r["peak_memory_mb"]])
    texts = {"json": json.dumps(report, indent=2), "csv": table.getvalue(), "md": markdown_table(report) + "\n"}
    for kind, text in texts.items():
        partial = paths[kind].with_name(paths[kind].name + ".partial")
        partial.write_text(text)
        os.replace(partial, paths[kind])
    partial = paths["png"].with_name("results.partial.png")
    plot(report, partial)
    os.replace(partial, paths["png"])
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pitome-hf evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a checkpoint folder or a Hub id (org/name), stock or PiToMe "
                        "(default: the embedded Fashion-MNIST ViT)")
    parser.add_argument("--dataset", default=None, help="datasets Hub id, folder (imagefolder or parquet), "
                        "parquet/csv/json file or .npz (default: the embedded Fashion-MNIST test split)")
    parser.add_argument("--split", default=None, help="split of a Hub id or folder dataset; refused for a single file, "
                        "which holds one split (default: test; many Hub datasets call theirs 'validation')")
    parser.add_argument("--image-column", default=None, help="(default: image)")
    parser.add_argument("--label-column", default=None,
                        help="class label (classification; default label) or answers (vqa; default answers)")
    parser.add_argument("--text-column", default=None,
                        help="captions (image-text-retrieval; default caption) or questions (vqa; default question)")
    parser.add_argument("--task", default="image-classification", choices=TASKS, help="(default: %(default)s)")
    parser.add_argument("--prompt", default=None,
                        help="zero-shot class template (default 'a photo of a {}.') or VQA prompt with <image> and {}")
    parser.add_argument("--max-new-tokens", type=int, default=10, help="vqa: answer length limit (default: "
                        "%(default)s)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS,
                        help="selections to run at every keep ratio (default: %(default)s)")
    parser.add_argument("--presets", nargs="+", default=[], metavar="PRESET",
                        help="also run these named configurations at every keep ratio: paper, authors-deit, "
                        "authors-mae, authors-bert, authors-blip2 (see MERGE_PRESETS)")
    parser.add_argument("--keep-ratios", nargs="+", type=float, default=None,
                        help=f"(default: {list(DEFAULT_KEEP_RATIOS)}; none when --visual-tokens is given)")
    add_device_arguments(parser, "cpu, cuda, cuda:N or mps; one this machine lacks is refused (default: cuda when "
                         "available, else cpu; the report records the device used)")
    add_batch_argument(parser, 64, "samples per forward")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples (default: all)")
    add_output_argument(parser, "folder for results.json/.csv/.md/.png and the rows.jsonl journal, checked before "
                        "the sweep", default="out/evaluate")
    parser.add_argument("--compile", action="store_true", help="run every configuration through torch.compile "
                        "(default: eager)")
    parser.add_argument("--labels-by-id", action="store_true", help="image-classification: read dataset label k as "
                        "the model's label k even when the dataset's class names are not the model's (default: classes "
                        "are matched by name, and a dataset naming classes the model lacks is refused)")
    parser.add_argument("--no-progress", action="store_true", help="no per-row progress lines")
    parser.add_argument("--no-resume", action="store_true", help="measure every row again, even those the folder's "
                        "rows.jsonl already holds for the same model files, data and settings")
    add_visual_sweep_arguments(parser, (), selections=["merge"])
    add_merge_arguments(parser, exclude=SWEPT, title="merge settings of every merged row")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.keep_ratios is None:
        args.keep_ratios = [] if args.visual_budgets else list(DEFAULT_KEEP_RATIOS)
    start = time.perf_counter()
    report = evaluate_model(
        model=args.model,
        data=DataSpec(args.dataset, args.split, args.image_column, args.label_column, args.text_column),
        task=args.task,
        methods=args.methods,
        keep_ratios=args.keep_ratios,
        presets=args.presets,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        limit=args.limit,
        progress=not args.no_progress,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        out_dir=Path(args.output),
        resume=not args.no_resume,
        compile=args.compile,
        labels_by_id=args.labels_by_id,
        merge_settings=merge_arguments(args),
        visual_tokens=args.visual_budgets,
        visual_selections=args.visual_selections,
    )
    from accelerate import PartialState

    if PartialState().is_main_process:
        paths = write_report(report, Path(args.output))
        print(f"{report['model']} on {report['dataset']['path']} ({report['num_samples']} samples, "
              f"{report['device']}, {report['dtype']}, batch {report['batch_size']})")
        print(markdown_table(report))
        print(f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

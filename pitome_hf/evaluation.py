"""Evaluate a model under none / ToMe / PiToMe merging at several keep ratios: metric, GFLOPs, images/s, memory.

    pitome-hf evaluate                                  # the embedded default (Fashion-MNIST ViT), all methods
    pitome-hf evaluate --presets authors-deit --keep-ratios 0.9   # add the authors' DeiT configuration
    pitome-hf evaluate --model DIR_OR_ID --dataset DIR_OR_ID --split validation --keep-ratios 0.95 0.9 0.85
    pitome-hf evaluate --task zero-shot-image-classification --model openai/clip-vit-base-patch16 --dataset ...
    pitome-hf evaluate --task image-text-retrieval --model CLIP --dataset ... --text-column caption
    pitome-hf evaluate --task vqa --model llava-hf/llava-1.5-7b-hf --dataset ... --label-column answers
    accelerate launch --num_processes 2 -m pitome_hf.cli evaluate ...   # data split across processes

Tasks (pitome_hf.evaluation_tasks): image-classification (ViT/DeiT), zero-shot-image-classification and
image-text-retrieval (CLIP), vqa (LLaVA).

Metrics go through `evaluate` modules shipped with the package (loaded by path, offline). GFLOPs come from the
analytic count in pitome_hf.flops; images/s times the model forward only, after warm-up, with device
synchronisation. Writes results.json (read by the model card code), results.csv, results.md and a plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .evaluation_tasks import TASK_CLASSES, TASKS, timed_run
from .measure import Progress, compiled_runs, peak_memory_mb, sweep
from .modeling.merge_config import MergeSettings

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "fashion-mnist-vit"
DEFAULT_DATASET = ASSETS / "fashion_mnist_test.npz"
DEFAULT_KEEP_RATIOS = (0.95, 0.9, 0.85, 0.8, 0.75)
METHODS = ("none", "tome", "pitome", "pitome_bsm")
DEFAULT_METHODS = ("none", "tome", "pitome")
SCHEMA = "pitome_hf.evaluation/1"


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class DataSpec:
    """Where the data is and which columns to read. `path`: a datasets Hub id, a local folder (imagefolder layout or
    parquet files), a .parquet/.csv/.json file, or a .npz with `images`, `labels` and `classes` arrays."""

    path: Optional[str] = None
    split: str = "test"
    image_column: Optional[str] = None  # None: the task's default ("image")
    label_column: Optional[str] = None  # class label (classification) or answers (vqa); None: the task's default
    text_column: Optional[str] = None  # captions (retrieval) or questions (vqa); None: the task's default

    def columns(self, defaults: dict[str, str]) -> dict[str, str]:
        """{role: column} for the roles a task reads, with this spec's choices over the task's defaults."""
        chosen = {"image": self.image_column, "label": self.label_column, "text": self.text_column}
        return {role: chosen[role] or default for role, default in defaults.items()}


def _dataset_from_npz(path: Path):
    import datasets
    from PIL import Image

    arrays = np.load(path, allow_pickle=False)
    missing = {"images", "labels"} - set(arrays.files)
    if missing:
        raise ValueError(f"{path} lacks the arrays {sorted(missing)}; it has {sorted(arrays.files)}.")
    names = [str(c) for c in arrays["classes"]] if "classes" in arrays.files else None
    labels = arrays["labels"].astype(np.int64)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=names) if names else datasets.Value("int64"),
        }
    )
    images = [Image.fromarray(a) for a in arrays["images"]]
    return datasets.Dataset.from_dict({"image": images, "label": labels.tolist()}, features=features)


def load_data(spec: DataSpec, columns: Optional[dict] = None):
    """A `datasets.Dataset` for the spec, with its columns ({role: name}, default image and label) checked."""
    import datasets

    path = Path(spec.path) if spec.path else DEFAULT_DATASET
    if path.suffix == ".npz" and path.is_file():
        ds = _dataset_from_npz(path)
    elif path.is_dir():
        parquet = sorted(path.rglob("*.parquet"))
        if parquet:
            ds = datasets.load_dataset("parquet", data_files=[str(p) for p in parquet], split="train")
        else:
            ds = datasets.load_dataset("imagefolder", data_dir=str(path), split=spec.split)
    elif path.is_file() and path.suffix in (".parquet", ".csv", ".json", ".jsonl"):
        kind = {"jsonl": "json"}.get(path.suffix[1:], path.suffix[1:])
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    else:
        ds = datasets.load_dataset(str(spec.path), split=spec.split)
    for role, column in (columns or spec.columns({"image": "image", "label": "label"})).items():
        if column not in ds.column_names:
            raise ValueError(
                f"the dataset has no {role} column {column!r}; its columns are {ds.column_names}. "
                f"Pass --{role}-column with one of them."
            )
    return ds


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    method: str
    keep_ratio: float
    metrics: dict
    gflops: float
    images_per_s: float
    peak_memory_mb: float
    num_samples: int
    token_counts: list = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------------------------
def run_configs(methods, keep_ratios, presets=()) -> list[tuple[dict, float]]:
    """(merge settings, keep ratio) for every row (see `measure.sweep`), after checking the names and ratios."""
    from .modeling.merge_config import MERGE_PRESETS

    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods {bad} are not supported; choose from {', '.join(METHODS)}.")
    badp = [p for p in presets if p not in MERGE_PRESETS]
    if badp:
        raise ValueError(f"presets {badp} are not known; choose from {', '.join(MERGE_PRESETS)}.")
    badr = [r for r in keep_ratios if not 0 < r <= 1]
    if badr:
        raise ValueError(f"keep ratios {badr} are out of range: each must be in (0, 1].")
    return sweep(methods, keep_ratios, presets)


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
) -> dict:
    """Evaluate `model` on `data` for every (method or preset, keep ratio); returns the report dict (see
    write_report). Each result's `method` names the configuration that ran (`MergeSettings.label()`: the method, the
    preset's name, or the per-layer methods and the settings that differ from the paper's).

    `task`: one of TASKS (see pitome_hf.evaluation_tasks). `prompt`: the zero-shot class template ("a photo of a
    {}.") or the VQA prompt (with `<image>` and `{}` for the question). Under `accelerate launch` each process takes a
    contiguous shard; per-sample outputs and timings are gathered with accelerate, and every process returns the same
    report.

    `out_dir`: checked for writing before anything runs; each row is appended to `out_dir/rows.jsonl` as soon as it
    is measured, so an interrupted sweep keeps what it did, and a re-run with the same settings (`resume`) reuses
    those rows and measures only the rest. `compile`: run each configuration through torch.compile (the first
    batches include the compilation: use enough samples for the timing to mean something)."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from .convert import apply_pitome

    if task not in TASK_CLASSES:
        raise ValueError(f"task={task!r} is not supported; supported tasks: {', '.join(TASK_CLASSES)}.")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1.")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be >= 1 (or None for the whole split).")
    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    dev = torch.device(device) if device and device != "cuda" else state.device
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise ValueError(f"dtype={dtype!r} is not supported; choose float32, bfloat16 or float16.")
    configs = run_configs(methods, keep_ratios, presets)
    model_path = str(model) if model else str(DEFAULT_MODEL)
    data = data or DataSpec()
    journal = None
    if out_dir is not None and state.is_main_process:
        journal = RowJournal(Path(out_dir), dict(
            model=model_path, dataset=str(data.path or DEFAULT_DATASET), split=data.split, task=task, limit=limit,
            dtype=dtype, batch_size=batch_size, device=str(dev), processes=state.num_processes, prompt=prompt,
            compile=compile,
            columns=[data.image_column, data.label_column, data.text_column]), resume)
    task_class = TASK_CLASSES[task]
    columns = data.columns(task_class.columns)
    ds = load_data(data, columns)
    n = len(ds) if limit is None else min(limit, len(ds))
    runner = task_class(model_path, ds, columns, dev, torch_dtype, batch_size, n, prompt=prompt,
                        max_new_tokens=max_new_tokens)
    with state.split_between_processes(list(range(n))) as shard:
        batches = runner.batches(shard)
    show = progress and state.is_local_main_process
    results = []
    done = journal.rows if journal is not None else {}
    done = gather_object([done])[0] if state.num_processes > 1 else done  # every process skips the same rows
    lines = Progress(len(configs), "evaluate ", enabled=show)
    for settings, ratio in configs:
        net = apply_pitome(runner.base, keep_ratio=ratio, **settings)
        method = MergeSettings.from_config(net.config).label()
        key = f"{method}@{ratio}"
        if key in done:
            results.append(RunResult(**done[key]))
            lines.step(f"{method} {ratio}: reused from {journal.path if journal else 'the journal'}")
            continue
        if compile:
            net = torch.compile(net)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        with compiled_runs(len(configs)):
            outputs, seconds = timed_run(batches, runner.forward(net), dev, show, f"{method} {ratio}")
        gathered = gather_object([(outputs, seconds, len(outputs), peak_memory_mb(dev))])
        merged = {}
        for part, _, _, _ in gathered:
            merged.update(part)
        slowest = max(g[1] for g in gathered)
        results.append(
            RunResult(
                method=method,
                keep_ratio=ratio,
                metrics=runner.score(merged),
                gflops=runner.gflops(net),
                images_per_s=sum(g[2] for g in gathered) / slowest if slowest > 0 else float("nan"),
                peak_memory_mb=max(g[3] for g in gathered),
                num_samples=len(merged),
                token_counts=runner.token_counts(net),
            )
        )
        if journal is not None:
            journal.add(key, results[-1].__dict__)
        metrics = ", ".join(f"{k} {100 * v:.2f}" for k, v in results[-1].metrics.items())
        lines.step(f"{method} {ratio}: {metrics}, {results[-1].gflops:.4g} GFLOPs, {results[-1].images_per_s:.1f}/s")
    return {
        "schema": SCHEMA,
        "task": task,
        "model": model_path,
        "dataset": {"path": str(data.path or DEFAULT_DATASET), "split": data.split,
                    **{f"{role}_column": column for role, column in columns.items()}},
        "num_samples": n,
        "device": str(dev) if state.num_processes == 1 else f"{state.num_processes} x {dev.type}",
        "num_processes": state.num_processes,
        "dtype": dtype,
        "batch_size": batch_size,
        "compiled": compile,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "machine": platform.machine(), "threads": torch.get_num_threads()},
        "results": [r.__dict__ for r in results],
    }


class RowJournal:
    """`out_dir/rows.jsonl`: a header line naming the run's settings, then one line per measured row, each written
    (and flushed) as soon as it exists. A journal whose header matches the new run's is resumed; another is replaced.
    Creating it checks that `out_dir` can be written, before any measurement."""

    def __init__(self, out_dir: Path, header: dict, resume: bool = True):
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            probe = out_dir / ".pitome_write_check"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise ValueError(f"--out {out_dir} cannot be written ({type(error).__name__}: {error.strerror or error}); "
                             "choose a folder you can write. Nothing was run.") from None
        self.path = out_dir / "rows.jsonl"
        self.header = {"schema": SCHEMA, **header}
        self.rows: dict[str, dict] = {}
        if resume and self.path.is_file():
            lines = self.path.read_text().splitlines()
            try:
                if lines and json.loads(lines[0]) == self.header:
                    for line in lines[1:]:
                        item = json.loads(line)
                        self.rows[item["key"]] = item["row"]
            except (json.JSONDecodeError, KeyError, TypeError):
                self.rows = {}  # a torn or foreign journal: start again
        with self.path.open("w") as f:  # rewrite: the header, then the rows kept
            f.write(json.dumps(self.header) + "\n")
            for key, row in self.rows.items():
                f.write(json.dumps({"key": key, "row": row}) + "\n")

    def add(self, key: str, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "row": row}) + "\n")
            f.flush()


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
    lines = [f"| method | keep ratio | {' | '.join(names)} | GFLOPs | {rate} | peak memory (MB) |",
             "|" + "---|" * (len(names) + 5)]
    for r in report["results"]:
        values = " | ".join(f"{100 * r['metrics'][m]:.2f}" for m in names)
        lines.append(
            f"| {r['method']} | {r['keep_ratio']:.2f} | {values} | {r['gflops']:.4f} | "
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
    writer.writerow(["method", "keep_ratio", *metric_names, "gflops", "images_per_s", "peak_memory_mb"])
    for r in report["results"]:
        writer.writerow([r["method"], r["keep_ratio"], *(r["metrics"][m] for m in metric_names), r["gflops"],
                         r["images_per_s"], r["peak_memory_mb"]])
    texts = {"json": json.dumps(report, indent=2), "csv": table.getvalue(), "md": markdown_table(report) + "\n"}
    for kind, text in texts.items():
        partial = paths[kind].with_name(paths[kind].name + ".partial")
        partial.write_text(text)
        os.replace(partial, paths[kind])
    partial = paths["png"].with_name("results.partial.png")
    plot(report, partial)
    os.replace(partial, paths["png"])
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pitome-hf evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Hub id or folder, stock or PiToMe (default: the embedded "
                        "Fashion-MNIST ViT)")
    parser.add_argument("--dataset", default=None, help="datasets Hub id, folder (imagefolder or parquet), "
                        "parquet/csv/json file or .npz (default: the embedded Fashion-MNIST test split)")
    parser.add_argument("--split", default="test", help="split of a Hub id or imagefolder dataset (default: "
                        "%(default)s; many Hub datasets call theirs 'validation')")
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
    parser.add_argument("--keep-ratios", nargs="+", type=float, default=list(DEFAULT_KEEP_RATIOS),
                        help="(default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples (default: all)")
    parser.add_argument("--out", default="out/evaluate", help="folder for results.json/.csv/.md/.png and the "
                        "rows.jsonl journal, checked before the sweep (default: %(default)s)")
    parser.add_argument("--compile", action="store_true", help="run every configuration through torch.compile "
                        "(default: eager)")
    parser.add_argument("--no-progress", action="store_true", help="no per-row progress lines")
    parser.add_argument("--no-resume", action="store_true", help="measure every row again, even those the folder's "
                        "rows.jsonl already holds for the same settings")
    args = parser.parse_args(argv)
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
        out_dir=Path(args.out),
        resume=not args.no_resume,
        compile=args.compile,
    )
    from accelerate import PartialState

    if PartialState().is_main_process:
        paths = write_report(report, Path(args.out))
        print(f"{report['model']} on {report['dataset']['path']} ({report['num_samples']} samples, "
              f"{report['device']}, {report['dtype']}, batch {report['batch_size']})")
        print(markdown_table(report))
        print(f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The report of `pitome-hf evaluate`: one `RunResult` per row, the report dict (`build_report`, schema `SCHEMA`), its
check as the model-card code reads it (`validate_report`), and the files written from it: results.json, results.csv,
results.md (`markdown_table`) and results.png (`plot`)."""

from __future__ import annotations

import csv
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from pitome_hf.evaluation.tasks import TASKS
from pitome_hf.paths import DEFAULT_DATASET

SCHEMA = "pitome_hf.evaluation.evaluate/1"  # the report format's name (kept as it was when the module held it all)


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


def build_report(run: dict, state, fingerprints: dict, results: list) -> dict:
    """The report of one evaluation (what write_report writes and validate_report checks): the run's settings (`run`,
    from `evaluate_model`), its processes (`state`), the journal's fingerprints and one entry per row."""
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

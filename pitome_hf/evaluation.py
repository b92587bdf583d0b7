"""Evaluate a model under none / ToMe / PiToMe merging at several keep ratios: metric, GFLOPs, images/s, memory.

    pitome-hf evaluate                                  # the embedded default (Fashion-MNIST ViT), all methods
    pitome-hf evaluate --model DIR_OR_ID --dataset DIR_OR_ID --split validation --keep-ratios 0.95 0.9 0.85
    accelerate launch --num_processes 2 -m pitome_hf.cli evaluate ...   # data split across processes

Metrics go through `evaluate` modules shipped with the package (loaded by path, offline). GFLOPs come from the
analytic count in pitome_hf.flops; images/s times the model forward only, after warm-up, with device
synchronisation. Writes results.json (read by the model card code), results.csv, results.md and a plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "fashion-mnist-vit"
DEFAULT_DATASET = ASSETS / "fashion_mnist_test.npz"
DEFAULT_KEEP_RATIOS = (0.95, 0.9, 0.85, 0.8, 0.75)
METHODS = ("none", "tome", "pitome")
SCHEMA = "pitome_hf.evaluation/1"
TASKS = ("image-classification",)
CACHE_LIMIT_BYTES = 2 << 30  # keep preprocessed batches in memory across runs below this size


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class DataSpec:
    """Where the data is and which columns to read. `path`: a datasets Hub id, a local folder (imagefolder layout or
    parquet files), a .parquet/.csv/.json file, or a .npz with `images`, `labels` and `classes` arrays."""

    path: Optional[str] = None
    split: str = "test"
    image_column: str = "image"
    label_column: str = "label"


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


def load_data(spec: DataSpec):
    """A `datasets.Dataset` for the spec, with its columns checked."""
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
    for role, column in (("image", spec.image_column), ("label", spec.label_column)):
        if column not in ds.column_names:
            raise ValueError(
                f"the dataset has no {role} column {column!r}; its columns are {ds.column_names}. "
                f"Pass --{role}-column with one of them."
            )
    return ds


def label_names(ds, column: str) -> Optional[list[str]]:
    feature = ds.features[column]
    return list(feature.names) if hasattr(feature, "names") else None


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------
CLASSIFIER_TYPES = ("vit", "pitome_vit")


def load_classifier(model: str):
    """(PiToMe ViT classifier with merging off, image processor) for a stock or PiToMe checkpoint."""
    from transformers import AutoImageProcessor, PretrainedConfig

    from .modeling import PiToMeViTForImageClassification

    config_dict, _ = PretrainedConfig.get_config_dict(str(model))
    model_type = config_dict.get("model_type")
    if model_type not in CLASSIFIER_TYPES:
        raise ValueError(
            f"{model} is a {model_type!r} model; the task image-classification supports {', '.join(CLASSIFIER_TYPES)} "
            "checkpoints (ViT and DeiT in the ViT layout)."
        )
    if not config_dict.get("id2label") and not config_dict.get("num_labels"):
        raise ValueError(f"{model} has no classification head (no id2label in its config).")
    net = PiToMeViTForImageClassification.from_pretrained(str(model), merge_method="none")
    return net, AutoImageProcessor.from_pretrained(str(model))


def label_mapping(model_config, names: Optional[list[str]], num_dataset_labels: int) -> Optional[torch.Tensor]:
    """dataset label id -> model label id. Matches by name when the dataset has names the model knows; else assumes the
    same ids when the counts agree; else refuses."""
    model_names = {str(v).lower(): int(k) for k, v in model_config.id2label.items()}
    if names and all(n.lower() in model_names for n in names):
        return torch.tensor([model_names[n.lower()] for n in names])
    if num_dataset_labels <= model_config.num_labels:
        return None
    raise ValueError(
        f"the dataset has {num_dataset_labels} labels {names or ''} that the model's {model_config.num_labels} "
        f"labels ({list(model_config.id2label.values())[:10]}...) do not cover: use a model trained for this dataset."
    )


# ----------------------------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset (CUDA), else the process's peak resident memory (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=None)  # off when not a terminal


class ImageBatches:
    """Preprocessed pixel batches of this process's shard, cached in memory across runs when small enough."""

    def __init__(self, ds, indices: list[int], processor, spec: DataSpec, batch_size: int, dtype, device):
        self.ds, self.indices, self.processor, self.spec = ds, indices, processor, spec
        self.batch_size, self.dtype, self.device = batch_size, dtype, device
        self.cache: Optional[list] = None

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def _make(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[int]]]:
        for start in range(0, len(self.indices), self.batch_size):
            idx = self.indices[start : start + self.batch_size]
            rows = self.ds[idx]
            images = [img.convert("RGB") for img in rows[self.spec.image_column]]
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            yield pixels.to(self.device, self.dtype), torch.tensor(rows[self.spec.label_column]), idx

    def __iter__(self):
        if self.cache is not None:
            return iter(self.cache)
        first = next(self._make(), None)
        if first is not None and first[0].numel() * first[0].element_size() * len(self) < CACHE_LIMIT_BYTES:
            self.cache = [first] + list(self._make())[1:]
            return iter(self.cache)
        return self._make()


def classify(model, batches: ImageBatches, mapping, progress: bool, desc: str, warmup: int = 2):
    """Predictions (dataset label ids), references, indices, forward seconds for one configured model."""
    device = batches.device
    preds, refs, order, seconds = [], [], [], 0.0
    with torch.inference_mode():
        for i, (pixels, _, _) in enumerate(batches):  # warm-up, not timed
            if i >= warmup:
                break
            model(pixel_values=pixels)
        for pixels, labels, idx in _progress(batches, len(batches), desc, progress):
            _sync(device)
            start = time.perf_counter()
            logits = model(pixel_values=pixels).logits
            _sync(device)
            seconds += time.perf_counter() - start
            if mapping is not None:  # restrict to the dataset's classes, in dataset order
                logits = logits[:, mapping.to(logits.device)]
            preds.append(logits.argmax(-1).cpu())
            refs.append(labels)
            order.extend(idx)
    return torch.cat(preds).tolist(), torch.cat(refs).tolist(), order, seconds


# ----------------------------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------------------------
def run_configs(methods, keep_ratios) -> list[tuple[str, float]]:
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods {bad} are not supported; choose from {', '.join(METHODS)}.")
    badr = [r for r in keep_ratios if not 0 < r <= 1]
    if badr:
        raise ValueError(f"keep ratios {badr} are out of range: each must be in (0, 1].")
    configs = [("none", 1.0)] if "none" in methods else []
    return configs + [(m, float(r)) for r in keep_ratios for m in methods if m != "none"]


def evaluate_model(
    model: Optional[str] = None,
    data: Optional[DataSpec] = None,
    task: str = "image-classification",
    methods=METHODS,
    keep_ratios=DEFAULT_KEEP_RATIOS,
    device: Optional[str] = None,
    dtype: str = "float32",
    batch_size: int = 64,
    limit: Optional[int] = None,
    progress: bool = True,
) -> dict:
    """Evaluate `model` on `data` for every (method, keep ratio); returns the report dict (see write_report).

    Under `accelerate launch` each process takes a contiguous shard; predictions and timings are gathered with
    accelerate, and every process returns the same report."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from .convert import apply_pitome
    from .flops import vit_flops
    from .metrics import load_metric
    from .modeling import token_schedule

    if task not in TASKS:
        raise ValueError(f"task={task!r} is not supported yet; supported tasks: {', '.join(TASKS)}.")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1.")
    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    dev = torch.device(device) if device and device != "cuda" else state.device
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise ValueError(f"dtype={dtype!r} is not supported; choose float32, bfloat16 or float16.")
    configs = run_configs(methods, keep_ratios)
    model_path = str(model) if model else str(DEFAULT_MODEL)
    data = data or DataSpec()
    ds = load_data(data)
    n = len(ds) if limit is None else min(limit, len(ds))
    base, processor = load_classifier(model_path)
    base = base.to(dev, torch_dtype).eval()
    names = label_names(ds, data.label_column)
    num_labels = len(names) if names else int(max(ds[data.label_column][:n])) + 1
    mapping = label_mapping(base.config, names, num_labels)
    with state.split_between_processes(list(range(n))) as shard:
        batches = ImageBatches(ds, shard, processor, data, batch_size, torch_dtype, dev)
    image_size = int(next(iter(batches))[0].shape[-1]) if shard else base.config.image_size
    patch = base.config.patch_size if isinstance(base.config.patch_size, int) else base.config.patch_size[0]
    show = progress and state.is_local_main_process
    results = []
    for method, ratio in configs:
        net = apply_pitome(base, merge_method=method, keep_ratio=ratio)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        preds, refs, order, seconds = classify(net, batches, mapping, show, f"{method} {ratio}")
        gathered = gather_object([(order, preds, refs, seconds, len(order), peak_memory_mb(dev))])
        by_index = {}
        for o, p, r, _, _, _ in gathered:
            by_index.update({i: (pi, ri) for i, pi, ri in zip(o, p, r)})
        keys = sorted(by_index)
        metric = load_metric("accuracy")
        metric.add_batch(predictions=[by_index[i][0] for i in keys], references=[by_index[i][1] for i in keys])
        slowest = max(g[3] for g in gathered)
        results.append(
            RunResult(
                method=method,
                keep_ratio=ratio,
                metrics=metric.compute(),
                gflops=vit_flops(net.config, image_size=image_size) / 1e9,
                images_per_s=sum(g[4] for g in gathered) / slowest if slowest > 0 else float("nan"),
                peak_memory_mb=max(g[5] for g in gathered),
                num_samples=len(keys),
                token_counts=token_schedule(net.config, num_tokens=(image_size // patch) ** 2),
            )
        )
    return {
        "schema": SCHEMA,
        "task": task,
        "model": model_path,
        "dataset": {"path": str(data.path or DEFAULT_DATASET), "split": data.split,
                    "image_column": data.image_column, "label_column": data.label_column},
        "num_samples": n,
        "device": str(dev) if state.num_processes == 1 else f"{state.num_processes} x {dev.type}",
        "num_processes": state.num_processes,
        "dtype": dtype,
        "batch_size": batch_size,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "machine": platform.machine(), "threads": torch.get_num_threads()},
        "results": [r.__dict__ for r in results],
    }


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
    if not report["results"]:
        raise ValueError("evaluation report has no results.")
    for i, row in enumerate(report["results"]):
        lacking = RESULT_KEYS - set(row)
        if lacking:
            raise ValueError(f"evaluation result {i} lacks the keys {sorted(lacking)}.")
        if row["method"] not in METHODS or not row["metrics"]:
            raise ValueError(f"evaluation result {i} has method {row['method']!r} or no metrics.")
    return report


def primary_metric(report: dict) -> str:
    return next(iter(report["results"][0]["metrics"]))


def markdown_table(report: dict) -> str:
    name = primary_metric(report)
    lines = [f"| method | keep ratio | {name} | GFLOPs | images/s | peak memory (MB) |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(
            f"| {r['method']} | {r['keep_ratio']:.2f} | {100 * r['metrics'][name]:.2f} | {r['gflops']:.4f} | "
            f"{r['images_per_s']:.0f} | {r['peak_memory_mb']:.0f} |"
        )
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = primary_metric(report)
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"none": ("k", "*"), "tome": ("tab:blue", "o"), "pitome": ("tab:red", "s")}
    for method in METHODS:
        rows = sorted((r for r in report["results"] if r["method"] == method), key=lambda r: r["gflops"])
        if rows:
            color, marker = styles[method]
            ax.plot([r["gflops"] for r in rows], [100 * r["metrics"][name] for r in rows], marker=marker,
                    color=color, label={"none": "unmerged", "tome": "ToMe", "pitome": "PiToMe"}[method],
                    markersize=10 if method == "none" else 6)
    ax.set_xlabel("GFLOPs per image")
    ax.set_ylabel(f"{name} (%)")
    ax.set_title(f"{Path(report['model']).name}: {name} against compute")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict, out_dir: Path) -> dict:
    """results.json, results.csv, results.md and results.png in out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"results.{k}" for k in ("json", "csv", "md", "png")}
    paths["json"].write_text(json.dumps(report, indent=2))
    metric_names = list(report["results"][0]["metrics"])
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "keep_ratio", *metric_names, "gflops", "images_per_s", "peak_memory_mb"])
        for r in report["results"]:
            writer.writerow([r["method"], r["keep_ratio"], *(r["metrics"][m] for m in metric_names), r["gflops"],
                             r["images_per_s"], r["peak_memory_mb"]])
    paths["md"].write_text(markdown_table(report) + "\n")
    plot(report, paths["png"])
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pitome-hf evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Hub id or folder (stock or PiToMe); default: embedded model")
    parser.add_argument("--dataset", default=None, help="Hub id, folder, parquet/csv/json or .npz; default: embedded")
    parser.add_argument("--split", default="test")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--task", default="image-classification", choices=TASKS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--keep-ratios", nargs="+", type=float, default=list(DEFAULT_KEEP_RATIOS))
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--out", default="out/evaluate", help="folder for results.json/.csv/.md/.png")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = evaluate_model(
        model=args.model,
        data=DataSpec(args.dataset, args.split, args.image_column, args.label_column),
        task=args.task,
        methods=args.methods,
        keep_ratios=args.keep_ratios,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        limit=args.limit,
        progress=not args.no_progress,
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

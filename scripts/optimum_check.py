"""optimum's ONNX Runtime classes on a folder written by `pitome-hf export`, as a user of optimum loads it (issue #34).

    bash scripts/setup_optimum_env.sh            # once: .venv-optimum (optimum-onnx 0.1.0 needs transformers < 4.58)
    .venv/bin/python scripts/optimum_check.py    # [--keep-ratio 0.9] [--merge-method pitome] [--n 12]

With our environment it exports the embedded Fashion-MNIST ViT (`pitome-hf export default`, a dynamic batch, the
merge settings given) to out/optimum/fmnist-onnx, writes the first N test images as PNG files, and computes the
PyTorch PiToMe model's class probabilities on them. Then, in optimum's environment (--optimum-python, default
.venv-optimum/bin/python; transformers 4.57 there, no pitome_hf), it runs

    model = ORTModelForImageClassification.from_pretrained(folder)
    classify = pipeline("image-classification", model=model, image_processor=AutoImageProcessor.from_pretrained(folder),
                        batch_size=3)
    classify(images, top_k=10)

and compares the pipeline's probabilities with PyTorch's (max abs difference, top-1 agreement). Exits 1 when optimum
does not load the folder or the probabilities differ by more than 1e-4.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIMUM_SIDE = r'''
import json, sys, warnings
warnings.filterwarnings("ignore")
from PIL import Image
import optimum.onnxruntime, transformers
from optimum.onnxruntime import ORTModelForImageClassification
from transformers import AutoImageProcessor, pipeline

folder, images = sys.argv[1], json.loads(sys.argv[2])
model = ORTModelForImageClassification.from_pretrained(folder)
classify = pipeline("image-classification", model=model, image_processor=AutoImageProcessor.from_pretrained(folder),
                    batch_size=3)
out = classify([Image.open(p) for p in images], top_k=10)
print(json.dumps({"class": type(model).__name__, "config": type(model.config).__name__,
                  "model_type": model.config.model_type, "keep_ratio": model.config.keep_ratio,
                  "merge_method": model.config.merge_method, "transformers": transformers.__version__,
                  "scores": [{d["label"]: d["score"] for d in row} for row in out]}))
'''


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimum-python", default=str(ROOT / ".venv-optimum" / "bin" / "python"))
    parser.add_argument("--output", default=str(ROOT / "out" / "optimum"))
    parser.add_argument("--keep-ratio", type=float, default=0.9)
    parser.add_argument("--merge-method", default="pitome")
    parser.add_argument("--n", type=int, default=12, help="test images (default: %(default)s)")
    args = parser.parse_args(argv)
    if not Path(args.optimum_python).is_file():
        print(f"error: {args.optimum_python} does not exist: run `bash scripts/setup_optimum_env.sh` first.",
              file=sys.stderr)
        return 1

    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor

    from pitome_hf import PiToMeViTForImageClassification
    from pitome_hf.commands.export import main as export_main
    from pitome_hf.paths import DEFAULT_DATASET, DEFAULT_MODEL

    out = Path(args.output)
    folder = out / "fmnist-onnx"
    export_argv = ["default", "--output", str(folder), "--merge-method", args.merge_method, "--keep-ratio",
                   str(args.keep_ratio)] + (["--force"] if folder.exists() else [])
    print("$ pitome-hf export " + " ".join(export_argv))
    if export_main(export_argv) != 0:
        return 1
    data = np.load(DEFAULT_DATASET)
    (out / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(args.n):
        path = out / "images" / f"{i:03d}.png"
        Image.fromarray(data["images"][i]).save(path)
        paths.append(str(path))
    model = PiToMeViTForImageClassification.from_pretrained(DEFAULT_MODEL, merge_method=args.merge_method,
                                                            keep_ratio=args.keep_ratio).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    inputs = processor([Image.open(p) for p in paths], return_tensors="pt")
    with torch.inference_mode():
        want = model(**inputs).logits.softmax(-1).numpy()
    labels = [model.config.id2label[i] for i in range(want.shape[1])]

    print(f"$ {Path(args.optimum_python).relative_to(ROOT) if Path(args.optimum_python).is_relative_to(ROOT) else args.optimum_python}"
          f" -c '<ORTModelForImageClassification + pipeline(batch_size=3)>' {folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}")
    proc = subprocess.run([args.optimum_python, "-c", OPTIMUM_SIDE, str(folder), json.dumps(paths)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        print(f"error: optimum did not load or run {folder}: {lines[-1] if lines else 'the process failed'}",
              file=sys.stderr)
        return 1
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    scores = np.array([[row[label] for label in labels] for row in got["scores"]])
    diff = float(np.abs(scores - want).max())
    top1 = float((scores.argmax(-1) == want.argmax(-1)).mean())
    print(f"optimum: {got['class']} with a {got['config']} (model_type {got['model_type']!r}, merge_method "
          f"{got['merge_method']!r}, keep_ratio {got['keep_ratio']}), transformers {got['transformers']}")
    print(f"pipeline('image-classification', batch_size=3) on {len(paths)} test images vs the PyTorch PiToMe model: "
          f"max abs diff of probabilities {diff:.2g}, top-1 agreement {top1:.3f}")
    print("first image: " + ", ".join(f"{labels[i]} {scores[0, i]:.4f} (PyTorch {want[0, i]:.4f})"
                                      for i in np.argsort(-want[0])[:2]))
    return 0 if diff <= 1e-4 and top1 == 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

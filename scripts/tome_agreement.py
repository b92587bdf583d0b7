"""Is `merge_method="tome"` the original ToMe over every layer? Ours against an independent original, on real weights.

    python scripts/tome_agreement.py                          # embedded Fashion-MNIST ViT, its 10,000 test images
    python scripts/tome_agreement.py --n 2000 --spatial       # also the spatial-order option (keep_order=True)

The embedded ViT (28 px, 49 patches, 4 layers) classifies the test split with ToMe in every layer, once through
pitome_hf (`merge_method="tome"`, its default output order) and once through tests/reference_tome.py, the original
ToMe written in its own formulation (class token in A at -inf, unmerged A sorted behind it, then B), which imports
nothing from pitome_hf. Printed per schedule: the share of images whose predictions agree, the largest logit
difference, and each one's accuracy. With --spatial the same for `keep_order=True` (every survivor in spatial order),
which changes the next layer's parity split. Exit code 1 when an agreement of the default order is below 99.9%.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCHEDULES = {"keep 0.75": dict(keep_ratio=0.75), "r 2": dict(merge_r=2), "r 8": dict(merge_r=8),
             "r 12": dict(merge_r=12)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000, help="test images (default: all %(default)s)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES))
    parser.add_argument("--spatial", action="store_true", help="also measure keep_order=True")
    args = parser.parse_args(argv)

    from transformers import AutoImageProcessor

    from pitome_hf.evaluation.evaluate import DEFAULT_DATASET, DEFAULT_MODEL
    from pitome_hf.modeling import PiToMeViTForImageClassification
    from pitome_hf.modeling.merge_config import MergeSettings
    from tests import reference_tome

    data = np.load(DEFAULT_DATASET)
    images, labels = data["images"][: args.n], torch.from_numpy(data["labels"][: args.n].astype(np.int64))
    processor = AutoImageProcessor.from_pretrained(DEFAULT_MODEL)
    pixels = processor(images=list(np.repeat(images[..., None], 3, axis=-1)), return_tensors="pt")["pixel_values"]
    print(f"embedded Fashion-MNIST ViT, {len(pixels)} test images, torch {torch.__version__}: pitome_hf "
          "merge_method='tome' vs the original ToMe (tests/reference_tome.py), ToMe in every layer", flush=True)
    worst = 1.0
    orders = [None, True] if args.spatial else [None]
    for name in args.schedules:
        for keep_order in orders:
            model = PiToMeViTForImageClassification.from_pretrained(
                DEFAULT_MODEL, merge_method="tome", keep_order=keep_order, **SCHEDULES[name]).eval()
            settings = MergeSettings.from_config(model.config)
            ours, theirs = [], []
            with torch.inference_mode():
                for start in range(0, len(pixels), args.batch_size):
                    x = pixels[start : start + args.batch_size]
                    ours.append(model(pixel_values=x).logits)
                    theirs.append(reference_tome.vit_logits(model, x, lambda layer, T: settings.budget(T, layer),
                                                            proportional=model.config.proportional_attention))
            ours, theirs = torch.cat(ours), torch.cat(theirs)
            agree = float((ours.argmax(-1) == theirs.argmax(-1)).double().mean())
            label = "default order" if keep_order is None else "keep_order=True (spatial)"
            print(f"{name:>9}, {label}: predictions agree on {agree:.2%}, largest logit difference "
                  f"{float((ours - theirs).abs().max()):.2e}; accuracy ours {float((ours.argmax(-1) == labels).double().mean()):.4f}, "
                  f"original {float((theirs.argmax(-1) == labels).double().mean()):.4f}", flush=True)
            if keep_order is None:
                worst = min(worst, agree)
    return 0 if worst >= 0.999 else 1


if __name__ == "__main__":
    raise SystemExit(main())

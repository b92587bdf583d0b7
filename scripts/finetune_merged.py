"""The paper's "retrained" claim, small: fine-tune the embedded default with merging on, through transformers' Trainer.

For each (method, keep ratio) the embedded Fashion-MNIST ViT is fine-tuned with that merging active in every forward
(gathers and weighted averages are differentiable), then evaluated on the test split with the same merging. The
unmerged model gets the same schedule as a control, so that what fine-tuning recovers is not mistaken for the effect
of more training. Each fine-tuned row is compared with its off-the-shelf row on the same test images (paired
bootstrap 95% interval, pitome_hf.commands.study.paired_interval). The fine-tuned weights are not kept.

    apt-get install dataset-fashion-mnist
    python scripts/finetune_merged.py                    # ToMe and PiToMe at 0.8 and 0.75 + control, 1 epoch each
    python scripts/finetune_merged.py --epochs 2 --out out/finetune
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from train_default import load_split, to_pixels  # noqa: E402  (the same data reader and pixel mapping)


class PixelDataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": to_pixels(self.images[i : i + 1])[0], "labels": self.labels[i]}


@torch.no_grad()
def correct_per_item(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    model.eval()
    preds = [model(pixel_values=to_pixels(images[i : i + batch_size])).logits.argmax(-1) for i in range(0, len(images), batch_size)]
    return (torch.cat(preds) == labels).numpy()


def main() -> int:
    from transformers import Trainer, TrainingArguments

    from pitome_hf import PiToMeViTForImageClassification, apply_pitome
    from pitome_hf.evaluation.evaluate import DEFAULT_MODEL
    from pitome_hf.commands.study import paired_interval

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--methods", nargs="+", default=["tome", "pitome"])
    parser.add_argument("--keep-ratios", nargs="+", type=float, default=[0.8, 0.75])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("out/finetune"))
    args = parser.parse_args()
    if not (args.data_dir / "train-images-idx3-ubyte.gz").exists() and not (args.data_dir / "train-images-idx3-ubyte").exists():
        print(f"error: no Fashion-MNIST training split in {args.data_dir}: apt-get install dataset-fashion-mnist "
              "(or pass --data-dir)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    train_x, train_y = (torch.from_numpy(a.copy()) for a in load_split(args.data_dir, "train"))
    test_x, test_y = (torch.from_numpy(a.copy()) for a in load_split(args.data_dir, "test"))
    train_y, test_y = train_y.long(), test_y.long()
    base = PiToMeViTForImageClassification.from_pretrained(DEFAULT_MODEL, merge_method="none")
    runs = [("none", 1.0)] + [(m, r) for r in args.keep_ratios for m in args.methods]
    rows = []
    for method, ratio in runs:
        off = apply_pitome(base, merge_method=method, keep_ratio=ratio)
        before = correct_per_item(off, test_x, test_y)
        model = PiToMeViTForImageClassification.from_pretrained(DEFAULT_MODEL, merge_method=method, keep_ratio=ratio)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            training = TrainingArguments(
                output_dir=tmp, num_train_epochs=args.epochs, learning_rate=args.lr, weight_decay=0.05,
                per_device_train_batch_size=args.batch_size, lr_scheduler_type="cosine", warmup_steps=0.05,
                save_strategy="no", report_to=[], logging_steps=100, use_cpu=True, seed=0, dataloader_num_workers=0,
                disable_tqdm=True,
            )
            Trainer(model=model, args=training, train_dataset=PixelDataset(train_x, train_y)).train()
        seconds = time.perf_counter() - start
        after = correct_per_item(model, test_x, test_y)
        row = dict(method=method, keep_ratio=ratio, off_the_shelf=float(before.mean()), fine_tuned=float(after.mean()),
                   gain=paired_interval(after, before), train_seconds=seconds)
        rows.append(row)
        print(f"{method} {ratio}: off the shelf {100 * row['off_the_shelf']:.2f}%, fine-tuned {100 * row['fine_tuned']:.2f}% "
              f"({seconds:.0f} s)", flush=True)
    control = rows[0]["fine_tuned"]
    lines = ["| method | keep ratio | off the shelf | fine-tuned | gain [95% CI] | fine-tuned - fine-tuned unmerged |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        d, lo, hi = r["gain"]
        lines.append(f"| {r['method']} | {r['keep_ratio']} | {100 * r['off_the_shelf']:.2f} | {100 * r['fine_tuned']:.2f} | "
                     f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] | {100 * (r['fine_tuned'] - control):+.2f} |")
    table = "\n".join(lines)
    result = dict(command="python scripts/finetune_merged.py " + " ".join(sys.argv[1:]), epochs=args.epochs, lr=args.lr,
                  batch_size=args.batch_size, threads=args.threads, rows=rows, table=table)
    (args.out / "finetune.json").write_text(json.dumps(result, indent=1))
    (args.out / "finetune.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

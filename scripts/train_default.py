"""Train the embedded default model: a small ViT classifier on Fashion-MNIST (CPU, offline).

Data: the Debian package `dataset-fashion-mnist` (idx files under /usr/share/datasets/fashion-mnist, MIT licence,
Zalando Research, https://github.com/zalandoresearch/fashion-mnist). The model is a stock
`ViTForImageClassification`, saved at the end in the PiToMe ViT format (merge_method="pitome", keep_ratio=0.9)
together with a PIL image processor, so that any grayscale or RGB image works through `pipeline`.

    apt-get install dataset-fashion-mnist
    python scripts/train_default.py --export-test      # 15 epochs, 1 thread: about 37 min (2 runs side by side on 2 cores)
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil, get_cosine_schedule_with_warmup

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "pitome_hf" / "assets"
DEBIAN_COPYRIGHT = Path("/usr/share/doc/dataset-fashion-mnist/copyright")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MODEL = dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=4, intermediate_size=192)


def read_idx(data_dir: Path, name: str) -> np.ndarray:
    """Read an idx file (`name` or `name.gz`) into a uint8 array shaped as its header says."""
    path = data_dir / name
    if not path.exists():
        path = data_dir / f"{name}.gz"
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    return read_idx(data_dir, f"{prefix}-images-idx3-ubyte"), read_idx(data_dir, f"{prefix}-labels-idx1-ubyte")


def export_test(data_dir: Path, assets: Path = ASSETS) -> None:
    """Write the test split as a compressed npz and the dataset's MIT licence next to it."""
    images, labels = load_split(data_dir, "test")
    assets.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(assets / "fashion_mnist_test.npz", images=images, labels=labels, classes=np.array(CLASSES))
    stanzas = DEBIAN_COPYRIGHT.read_text().split("\n\n")
    licence = next(s for s in stanzas if s.startswith("License: Expat\n"))  # the stand-alone licence paragraph
    body = "\n".join("" if line.strip() == "." else line[1:].rstrip() for line in licence.splitlines()[1:])
    (assets / "FASHION_MNIST_LICENSE.txt").write_text(
        "Fashion-MNIST test split (pitome_hf/assets/fashion_mnist_test.npz)\n"
        "Source: Zalando Research, https://github.com/zalandoresearch/fashion-mnist\n"
        "Licence text as in the Debian package dataset-fashion-mnist (/usr/share/doc/dataset-fashion-mnist/copyright).\n\n"
        "The MIT License (MIT)\n\nCopyright (c) 2017 Zalando SE, https://tech.zalando.com\n\n" + body.strip() + "\n"
    )
    print(f"wrote {assets / 'fashion_mnist_test.npz'} and {assets / 'FASHION_MNIST_LICENSE.txt'}")


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float (B, 3, 28, 28), as the image processor does: x / 255, mean 0.5, std 0.5."""
    x = images.float().div(255).sub(0.5).div(0.5)
    return x.unsqueeze(1).expand(-1, 3, -1, -1)


AUGMENTATIONS = {
    "crop-flip": "random crop (zero padding 2), horizontal flip",
    "flip": "horizontal flip",
    "none": "none",
}


def augment(images: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop after zero padding by `pad` (none when `pad` is 0), and random horizontal flip, on a uint8 batch."""
    b, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1), generator=gen)
    rows = dy + torch.arange(h)
    cols = dx + torch.arange(w)
    flip = torch.rand(b, 1, generator=gen) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)
    return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = sum(
        (model(pixel_values=to_pixels(images[i : i + batch_size])).logits.argmax(-1) == labels[i : i + batch_size]).sum().item()
        for i in range(0, len(images), batch_size)
    )
    return correct / len(images)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ASSETS / "fashion-mnist-vit")
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--warmup-epochs", type=float, default=0.3)
    parser.add_argument("--augment", choices=sorted(AUGMENTATIONS), default="flip")
    parser.add_argument("--export-test", action="store_true", help="also write the test split npz and licence")
    parser.add_argument("--hidden", type=int, default=MODEL["hidden_size"])
    parser.add_argument("--layers", type=int, default=MODEL["num_hidden_layers"])
    parser.add_argument("--heads", type=int, default=MODEL["num_attention_heads"])
    parser.add_argument("--mlp", type=int, default=MODEL["intermediate_size"])
    return parser.parse_args(argv)


def build_model():
    config = ViTConfig(
        image_size=28, patch_size=4, num_channels=3, **MODEL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)},
        attn_implementation="eager",  # faster than sdpa for these tiny shapes on CPU
    )
    return ViTForImageClassification(config)


def train(model, args, train_x, train_y, test_x, test_y) -> tuple[float, float]:
    """AdamW with weight decay on matrices (not embeddings), cosine schedule with warm-up; returns (last test accuracy,
    wall time in s)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    steps_per_epoch = math.ceil(len(train_x) / args.batch_size)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(args.warmup_epochs * steps_per_epoch), args.epochs * steps_per_epoch
    )
    gen = torch.Generator().manual_seed(args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"ViT {MODEL}, {n_params:,} parameters, {args.epochs} epochs x {steps_per_epoch} steps", flush=True)

    start = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        total, t0 = 0.0, time.time()
        for idx in torch.randperm(len(train_x), generator=gen).split(args.batch_size):
            batch = train_x[idx] if args.augment == "none" else augment(train_x[idx], gen, pad=2 if args.augment == "crop-flip" else 0)
            logits = model(pixel_values=to_pixels(batch)).logits
            loss = F.cross_entropy(logits, train_y[idx], label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
        acc = accuracy(model, test_x, test_y)
        print(
            f"epoch {epoch}/{args.epochs} loss {total / len(train_x):.4f} test_acc {acc:.4f} "
            f"epoch_s {time.time() - t0:.0f} total_s {time.time() - start:.0f}",
            flush=True,
        )
    return acc, time.time() - start


def save(model, args, acc: float, wall: float) -> None:
    from pitome_hf import apply_pitome

    args.out.mkdir(parents=True, exist_ok=True)
    pit = apply_pitome(model.eval(), merge_method="pitome", keep_ratio=0.9)
    pit.save_pretrained(args.out)
    # The embedded default is always loaded through the installed package, which registers the PiToMe classes:
    # drop the remote-code copies save_pretrained writes, so the package never ships a stale second copy.
    for code in args.out.glob("*.py"):
        code.unlink()
    ViTImageProcessorPil(
        size={"height": 28, "width": 28}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        resample=Image.Resampling.BILINEAR, do_convert_rgb=True,
    ).save_pretrained(args.out)
    n_params = sum(p.numel() for p in model.parameters())
    log = {
        "dataset": "Fashion-MNIST (Zalando Research, MIT), Debian package dataset-fashion-mnist",
        "model": {"image_size": 28, "patch_size": 4, "num_channels": 3, **MODEL, "parameters": n_params},
        "hyperparameters": {
            k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "warmup_epochs", "seed", "threads")
        } | {"optimizer": "AdamW", "schedule": "cosine with linear warmup", "grad_clip": 1.0,
             "augmentation": AUGMENTATIONS[args.augment], "normalisation": "mean 0.5, std 0.5"},
        "wall_time_s": round(wall, 1),
        "test_accuracy_unmerged": acc,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (args.out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    print(f"saved {args.out}; unmerged test accuracy {acc:.4f}; wall time {wall:.0f}s", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    MODEL.update(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                 intermediate_size=args.mlp)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    if args.export_test:
        export_test(args.data_dir)
    if args.epochs <= 0:
        return
    train_x, train_y = (torch.from_numpy(a.copy()) for a in load_split(args.data_dir, "train"))
    test_x, test_y = (torch.from_numpy(a.copy()) for a in load_split(args.data_dir, "test"))
    model = build_model()
    acc, wall = train(model, args, train_x, train_y.long(), test_x, test_y.long())
    save(model, args, acc, wall)


if __name__ == "__main__":
    main()

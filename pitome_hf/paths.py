"""Where the package's own assets are (pitome_hf/assets): the embedded default model and dataset that `evaluate`,
`benchmark default`, `study`, `fidelity`, `export`, the scripts and the Space fall back on."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"  # pitome_hf/assets
DEFAULT_MODEL = ASSETS / "fashion-mnist-vit"  # the embedded Fashion-MNIST ViT (real weights)
DEFAULT_DATASET = ASSETS / "fashion_mnist_test.npz"  # its test split

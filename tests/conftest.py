import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_vit_kwargs(**overrides):
    """A ViT-B/16-shaped token layout (224 px, patch 16 -> 196 patches, 12 layers) with a tiny width."""
    values = dict(
        hidden_size=32,
        num_hidden_layers=12,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=224,
        patch_size=16,
        num_labels=5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    values.update(overrides)
    return values


@pytest.fixture
def vit_kwargs():
    return tiny_vit_kwargs


@pytest.fixture(scope="session")
def stock_vit_dir(tmp_path_factory):
    """A stock ViTForImageClassification checkpoint saved by transformers (legacy key names on disk)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stock_vit")
    model = ViTForImageClassification(ViTConfig(**tiny_vit_kwargs(image_size=64, patch_size=8, num_hidden_layers=4)))
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(path)
    return path

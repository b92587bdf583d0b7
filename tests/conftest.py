import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

from .helpers import tiny_kwargs  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_vit_kwargs(**overrides):
    return tiny_kwargs("vit", **overrides)


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

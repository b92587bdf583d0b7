"""Remote code: a saved PiToMe ViT folder loads with trust_remote_code alone, in a process without pitome_hf."""

import json

import numpy as np
import torch
from PIL import Image

from pitome_hf import PiToMeViTForImageClassification

from .helpers import run_fresh


def test_saved_folder_loads_through_remote_code(stock_vit_dir, tmp_path):
    from transformers import AutoImageProcessor

    model = PiToMeViTForImageClassification.from_pretrained(stock_vit_dir, keep_ratio=0.8, trace_source=True).eval()
    folder = tmp_path / "pitome-vit"
    model.save_pretrained(folder)
    AutoImageProcessor.from_pretrained(stock_vit_dir).save_pretrained(folder)
    files = {p.name for p in folder.iterdir()}
    assert {"configuration_pitome_vit.py", "modeling_pitome_vit.py", "merging.py", "config.json"} <= files
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForImageClassification"}

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype("uint8")).save(tmp_path / "img.png")
    with torch.no_grad():
        expected = model(x)

    got = run_fresh(
        f"""
        import json, torch
        from transformers import AutoModel, AutoModelForImageClassification, pipeline
        folder = {str(folder)!r}
        model, info = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True,
                                                                      output_loading_info=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        x = torch.load("x.pt")
        with torch.no_grad():
            out = model.eval()(x)
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        clf = pipeline("image-classification", model=folder, trust_remote_code=True)
        preds = clf("img.png", top_k=2)
        print(json.dumps({{"logits": out.logits.tolist(), "counts": out.token_counts.tolist(),
                          "token_map": out.token_map.tolist(), "base": type(base).__name__,
                          "missing": sorted(info["missing_keys"]), "unexpected": sorted(info["unexpected_keys"]),
                          "labels": [p["label"] for p in preds]}}))
        """,
        tmp_path,
    )
    assert got["missing"] == [] and got["unexpected"] == []
    assert torch.equal(torch.tensor(got["logits"]), expected.logits)
    assert got["counts"] == expected.token_counts.tolist()
    assert torch.equal(torch.tensor(got["token_map"]), expected.token_map)
    assert got["base"] == "PiToMeViTModel"
    assert len(got["labels"]) == 2 and set(got["labels"]) <= set(model.config.id2label.values())

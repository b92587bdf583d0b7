"""LLaVA-OneVision through `pipeline("image-text-to-text", model=folder, trust_remote_code=True)` on a converted folder
(issue 34), where pitome_hf is not installed: a tiny stock checkpoint folder made here (random weights, a word-level
tokenizer, the stock image processor at 16 px tiles) is converted with a visual-token budget, and a fresh process
without pitome_hf runs the pipeline through the folder's remote code. Its processor writes the budgeted number of
`<image>` tokens (the count the model's image features have), and its answer is the greedy continuation of the PiToMe
model built here from the stock weights. As in tests/test_vlm_tools.py, a plain `BaseVideoProcessor` stands in for
the stock video processor (it needs torchvision, absent here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from pitome_hf import apply_pitome
from pitome_hf.commands.convert import convert_checkpoint

from .contract_fixtures import ONEVISION_IMAGE, ONEVISION_PINPOINTS, ONEVISION_VIDEO, llava_onevision_config
from .helpers import run_fresh, word_tokenizer
from .test_vlm_tools import VIDEO_STAND_IN, video_stand_in  # noqa: F401  (fixture)

PROMPT = "w1 <image> w2"


@pytest.fixture(scope="module")
def stock_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("onevision_stock")
    torch.manual_seed(0)
    transformers.LlavaOnevisionForConditionalGeneration(llava_onevision_config()).save_pretrained(root)
    word_tokenizer({"<image>": ONEVISION_IMAGE, "<video>": ONEVISION_VIDEO}).save_pretrained(root)
    transformers.LlavaOnevisionImageProcessorPil(size={"height": 16, "width": 16},
                                                 image_grid_pinpoints=ONEVISION_PINPOINTS).save_pretrained(root)
    return root


def test_image_text_to_text_pipeline_serves_a_converted_onevision_folder(stock_folder, tmp_path,
                                                                         video_stand_in):  # noqa: F811
    out = convert_checkpoint(str(stock_folder), tmp_path / "onevision-pitome", visual_tokens=4)
    image = (np.random.default_rng(0).random((16, 32, 3)) * 255).astype("uint8")  # 16 x 32 px: base + 2 crops
    np.save(tmp_path / "image.npy", image)
    got = run_fresh(VIDEO_STAND_IN + f'''
import json, numpy as np, torch, transformers
from PIL import Image
image = Image.fromarray(np.load({str(tmp_path / "image.npy")!r}))
pipe = transformers.pipeline("image-text-to-text", model={str(out)!r}, trust_remote_code=True)
answer = pipe(images=image, text={PROMPT!r}, max_new_tokens=4, do_sample=False, return_full_text=False)
x = pipe.processor(text=[{PROMPT!r}], images=[image], return_tensors="pt")
with torch.no_grad():
    features = pipe.model.model.get_image_features(x["pixel_values"], x["image_sizes"])
features = getattr(features, "pooler_output", features)
print(json.dumps(dict(model=type(pipe.model).__name__, module=type(pipe.model).__module__,
                      processor=type(pipe.processor).__name__, ids=x["input_ids"].tolist(),
                      features=sum(int(f.shape[0]) for f in features), answer=answer[0]["generated_text"])))
''', tmp_path)
    assert got["model"] == "PiToMeLlavaOnevisionForConditionalGeneration"
    assert got["module"].startswith("transformers_modules") and got["processor"] == "PiToMeLlavaOnevisionProcessor"
    ids = torch.tensor(got["ids"])
    tokens = int((ids == ONEVISION_IMAGE).sum())
    assert tokens == got["features"]  # the processor writes the count the reduced model gives
    # the stock count for this image, to show the budget took effect
    stock = transformers.LlavaOnevisionForConditionalGeneration.from_pretrained(stock_folder).eval()
    pixels = transformers.AutoImageProcessor.from_pretrained(stock_folder)(images=[image], return_tensors="pt")
    with torch.no_grad():
        full = stock.model.get_image_features(pixels["pixel_values"], pixels["image_sizes"])
    full = sum(int(f.shape[0]) for f in getattr(full, "pooler_output", full))
    assert tokens < full, (tokens, full)
    # the answer is the PiToMe model's greedy continuation (the same weights, the same budget, built here)
    model = apply_pitome(stock, visual_tokens=4)
    with torch.no_grad():
        new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                             **pixels)[0, ids.shape[1]:]
    want = transformers.AutoTokenizer.from_pretrained(stock_folder).decode(new, skip_special_tokens=True).strip()
    assert got["answer"].strip() and got["answer"].strip() == want

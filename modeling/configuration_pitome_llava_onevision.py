# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of PiToMe LLaVA-OneVision: a `LlavaOnevisionConfig` plus the visual-token reduction settings.

The reduction runs once per image at the language model's input, after the projector and the stock AnyRes packing
(see modeling_pitome_llava_onevision.py for the whole design). An image's stock features, as the language model
reads them, are: the base image's P x P features (P = image_size // patch_size), then, when the image is cut into
crops, the crops' features unpadded (and interpolated down under `vision_aspect_ratio`) as a grid of `rows` x `cols`
features, each row followed by one newline token; an image of a several-image prompt has no crops and is followed by
one newline token.

Budgets, per image, for the image *features* (the newline tokens are not features: they are kept, in place, and come
on top of the budget), one of the two (giving both is refused, and the one given replaces the other:
`merge_fields.resolve_budgets`):
* `visual_tokens=K`: K features per image. An image with crops splits K between its base and its crops in
  proportion to their stock counts: base round(K * n_base / n), clamped so that each part keeps at least one and at
  most its own count; crops the rest. K above the image's feature count (or K = 1 for an image with crops) is
  refused with the allowed range.
* otherwise `keep_ratio=rho`: each part keeps n - floor(n - n * rho) of its n features (`merging.tokens_kept`, the
  rule `merging.layer_budget` clamps to floor(n/2); unclamped here).
* `merge_method="none"` (or `merge_layers` without 0) reduces nothing.

`onevision_image_budget` is the one count function: the processor (how many `<image>` tokens it writes) and the model
(how many features it keeps of the base and of the crops) both call it.

Videos: the stock model reads each frame as one tile, pools its P x P features to ceil(P/2) x ceil(P/2) and puts one
newline token after the last frame. The budget is per frame (`onevision_video_budget`, the one count function of
videos): `visual_tokens=K` keeps K features of every frame, `keep_ratio` n - floor(n - n * rho) of each frame's n; the
newline comes on top. Per frame, because the frames follow each other with no separator and a frame is a moment of the
video: each keeps its share (none is merged away into another), and a token never merges with another frame's.
"""

import math
from dataclasses import dataclass
from types import SimpleNamespace

from transformers import LlavaOnevisionConfig

from .language_input_reduction import VisualBudgetConfigMixin, ratio_keep, reduces, reduction_settings
from .merging import tokens_kept


@dataclass(frozen=True)
class OnevisionImageBudget:
    """One image's stock layout and budget: `base` features (P x P), a crop grid of `rows` x `cols` features (0 x 0
    without crops), `newlines` tokens, and the features kept of the base (`keep_base`) and of the crops
    (`keep_crops`)."""

    base: int
    rows: int
    cols: int
    newlines: int
    keep_base: int
    keep_crops: int

    @property
    def stock_tokens(self) -> int:
        return self.base + self.rows * self.cols + self.newlines

    @property
    def tokens(self) -> int:
        """Image tokens the language model receives (features kept plus newlines): what the processor writes."""
        return self.keep_base + self.keep_crops + self.newlines


def _crop_grid(height, width, pinpoints, tile, patches, aspect):
    """(rows, cols) of the unpadded (and, under `aspect` = "anyres_max_<m>", interpolated) crop features of an
    image of `height` x `width` pixels: the arithmetic of the stock processor's `_get_number_of_features`, which the
    stock model's packing follows."""
    from transformers.image_processing_utils import select_best_resolution

    best_h, best_w = select_best_resolution([height, width], pinpoints)
    rows, cols = patches * (best_h // tile), patches * (best_w // tile)
    if width / height > cols / rows:
        rows -= (rows - int(round(height * (cols / width), 7))) // 2 * 2
    else:
        cols -= (cols - int(round(width * (rows / height), 7))) // 2 * 2
    ratio = math.sqrt(rows * cols / (int(aspect.strip("anyres_max_")) * patches ** 2))
    if ratio > 1.1:
        rows, cols = int(rows // ratio), int(cols // ratio)
    return rows, cols


def onevision_image_budget(settings, image_size, multi_image: bool, *, tile: int, patches: int, pinpoints,
                           aspect: str = "anyres_max_9", select_strategy: str = "full") -> OnevisionImageBudget:
    """The stock layout of one image of `image_size` = (height, width) pixels and the features kept of it.

    `settings`: a PiToMe LLaVA-OneVision config or any object with the merge fields (the processor's view); `tile`:
    the vision tower's input side in pixels; `patches`: features per side of a tile; `pinpoints`: the AnyRes
    resolutions; `multi_image`: the image is one of several in its prompt (no crops). Raises ValueError for a budget
    the image cannot meet."""
    base = patches * patches
    rows, cols = (0, 0) if multi_image else _crop_grid(int(image_size[0]), int(image_size[1]), pinpoints, tile,
                                                       patches, aspect)
    newlines = rows if rows else 1
    crops = rows * cols
    merge = reduction_settings(settings)
    if not reduces(merge):
        return OnevisionImageBudget(base, rows, cols, newlines, base, crops)
    if select_strategy != "full":
        raise ValueError(f"vision_feature_select_strategy={select_strategy!r} cannot be reduced: PiToMe "
                         "LLaVA-OneVision reduces the SigLIP features of vision_feature_select_strategy='full'.")
    n = base + crops
    if merge.visual_tokens is None:
        return OnevisionImageBudget(base, rows, cols, newlines, ratio_keep(merge, base), ratio_keep(merge, crops))
    k = tokens_kept(n, None, merge.visual_tokens, least=2 if crops else 1, refusal=lambda least, most: (
        f"visual_tokens={merge.visual_tokens} does not fit an image of {image_size[0]} x {image_size[1]} px, which has "
        f"{n} features ({base} base + {crops} crops): allowed values are {least}..{most} for this image."))
    if not crops:
        return OnevisionImageBudget(base, rows, cols, newlines, k, 0)
    keep_base = min(max((2 * k * base + n) // (2 * n), 1, k - crops), base, k - 1)
    return OnevisionImageBudget(base, rows, cols, newlines, keep_base, k - keep_base)


@dataclass(frozen=True)
class OnevisionVideoBudget:
    """One video's stock layout and budget: `frames` frames of `frame_tokens` pooled features each, one newline after
    the last frame, and `keep_frame` features kept of every frame."""

    frames: int
    frame_tokens: int
    keep_frame: int

    @property
    def stock_tokens(self) -> int:
        return self.frames * self.frame_tokens + 1

    @property
    def tokens(self) -> int:
        """Video tokens the language model receives (features kept plus the newline): what the processor writes."""
        return self.frames * self.keep_frame + 1


def onevision_video_budget(settings, frames: int, frame_tokens: int) -> OnevisionVideoBudget:
    """The budget of one video of `frames` frames, each of `frame_tokens` pooled features (`settings`: a PiToMe
    LLaVA-OneVision config or any object with the merge fields): `visual_tokens=K` keeps K of each frame (refused
    outside 1..frame_tokens), else each frame keeps n - floor(n - n * rho) of its n (`merging.tokens_kept`)."""
    frames, frame_tokens = int(frames), int(frame_tokens)
    merge = reduction_settings(settings)
    if not reduces(merge):
        return OnevisionVideoBudget(frames, frame_tokens, frame_tokens)
    if merge.visual_tokens is None:
        return OnevisionVideoBudget(frames, frame_tokens, ratio_keep(merge, frame_tokens))
    tokens_kept(frame_tokens, None, merge.visual_tokens, refusal=lambda least, most: (
        f"visual_tokens={merge.visual_tokens} does not fit a video frame, which has {frame_tokens} pooled features: "
        f"allowed values are {least}..{most} for videos (the budget is per frame)."))
    return OnevisionVideoBudget(frames, frame_tokens, merge.visual_tokens)


def onevision_frame_tokens(patches: int) -> int:
    """Pooled features of one video frame whose tile has `patches` x `patches` features (the stock 2x2 pooling:
    ceil(patches / 2) per side)."""
    side = math.ceil(int(patches) / 2)
    return side * side


def onevision_config_video_budget(config, frames: int) -> OnevisionVideoBudget:
    """`onevision_video_budget` with the frame's pooled count read from a (PiToMe or stock) model config."""
    vision = config.vision_config
    settings = config if hasattr(config, "keep_ratio") else SimpleNamespace(merge_method="none")
    return onevision_video_budget(settings, frames, onevision_frame_tokens(vision.image_size // vision.patch_size))


def onevision_config_budget(config, image_size, multi_image: bool, aspect=None,
                            select_strategy=None) -> OnevisionImageBudget:
    """`onevision_image_budget` with the layout arguments read from a (PiToMe or stock) LLaVA-OneVision model config
    (`aspect` and `select_strategy` default to the config's; a forward may give others). A stock config has no merge
    settings: nothing is reduced."""
    vision = config.vision_config
    settings = config if hasattr(config, "keep_ratio") else SimpleNamespace(merge_method="none")
    return onevision_image_budget(settings, image_size, multi_image, tile=vision.image_size,
                                  patches=vision.image_size // vision.patch_size, pinpoints=config.image_grid_pinpoints,
                                  aspect=aspect or config.vision_aspect_ratio,
                                  select_strategy=select_strategy or config.vision_feature_select_strategy)


def llava_onevision_dummy_inputs(config) -> dict:
    """One prompt with one image of one tile (the base and one crop of the model's own size): the input
    `pitome-hf push` checks a folder with."""
    import torch

    vision = config.vision_config
    side = vision.image_size
    count = onevision_config_budget(config, (side, side), False).tokens
    ids = torch.tensor([[1, 2, *[config.image_token_id] * count, 3, 4]])
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 2, vision.num_channels, side, side, generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels,
            "image_sizes": torch.tensor([[side, side]]), "batch_num_images": torch.tensor([1])}


class PiToMeLlavaOnevisionConfig(VisualBudgetConfigMixin, LlavaOnevisionConfig):
    r"""A [`LlavaOnevisionConfig`] with visual-token reduction at the language model's input.

    Besides the merge fields (`MergeConfigMixin`; `visual_tokens` is read here, per image and per video frame),
    `visual_selection`: "merge" (PiToMe / ToMe / pitome_bsm by `merge_method`), "visionzip" (dominant + contextual
    tokens), "divprune" (the max-min diverse subset) or "dart" (pivots and their least duplicated tokens).
    """

    model_type = "pitome_llava_onevision"
    stock_model_types = ("llava_onevision",)
    auto_map_classes = {
        "AutoModel": "modeling_pitome_llava_onevision.PiToMeLlavaOnevisionModel",
        "AutoModelForImageTextToText": "modeling_pitome_llava_onevision.PiToMeLlavaOnevisionForConditionalGeneration",
        "AutoProcessor": "processing_pitome_llava_onevision.PiToMeLlavaOnevisionProcessor",
    }
    family_name = "PiToMe LLaVA-OneVision"


__all__ = ["OnevisionImageBudget", "OnevisionVideoBudget", "PiToMeLlavaOnevisionConfig", "llava_onevision_dummy_inputs",
           "onevision_config_budget", "onevision_config_video_budget", "onevision_frame_tokens",
           "onevision_image_budget", "onevision_video_budget"]

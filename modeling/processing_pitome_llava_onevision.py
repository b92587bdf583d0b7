# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe LLaVA-OneVision processor: a `LlavaOnevisionProcessor` that writes the budgeted number of image tokens.

Each image becomes `onevision_image_budget(settings, ...).tokens` `<image>` tokens (features kept plus newlines): the
same function the model uses (configuration_pitome_llava_onevision.py). The merge fields the count depends on
(`COUNT_FIELDS`) are one `merge_settings` parameter (ProcessorMixin saves only `__init__` parameters), so
processor_config.json is self-contained; build it from a model config with
`PiToMeLlavaOnevisionProcessor.from_model_config`. Each video becomes `onevision_video_budget(...).tokens` `<video>`
tokens (the features kept of every frame, plus the newline), the model's count function for videos.
"""

import math
from types import SimpleNamespace

from transformers import LlavaOnevisionProcessor

from .configuration_pitome_llava_onevision import onevision_frame_tokens, onevision_image_budget, onevision_video_budget
from .merge_config import count_settings


class PiToMeLlavaOnevisionProcessor(LlavaOnevisionProcessor):
    r"""[`LlavaOnevisionProcessor`] for PiToMe LLaVA-OneVision: the budgeted number of `<image>` tokens per image and
    of `<video>` tokens per video.

    Args beyond LlavaOnevisionProcessor's (saved in processor_config.json; keep them equal to the model config's):
        merge_settings: the merge fields the token count depends on (`merge_config.COUNT_FIELDS`), as a dict;
            missing ones take the table's defaults.
    """

    def __init__(self, image_processor=None, tokenizer=None, video_processor=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, merge_settings=None, **kwargs):
        self.merge_settings = count_settings(merge_settings, "PiToMeLlavaOnevisionProcessor merge_settings")
        super().__init__(image_processor, tokenizer, video_processor, num_image_tokens=num_image_tokens,
                         vision_feature_select_strategy=vision_feature_select_strategy, chat_template=chat_template,
                         **kwargs)

    @classmethod
    def from_model_config(cls, config, image_processor, tokenizer, video_processor=None, **kwargs):
        """A processor whose settings (merge fields, tokens per tile, feature strategy, aspect) are a PiToMe
        LLaVA-OneVision model config's."""
        vision = config.vision_config
        kwargs.setdefault("num_image_tokens", (vision.image_size // vision.patch_size) ** 2)
        kwargs.setdefault("vision_feature_select_strategy", config.vision_feature_select_strategy)
        kwargs.setdefault("vision_aspect_ratio", config.vision_aspect_ratio)
        return cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                   merge_settings=count_settings(config), **kwargs)

    def num_image_tokens_for(self, image_size, multi_image: bool, tile: int) -> int:
        """`<image>` tokens the model receives for one image of `image_size` = (height, width) pixels."""
        settings = SimpleNamespace(**self.merge_settings, default_protected_tokens=0)
        count = onevision_image_budget(settings, image_size, multi_image, tile=tile,
                                       patches=int(math.sqrt(self.num_image_tokens)),
                                       pinpoints=self.image_processor.image_grid_pinpoints,
                                       aspect=self.vision_aspect_ratio,
                                       select_strategy=self.vision_feature_select_strategy or "full").tokens
        return count - 1 if self.vision_feature_select_strategy == "default" else count  # stock rule (unreduced)

    def num_video_tokens_for(self, frames: int) -> int:
        """`<video>` tokens the model receives for one video of `frames` frames."""
        settings = SimpleNamespace(**self.merge_settings, default_protected_tokens=0)
        frame_tokens = onevision_frame_tokens(int(math.sqrt(self.num_image_tokens)))
        return onevision_video_budget(settings, frames, frame_tokens).tokens

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        video = video_inputs["pixel_values_videos"][video_idx]
        frames = len(video) if isinstance(video, (list, tuple)) else video.shape[0]
        return self.video_token * self.num_video_tokens_for(frames)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        multi, seen = False, 0
        for n in image_inputs["batch_num_images"]:
            if image_idx < seen + n:
                multi = n != 1
                break
            seen += n
        size = image_inputs["image_sizes"][image_idx]
        size = size.tolist() if hasattr(size, "tolist") else list(size)
        tile = image_inputs["pixel_values"][0][0].shape[-1]
        return self.image_token * self.num_image_tokens_for(size, multi, tile)

    def _get_num_multimodal_tokens(self, image_sizes=None, video_sizes=None, **kwargs):
        data = super()._get_num_multimodal_tokens(image_sizes=image_sizes, video_sizes=video_sizes, **kwargs)
        if image_sizes is not None:
            size = self.image_processor.size
            tile = size["shortest_edge"] if "shortest_edge" in size else min(size["height"], size["width"])
            data.num_image_tokens = [self.num_image_tokens_for(s, False, tile) for s in image_sizes]
        if video_sizes is not None:
            data.num_video_tokens = [self.num_video_tokens_for(frames) for frames, _, _ in video_sizes]
        return data


PiToMeLlavaOnevisionProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["PiToMeLlavaOnevisionProcessor"]

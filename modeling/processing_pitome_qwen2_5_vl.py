# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe Qwen2.5-VL processor: a `Qwen2_5_VLProcessor` that writes the budgeted number of visual tokens.

Each image (video) becomes `qwen_visual_token_count(settings, grid)` `<|image_pad|>` (`<|video_pad|>`) tokens: the
same function the model uses (configuration_pitome_qwen2_5_vl.py). The processor keeps the merge fields the count
depends on (`COUNT_FIELDS`: merge_method, keep_ratio, merge_r, merge_layers, protected_tokens, visual_tokens) in one
`merge_settings` parameter (ProcessorMixin saves only `__init__` parameters), so processor_config.json is
self-contained; build it from a model config with `PiToMeQwen2_5_VLProcessor.from_model_config`.
"""

from types import SimpleNamespace

from transformers import Qwen2_5_VLProcessor

from .configuration_pitome_qwen2_5_vl import qwen_visual_token_count
from .merge_config import count_settings


class PiToMeQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    r"""[`Qwen2_5_VLProcessor`] for PiToMe Qwen2.5-VL: the budgeted number of `<|image_pad|>` / `<|video_pad|>`.

    Args beyond Qwen2_5_VLProcessor's (saved in processor_config.json; keep them equal to the model config's):
        merge_settings: the merge fields the token count depends on (`merge_config.COUNT_FIELDS`), as a dict;
            missing ones take the table's defaults.
    """

    def __init__(self, image_processor=None, tokenizer=None, video_processor=None, chat_template=None,
                 merge_settings=None, **kwargs):
        self.merge_settings = count_settings(merge_settings, "PiToMeQwen2_5_VLProcessor merge_settings")
        super().__init__(image_processor, tokenizer, video_processor, chat_template=chat_template, **kwargs)

    @classmethod
    def from_model_config(cls, config, image_processor, tokenizer, video_processor=None, **kwargs):
        """A processor whose settings are those of a PiToMe Qwen2.5-VL model config."""
        return cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                   merge_settings=count_settings(config), **kwargs)

    def _settings(self):
        return SimpleNamespace(**self.merge_settings, default_protected_tokens=0)

    def num_visual_tokens(self, grid_thw, merge_size: int) -> int:
        """Visual tokens the model receives for one input of grid (t, h, w)."""
        return qwen_visual_token_count(self._settings(), grid_thw, spatial_merge_size=merge_size)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        grid = image_inputs["image_grid_thw"][image_idx]
        return self.image_token * self.num_visual_tokens(grid, self.image_processor.merge_size)

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        grid = video_inputs["video_grid_thw"][video_idx]
        return self.video_token * self.num_visual_tokens(grid, self.video_processor.merge_size)

    def _get_num_multimodal_tokens(self, image_sizes=None, video_sizes=None, **kwargs):
        data = super()._get_num_multimodal_tokens(image_sizes=image_sizes, video_sizes=video_sizes, **kwargs)
        merge = self.image_processor.merge_size
        if image_sizes is not None:
            data.num_image_tokens = [self.num_visual_tokens((1, 1, n * merge * merge), merge)
                                     for n in data.num_image_tokens]
        if video_sizes is not None and getattr(data, "num_video_tokens", None) is not None:
            merge_v, tp = self.video_processor.merge_size, self.video_processor.temporal_patch_size
            data.num_video_tokens = [
                self.num_visual_tokens((-(-int(size[0]) // tp), 1, n * merge_v * merge_v // -(-int(size[0]) // tp)),
                                       merge_v)
                for size, n in zip(video_sizes, data.num_video_tokens)]
        return data


PiToMeQwen2_5_VLProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["PiToMeQwen2_5_VLProcessor"]

"""Analytic FLOPs of the PiToMe BERT and DINOv2 families (same convention as `pitome_hf.flops`: 2 FLOPs per
multiply-accumulate of every matrix product; norms, activations, softmax, embedding look-ups and the merge's gathers
are not counted; the merge step's similarity matmul is). Built on `pitome_hf.flops.encoder_flops` / `EncoderShape`,
so the token counts come from the same `token_schedule` the models follow.
"""

from __future__ import annotations

from typing import Iterable

from .flops import EncoderShape, encoder_flops, merge_settings_of, prefix_of
from .modeling import PiToMeBertConfig, PiToMeDinov2Config, PiToMeDinov2WithRegistersConfig
from .modeling.merge_config import merge_num_layers


def bert_shape(config) -> EncoderShape:
    return EncoderShape(
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        layers=merge_num_layers(config),
        heads=config.num_attention_heads,
        num_prefix=prefix_of(config, PiToMeBertConfig),
    )


def bert_flops(config, num_tokens: int, with_pooler: bool | None = None, num_labels: int = 0) -> int:
    """FLOPs of one sequence of `num_tokens` real tokens (CLS and SEP included, no padding) through a (PiToMe or
    stock) BERT encoder. In a padded batch each sample merges as it would alone, so a batch costs the sum of its
    samples' counts (padding is not counted). The pooler (dense on CLS) is counted when `with_pooler` is True; by
    default when the config's pooling is "cls" (stock configs: yes). `num_labels` > 0 adds a classifier."""
    shape = bert_shape(config)
    settings = merge_settings_of(config)
    mergeable = max(int(num_tokens) - shape.num_prefix, 0)
    total = encoder_flops(settings, shape, mergeable)
    if with_pooler is None:
        with_pooler = getattr(config, "pooling", "cls") == "cls"
    if with_pooler:
        total += 2 * config.hidden_size * config.hidden_size
    if num_labels:
        total += 2 * config.hidden_size * num_labels
    return total


def bert_batch_flops(config, lengths: Iterable[int], **kwargs) -> int:
    """Sum of `bert_flops` over the samples' real token counts (e.g. `attention_mask.sum(1).tolist()`)."""
    return sum(bert_flops(config, n, **kwargs) for n in lengths)


def dinov2_ffn_width(config) -> int:
    """The width I such that the feed-forward block costs 2 * 2 * n * C * I FLOPs (two C x I matmuls): the MLP's
    hidden size, or 1.5x the SwiGLU hidden size (three matmuls)."""
    hidden = int(config.hidden_size * config.mlp_ratio)
    if getattr(config, "use_swiglu_ffn", False):
        swiglu = (int(hidden * 2 / 3) + 7) // 8 * 8
        return 3 * swiglu // 2
    return hidden


def dinov2_shape(config) -> EncoderShape:
    registers = getattr(config, "num_register_tokens", None) is not None
    return EncoderShape(
        hidden=config.hidden_size,
        intermediate=dinov2_ffn_width(config),
        layers=merge_num_layers(config),
        heads=config.num_attention_heads,
        num_prefix=prefix_of(config, PiToMeDinov2WithRegistersConfig if registers else PiToMeDinov2Config),
    )


def dinov2_flops(config, image_size: int | None = None, num_labels: int = 0) -> int:
    """FLOPs of one square image through a (PiToMe or stock) DINOv2 (with or without registers): patch embedding and
    encoder, plus a linear head on [CLS, mean patch] when `num_labels` > 0. `image_size` defaults to the config's
    (DINOv2 checkpoints say 518 but are usually run at 224 with interpolated position embeddings: pass it)."""
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    size = image_size or (config.image_size if isinstance(config.image_size, int) else config.image_size[0])
    num_patches = (size // patch) ** 2
    C = config.hidden_size
    embed = 2 * num_patches * C * config.num_channels * patch * patch
    head = 2 * 2 * C * num_labels if num_labels else 0
    return embed + encoder_flops(merge_settings_of(config), dinov2_shape(config), num_patches) + head


__all__ = ["bert_batch_flops", "bert_flops", "bert_shape", "dinov2_ffn_width", "dinov2_flops", "dinov2_shape"]

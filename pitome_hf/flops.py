"""Analytic FLOP counts (one owner): every benchmark, evaluation, model card and the Space call these.

Convention: 2 FLOPs per multiply-accumulate of every matrix product (what torch's FlopCounterMode counts); norms,
activations, softmax and the merge's gathers are not counted. The merge step's similarity matmul is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf.modeling import (
    PiToMeBertConfig,
    PiToMeDinov2Config,
    PiToMeDinov2WithRegistersConfig,
    PiToMeCLIPVisionConfig,
    PiToMeLlavaConfig,
    PiToMeSiglipVisionConfig,
    PiToMeViTConfig,
)
from pitome_hf.modeling.merge_config import (
    MERGE_FIELDS,
    MergeSettings,
    merge_num_layers,
    num_patches_from_config,
    token_schedule,
)


@dataclass(frozen=True)
class EncoderShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    num_prefix: int = 1


def prefix_of(config, pitome_config_class) -> int:
    """The protected prefix of a PiToMe config, or of a stock config by its PiToMe config class's rule (the one owner
    of the rule: `architecture_prefix` of the PiToMe config class)."""
    value = getattr(config, "protected_tokens", None)
    return int(value) if value is not None else pitome_config_class.architecture_prefix(config)


def merge_settings_of(config, num_layers: int | None = None) -> MergeSettings:
    """The merge settings of a PiToMe config; a stock config (no merge fields) counts as unmerged."""
    if not any(hasattr(config, name) for name in MERGE_FIELDS):
        return MergeSettings(merge_method="none", num_layers=num_layers)
    return MergeSettings.from_config(config, num_layers=num_layers)


def similarity_flops(method: str, num_mergeable: int, dim: int) -> int:
    """FLOPs of one merge step's cosine-similarity matmul (PiToMe and pitome_bsm: T x T, the energy needs every pair;
    ToMe: A x B, the two parity halves)."""
    T = num_mergeable
    if method == "tome":
        return 2 * ((T + 1) // 2) * (T // 2) * dim
    return 2 * T * T * dim


def encoder_flops(settings: MergeSettings, shape: EncoderShape, num_tokens: int) -> int:
    """FLOPs of the transformer layers for one sample whose first layer sees `num_tokens` mergeable tokens."""
    C, I, p = shape.hidden, shape.intermediate, shape.num_prefix
    counts = token_schedule(settings, num_tokens=num_tokens, num_layers=shape.layers)
    metric_dim = C // shape.heads if settings.merge_metric == "keys" else C
    total = 0
    for layer in range(shape.layers):
        n_in, n_out = counts[layer] + p, counts[layer + 1] + p
        total += 2 * n_in * C * 4 * C  # q, k, v, o projections
        total += 2 * 2 * n_in * n_in * C  # scores and attention x values
        if n_out < n_in:
            total += similarity_flops(settings.method_at(layer), counts[layer], metric_dim)
        total += 2 * 2 * n_out * C * I  # MLP
    return total


def encoder_shape(config, pitome_config_class, intermediate: int | None = None, layers: int | None = None,
                  settings_config=None) -> EncoderShape:
    """The encoder of a (PiToMe or stock) config: widths, layers, heads, and the protected prefix by the family's rule
    (read from `settings_config`, the composite config holding the merge settings, when given)."""
    return EncoderShape(
        hidden=config.hidden_size,
        intermediate=config.intermediate_size if intermediate is None else intermediate,
        layers=merge_num_layers(config) if layers is None else layers,
        heads=config.num_attention_heads,
        num_prefix=prefix_of(settings_config if settings_config is not None else config, pitome_config_class),
    )


def vit_shape(config) -> EncoderShape:
    return encoder_shape(config, PiToMeViTConfig)


def vit_flops(config, image_size: int | None = None, num_labels: int | None = None) -> int:
    """FLOPs of one image through a (PiToMe or stock) ViT classifier: patch embedding, encoder and head.

    Stock configs (no merge fields) count as unmerged. `image_size` overrides the config's (square images)."""
    settings = merge_settings_of(config)
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    num_patches = (image_size // patch) ** 2 if image_size else num_patches_from_config(config)
    embed = 2 * num_patches * config.hidden_size * config.num_channels * patch * patch
    labels = config.num_labels if num_labels is None else num_labels
    head = 2 * config.hidden_size * labels
    return embed + encoder_flops(settings, vit_shape(config), num_patches) + head


def clip_vision_flops(config, image_size: int | None = None, with_projection: bool | None = None) -> int:
    """FLOPs of one image through a (PiToMe or stock) CLIP vision tower: patch embedding, encoder, projection.

    `config` is a CLIP config (the merge settings and the vision_config) or a CLIP vision config. The projection
    (hidden -> projection_dim) is counted when `with_projection` is True; by default it is for a CLIP config (whose
    model has `visual_projection`) and not for a vision config (use True for CLIPVisionModelWithProjection). The text
    tower is not counted. `image_size` overrides the config's (square images, interpolated position embeddings).
    """
    vision = getattr(config, "vision_config", None)
    composite = vision is not None
    vision = vision if composite else config
    settings = merge_settings_of(config, num_layers=vision.num_hidden_layers)
    patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
    num_patches = (image_size // patch) ** 2 if image_size else num_patches_from_config(vision)
    C = vision.hidden_size
    embed = 2 * num_patches * C * vision.num_channels * patch * patch
    shape = encoder_shape(vision, PiToMeCLIPVisionConfig, layers=vision.num_hidden_layers, settings_config=config)
    if with_projection is None:
        with_projection = composite
    projection_dim = config.projection_dim if composite else vision.projection_dim
    head = 2 * C * projection_dim if with_projection else 0
    return embed + encoder_flops(settings, shape, num_patches) + head


def llava_prefill_flops(config, prompt_text_tokens: int) -> int:
    """Analytic FLOPs of one prompt's prefill: the whole vision tower (as it runs: merging only before the feature
    layer), the projector and the language model."""
    vision, text = config.vision_config, config.text_config
    from pitome_hf.modeling.configuration_pitome_llava import llava_merge_settings, llava_num_image_tokens

    settings = llava_merge_settings(config)
    patches = (vision.image_size // vision.patch_size) ** 2
    shape = encoder_shape(vision, PiToMeLlavaConfig, layers=vision.num_hidden_layers, settings_config=config)
    total = 2 * patches * vision.hidden_size * 3 * vision.patch_size ** 2
    total += encoder_flops(settings, shape, patches)
    n_img = llava_num_image_tokens(config)
    total += 2 * n_img * (vision.hidden_size * text.hidden_size + text.hidden_size ** 2)  # projector
    return total + decoder_prefill_flops(text, n_img + prompt_text_tokens)


def siglip_vision_flops(config, image_size: int | None = None) -> int:
    """FLOPs of one image through a (PiToMe or stock) SigLIP vision tower: patch embedding, encoder (no CLS: every
    token is mergeable unless protected_tokens says otherwise) and the attention-pooling head (a single probe query:
    q, k/v and output projections, scores and weighted sum over the final tokens, and the head's MLP). `config` is a
    SigLIP config (merge settings + vision_config) or a SigLIP vision config. The text tower is not counted."""
    vision = getattr(config, "vision_config", None) or config
    settings = merge_settings_of(config, num_layers=vision.num_hidden_layers)
    patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
    num_patches = (image_size // patch) ** 2 if image_size else num_patches_from_config(vision)
    C, I = vision.hidden_size, vision.intermediate_size
    shape = EncoderShape(hidden=C, intermediate=I, layers=vision.num_hidden_layers, heads=vision.num_attention_heads,
                         num_prefix=prefix_of(config, PiToMeSiglipVisionConfig))
    total = 2 * num_patches * C * vision.num_channels * patch * patch + encoder_flops(settings, shape, num_patches)
    if getattr(vision, "vision_use_head", True):
        n = token_schedule(settings, num_tokens=num_patches, num_layers=vision.num_hidden_layers)[-1] + shape.num_prefix
        total += 2 * C * C + 2 * n * C * 2 * C  # probe query; keys and values of the n final tokens
        total += 2 * n * C + 2 * n * C  # scores and weighted sum (one query)
        total += 2 * C * C + 2 * 2 * C * I  # output projection and the head's MLP
    return total


# ----------------------------------------------------------------------------------------------------------------
# Encoders: BERT and DINOv2
# ----------------------------------------------------------------------------------------------------------------
def bert_shape(config) -> EncoderShape:
    return encoder_shape(config, PiToMeBertConfig)


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
    rule = PiToMeDinov2WithRegistersConfig if registers else PiToMeDinov2Config
    return encoder_shape(config, rule, intermediate=dinov2_ffn_width(config))


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


# ----------------------------------------------------------------------------------------------------------------
# Qwen2.5-VL: the vision tower as stock, the reduction at the language model's input, the language model
# ----------------------------------------------------------------------------------------------------------------
def qwen2_5_vl_prefill_flops(config, prompt_text_tokens: int, image_grid_thw: Iterable = ((1, 16, 16),),
                             eager_vision_attention: bool = True) -> int:
    """Analytic FLOPs of one prompt's prefill through a (PiToMe or stock) Qwen2.5-VL: the vision tower for each image
    of grid (t, h, w) patches (patch embedding, every block with its window or full attention groups, the 2x2 merger),
    the reduction to `qwen_visual_token_count` tokens per image (the similarity matmuls of every bipartite step, or
    VisionZip-style: the last block's scores for the attention received and the assignment's similarities), and the
    language model over the visual tokens plus `prompt_text_tokens` (logits of the last token only)."""
    import torch
    from transformers.vision_utils import get_vision_window_index

    from pitome_hf.modeling.configuration_pitome_qwen2_5_vl import qwen_visual_token_count

    vision, text = config.vision_config, config.text_config
    C, I, H = vision.hidden_size, vision.intermediate_size, vision.num_heads
    sms, p, tp = vision.spatial_merge_size, vision.patch_size, vision.temporal_patch_size
    unit = sms * sms
    D = vision.out_hidden_size
    settings, active, selection = _reduction_of(config)
    total, visual_tokens = 0, 0
    for grid in image_grid_thw:
        t, h, w = (int(v) for v in grid)
        N = t * h * w
        total += 2 * N * C * vision.in_channels * tp * p * p  # patch embedding (conv3d)
        full = [h * w] * t
        _, cu = get_vision_window_index(torch.tensor([[t, h, w]]), spatial_merge_size=sms,
                                        window_size=vision.window_size, patch_size=p)
        windows = [int(b - a) for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())]
        for layer in range(vision.depth):
            groups = full if layer in vision.fullatt_block_indexes else windows
            total += 2 * N * C * 3 * C + 2 * N * C * C + 3 * 2 * N * C * I  # qkv, proj, gated MLP
            if eager_vision_attention:
                total += sum(4 * n * n * C for n in groups)  # scores and weighted sum
        n = N // unit
        total += 2 * n * (unit * C) ** 2 + 2 * n * unit * C * D  # merger MLP
        k = qwen_visual_token_count(config, (t, h, w)) if active else n
        if active and k < n:
            c = (vision.hidden_size // H) * unit if settings.merge_metric == "keys" else D
            last = full if vision.depth - 1 in vision.fullatt_block_indexes else windows
            if selection == "visionzip":
                total += sum(2 * m * m * C for m in last)  # the last block's scores, for the attention received
            total += reduction_flops(settings.method_at(0), n, k, c, selection, D)
        visual_tokens += k
    return total + decoder_prefill_flops(text, visual_tokens + int(prompt_text_tokens))


def qwen3_vl_prefill_flops(config, prompt_text_tokens: int, image_grid_thw: Iterable = ((1, 16, 16),),
                           eager_vision_attention: bool = True) -> int:
    """Analytic FLOPs of one prompt's prefill through a (PiToMe or stock) Qwen3-VL, or Qwen3.5 (its tower without
    DeepStack, its hybrid language model: `qwen3_5_decoder_prefill_flops`): the vision tower for each image or video
    of grid (t, h, w) patches (patch embedding, every block with full attention within each temporal patch, a gelu
    MLP, the 2x2 merger and one merger per DeepStack level; the learned position embedding's interpolation is not a
    matmul), the reduction to `qwen_visual_token_count` tokens, each temporal patch apart (the similarity matmuls of
    every bipartite step, or VisionZip-style: the last block's scores and the assignment's similarities), and the
    language model over the visual tokens plus `prompt_text_tokens` (logits of the last token only). Adding the
    DeepStack rows to the hidden states is not a matmul."""
    from pitome_hf.modeling.qwen_reduction import qwen_visual_token_count

    vision, text = config.vision_config, config.text_config
    C, I, H = vision.hidden_size, vision.intermediate_size, vision.num_heads
    sms, p, tp = vision.spatial_merge_size, vision.patch_size, vision.temporal_patch_size
    unit = sms * sms
    D = vision.out_hidden_size
    mergers = 1 + len(getattr(vision, "deepstack_visual_indexes", None) or ())
    settings, active, selection = _reduction_of(config)
    total, visual_tokens = 0, 0
    for grid in image_grid_thw:
        t, h, w = (int(v) for v in grid)
        N, frame = t * h * w, h * w
        total += 2 * N * C * vision.in_channels * tp * p * p  # patch embedding (conv3d)
        per_block = 2 * N * C * 3 * C + 2 * N * C * C + 2 * 2 * N * C * I  # qkv, proj, MLP (two matmuls)
        if eager_vision_attention:
            per_block += t * 4 * frame * frame * C  # scores and weighted sum, one group per temporal patch
        total += vision.depth * per_block
        n = N // unit
        total += mergers * (2 * n * (unit * C) ** 2 + 2 * n * unit * C * D)  # merger MLPs
        k = qwen_visual_token_count(config, (t, h, w)) if active else n
        if active and k < n:
            c = (C // H) * unit if settings.merge_metric == "keys" else D
            frames = t if getattr(config, "frames_apart", False) else 1
            if selection == "visionzip":
                total += t * 2 * frame * frame * C  # the last block's scores, for the attention received
            total += frames * reduction_flops(settings.method_at(0), n // frames, k // frames, c, selection, D)
        visual_tokens += k
    tokens = visual_tokens + int(prompt_text_tokens)
    if getattr(text, "layer_types", None) is not None and "linear_attention" in text.layer_types:
        return total + qwen3_5_decoder_prefill_flops(text, tokens)
    return total + decoder_prefill_flops(text, tokens)


def _reduction_of(config) -> tuple:
    """(settings, whether anything is reduced, the visual_selection or None) of a vision-language config that reduces
    at the language model's input; a stock config reduces nothing."""
    from pitome_hf.modeling.language_input_reduction import reduces, reduction_settings

    settings = reduction_settings(config) if hasattr(config, "keep_ratio") else None
    active = settings is not None and reduces(settings)
    return settings, active, settings.visual_selection if active else None


def reduction_flops(method: str, n: int, k: int, c: int, selection: str = "merge", features: int = 0) -> int:
    """FLOPs of reducing n tokens to k: with a metric of width c, the similarity matmuls of every bipartite step
    (`visual_reduction.reduce_to_budget`), or, VisionZip-style, each merged-away token against the contextual
    targets (the attention received is the caller's: it depends on the tower); on the `features` (their width) the
    language model reads, DivPrune's pairwise cosine similarities (n x n) and DART's pivots against every token."""
    from pitome_hf.modeling.visual_reduction import DART_PIVOTS, contextual_count

    if k >= n:
        return 0
    if selection == "visionzip":
        return 2 * (n - k) * contextual_count(k, n) * c
    if selection == "divprune":
        return 2 * n * n * features
    if selection == "dart":
        return 2 * min(DART_PIVOTS, k) * n * features
    total, T = 0, n
    while T > k:
        total += similarity_flops(method, T, c)
        T -= min(T - k, T // 2)
    return total


def decoder_prefill_flops(text, tokens: int) -> int:
    """A decoder language model (Llama/Qwen2/Qwen3 layout: q, k, v, o with grouped keys and the config's head_dim,
    gated MLP) over `tokens` tokens, with the logits of the last token only."""
    C, I, L = text.hidden_size, text.intermediate_size, text.num_hidden_layers
    head = getattr(text, "head_dim", None) or C // text.num_attention_heads
    q, kv = text.num_attention_heads * head, text.num_key_value_heads * head
    per_token = 2 * (2 * C * q + 2 * C * kv) + 2 * 3 * C * I
    return L * (tokens * per_token + 2 * 2 * tokens * tokens * q) + 2 * C * text.vocab_size


def qwen3_5_decoder_prefill_flops(text, tokens: int, chunk: int = 64) -> int:
    """Qwen3.5's hybrid language model over `tokens` tokens, logits of the last token only. Full-attention layers:
    q (with its output gate: twice the heads' width), k, v, o and the attention over all tokens. Gated DeltaNet layers:
    the q/k/v, z, b and a projections, the causal depthwise convolution (kernel `linear_conv_kernel_dim`, padded by
    kernel - 1), the chunked delta rule as transformers' torch path computes it (sequence padded to `chunk`; per chunk
    and value head: the two chunk x chunk key products, then reading and writing the recurrent state and the
    within-chunk attention; its two triangular solves are not matmuls) and the output projection. Every layer: the
    gated MLP (three matmuls)."""
    C, I, T = text.hidden_size, text.intermediate_size, int(tokens)
    head = getattr(text, "head_dim", None) or C // text.num_attention_heads
    q, kv = text.num_attention_heads * head, text.num_key_value_heads * head
    full = T * 2 * (2 * C * q + 2 * C * kv + q * C) + 2 * 2 * T * T * q
    dk, dv = text.linear_key_head_dim, text.linear_value_head_dim
    hk, hv = text.linear_num_key_heads, text.linear_num_value_heads
    key_dim, value_dim, kernel = hk * dk, hv * dv, text.linear_conv_kernel_dim
    padded = -(-T // chunk) * chunk
    linear = T * 2 * C * (2 * key_dim + value_dim + value_dim + 2 * hv)  # in_proj_qkv, z, b, a
    linear += 2 * (T + kernel - 1) * (2 * key_dim + value_dim) * kernel  # depthwise causal convolution
    linear += hv * (2 * 2 * padded * chunk * dk  # the two chunk x chunk key products
                    + padded * (2 * 2 * dk * dv + 2 * chunk * dv + 2 * dk * dv))  # state reads, attention, update
    linear += T * 2 * value_dim * C  # out_proj
    kinds = list(text.layer_types)[: text.num_hidden_layers]
    mlp = T * 2 * 3 * C * I
    return (sum(full if kind == "full_attention" else linear for kind in kinds) + len(kinds) * mlp
            + 2 * C * text.vocab_size)


# ----------------------------------------------------------------------------------------------------------------
# LLaVA-OneVision: SigLIP tiles and projector as stock, the reduction at the language model's input
# ----------------------------------------------------------------------------------------------------------------
def llava_onevision_prefill_flops(config, prompt_text_tokens: int, image_sizes: Iterable = ((384, 384),),
                                  multi_image: bool = False) -> int:
    """Analytic FLOPs of one prompt's prefill through a (PiToMe or stock) LLaVA-OneVision: for each image of
    `image_sizes` (height, width) px, the SigLIP tower on its tiles (the base and its AnyRes crops; one tile when
    `multi_image`), the projector on every tile's features, the reduction of the base's and the crops' packed
    features to `onevision_image_budget` (bipartite similarity matmuls, or VisionZip-style: the feature layer's
    scores per tile and the assignment's similarities), and the language model (Qwen2) over the image tokens (kept
    features plus newlines) and `prompt_text_tokens`, logits of the last token only. The SigLIP pooling head is
    counted when the config has one (`vision_use_head`; LLaVA-OneVision's do not); interpolation and unpadding are not matmuls."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    from pitome_hf.modeling.configuration_pitome_llava_onevision import onevision_config_budget

    vision, text = config.vision_config, config.text_config
    C, heads = vision.hidden_size, vision.num_attention_heads
    P = (vision.image_size // vision.patch_size) ** 2
    settings, active, selection = _reduction_of(config)
    # a tile through the stock SigLIP tower (unmerged; its pooling head when the config has one, LLaVA-OneVision's do
    # not), then the projector
    per_tile = siglip_vision_flops(vision) + 2 * P * (C * text.hidden_size + text.hidden_size ** 2)
    total, image_tokens = 0, 0
    for size in image_sizes:
        budget = onevision_config_budget(config, size, multi_image)
        tiles = 1 if multi_image else image_size_to_num_patches(size, config.image_grid_pinpoints, vision.image_size)
        total += tiles * per_tile
        if active:
            c = C // heads if settings.merge_metric == "keys" else text.hidden_size
            if selection == "visionzip":
                total += tiles * 2 * P * P * C  # the feature layer's scores again, for the attention received
            for n, k in ((budget.base, budget.keep_base), (budget.rows * budget.cols, budget.keep_crops)):
                total += reduction_flops(settings.method_at(0), n, k, c, selection, text.hidden_size)
        image_tokens += budget.tokens
    return total + decoder_prefill_flops(text, image_tokens + int(prompt_text_tokens))

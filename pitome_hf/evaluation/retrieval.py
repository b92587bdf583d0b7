"""Image-text retrieval helpers: batched, L2-normalised embeddings, the similarity matrix, recall@k both ways.

Works with (PiToMe or stock) `CLIPModel` (`get_image_features` / `get_text_features`) and with the
`...WithProjection` towers (`image_embeds` / `text_embeds`). Several captions per image are described by
`text_to_image`: for each caption (text row), the index of its image, e.g. `captions_to_images([5] * 1000)` for
Flickr30k's test split.

Recall convention (Karpathy split code, ALBEF, CLIP papers): image->text R@k is the share of images whose
best-ranked ground-truth caption is among the top k texts; text->image R@k the share of captions whose image is
among the top k images. Values are percentages (0-100). Ties rank the lower index first (a stable sort). The paper's
"Rt" (text retrieval) is image->text (`i2t_rsum`), "Ri" (image retrieval) text->image (`t2i_rsum`).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

KS = (1, 5, 10)


def features_of(output, name: str) -> torch.Tensor:
    """The embedding tensor from a `get_*_features` result (a tensor, or an output whose pooler_output is the
    projected embedding in transformers 5) or a `...WithProjection` output (`image_embeds` / `text_embeds`)."""
    if isinstance(output, torch.Tensor):
        return output
    embeds = getattr(output, name, None)
    if embeds is None:
        embeds = output.pooler_output
    return embeds


def _embed(model, batches, kind: str) -> torch.Tensor:
    """L2-normalised float32 CPU embeddings of `kind` ("image" or "text") of every batch of model inputs: through
    `model.get_<kind>_features` (CLIPModel) or `model(...).<kind>_embeds` (the ...WithProjection towers)."""
    run = getattr(model, f"get_{kind}_features", model)
    out = [F.normalize(features_of(run(**inputs), f"{kind}_embeds").float(), dim=-1).cpu() for inputs in batches]
    if not out:
        raise ValueError(f"{kind}_embeddings got no {kind}s.")
    return torch.cat(out)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


@torch.no_grad()
def image_embeddings(
    model,
    images,
    processor=None,
    batch_size: int = 64,
    device: Optional[torch.device | str] = None,
) -> torch.Tensor:
    """L2-normalised image embeddings (N, D), float32 on the CPU.

    `images`: pixel values (N, C, H, W), or a sequence of images (PIL, arrays) together with `processor` (an image
    processor or a CLIP processor), or an iterable of pixel-value batches. Batches of `batch_size` run through
    `model.get_image_features` (CLIPModel) or `model(...).image_embeds` (CLIPVisionModelWithProjection).
    """
    device = torch.device(device) if device is not None else _model_device(model)
    dtype = _model_dtype(model)
    batches = ({"pixel_values": x.to(device=device, dtype=dtype)} for x in _image_batches(images, processor, batch_size))
    return _embed(model, batches, "image")


def _image_batches(images, processor, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
    elif processor is not None:
        images = list(images)
        for start in range(0, len(images), batch_size):
            yield processor(images=images[start : start + batch_size], return_tensors="pt")["pixel_values"]
    else:
        for batch in images:
            if not isinstance(batch, torch.Tensor):
                raise TypeError(
                    f"image_embeddings got a batch of type {type(batch).__name__}: pass pixel-value tensors, or images "
                    "together with processor=..."
                )
            yield batch


@torch.no_grad()
def text_embeddings(
    model,
    texts,
    tokenizer=None,
    batch_size: int = 256,
    device: Optional[torch.device | str] = None,
    max_length: Optional[int] = None,
    padding: str | bool = True,
) -> torch.Tensor:
    """L2-normalised text embeddings (N, D), float32 on the CPU.

    `padding`: the tokenizer's padding (True: per batch; "max_length" for SigLIP, whose text tower was trained on
    fixed-length input: see the family registry's `text_padding`).

    `texts`: a sequence of strings together with `tokenizer` (padded per batch, truncated to `max_length`, by default
    the text tower's `max_position_embeddings`), or a mapping with `input_ids` (N, S) and optionally
    `attention_mask`. Batches run through `model.get_text_features` (CLIPModel) or `model(...).text_embeds`.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    if max_length is None:
        config = getattr(model.config, "text_config", model.config)
        max_length = getattr(config, "max_position_embeddings", None)
    batches = ({k: v.to(device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
               for inputs in _text_batches(texts, tokenizer, batch_size, max_length, padding))
    return _embed(model, batches, "text")


def _text_batches(texts, tokenizer, batch_size: int, max_length: Optional[int], padding=True) -> Iterable[dict]:
    if hasattr(texts, "keys") and "input_ids" in texts:
        n = texts["input_ids"].shape[0]
        for start in range(0, n, batch_size):
            yield {k: v[start : start + batch_size] for k, v in texts.items() if isinstance(v, torch.Tensor)}
        return
    if tokenizer is None:
        raise ValueError("text_embeddings needs tokenizer=... to encode strings (or pass a mapping with input_ids).")
    texts = list(texts)
    for start in range(0, len(texts), batch_size):
        yield tokenizer(
            texts[start : start + batch_size],
            padding=padding,
            truncation=max_length is not None,
            max_length=max_length,
            return_tensors="pt",
        )


def similarity_matrix(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (N_images, N_texts) in float32 (the embeddings are normalised here too)."""
    return F.normalize(image_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).T


def captions_to_images(captions_per_image: Sequence[int]) -> torch.Tensor:
    """`text_to_image` for texts stored image by image: [5, 5, 4] -> [0, 0, 0, 0, 0, 1, ..., 2, 2, 2, 2]."""
    counts = torch.as_tensor(list(captions_per_image), dtype=torch.long)
    if counts.numel() == 0 or (counts < 1).any():
        raise ValueError(f"captions_per_image={list(captions_per_image)!r}: every image needs at least one caption.")
    return torch.repeat_interleave(torch.arange(counts.numel()), counts)


def _check_mapping(similarity: torch.Tensor, text_to_image) -> torch.Tensor:
    if similarity.dim() != 2:
        raise ValueError(f"similarity must be (N_images, N_texts); got shape {tuple(similarity.shape)}.")
    if similarity.numel() == 0:
        raise ValueError(f"similarity is {tuple(similarity.shape)}: there is nothing to rank.")
    if not torch.isfinite(similarity).all():  # NaN compares false both ways: ranks would silently come out best
        bad = (~torch.isfinite(similarity)).nonzero()[0].tolist()
        raise ValueError(f"similarity has non-finite values (first at image {bad[0]}, text {bad[1]}): check the "
                         "embeddings (a model run in float16 may overflow).")
    n_images, n_texts = similarity.shape
    if text_to_image is None:
        if n_images != n_texts:
            raise ValueError(
                f"similarity is {n_images} x {n_texts}: pass text_to_image (the image index of each text) when "
                "images and texts are not paired one to one."
            )
        return torch.arange(n_texts)
    mapping = torch.as_tensor(text_to_image, dtype=torch.long).flatten().cpu()
    if mapping.numel() != n_texts:
        raise ValueError(f"text_to_image has {mapping.numel()} entries but the similarity matrix has {n_texts} texts.")
    if mapping.numel() and (mapping.min() < 0 or mapping.max() >= n_images):
        raise ValueError(f"text_to_image has image indices outside 0..{n_images - 1}.")
    missing = torch.ones(n_images, dtype=torch.bool)
    missing[mapping] = False
    if missing.any():
        raise ValueError(
            f"images {missing.nonzero().flatten()[:10].tolist()} have no caption in text_to_image: every image needs one."
        )
    return mapping


def _stable_rank(scores: torch.Tensor, target_score: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
    """Rank (0 = first) of each row's target under a stable descending sort: how many entries score higher, plus
    how many score equal at a lower index. scores (R, M), target_score (R,), target_index (R,)."""
    positions = torch.arange(scores.shape[1], device=scores.device)
    higher = (scores > target_score[:, None]).sum(1)
    tied_before = ((scores == target_score[:, None]) & (positions[None, :] < target_index[:, None])).sum(1)
    return higher + tied_before


@torch.no_grad()
def retrieval_ranks(
    similarity: torch.Tensor, text_to_image=None, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of the ground truth (0 = retrieved first) in both directions, without sorting the whole matrix.

    similarity (N_images, N_texts). Returns (image_to_text (N_images,): rank of each image's best-ranked caption,
    text_to_image (N_texts,): rank of each caption's image). `text_to_image` defaults to one caption per image.
    """
    mapping = _check_mapping(similarity, text_to_image)
    sim = similarity.float().cpu()
    n_images, n_texts = sim.shape
    # image -> text: the best-ranked ground-truth caption is the one with the highest score, lowest index on ties.
    texts = torch.arange(n_texts)
    gt_score = sim[mapping, texts]
    best_score = torch.full((n_images,), float("-inf")).scatter_reduce(0, mapping, gt_score, "amax")
    candidates = torch.where(gt_score == best_score[mapping], texts, n_texts)
    best_index = torch.full((n_images,), n_texts).scatter_reduce(0, mapping, candidates, "amin")
    i2t = torch.cat(
        [
            _stable_rank(sim[s : s + chunk_size], best_score[s : s + chunk_size], best_index[s : s + chunk_size])
            for s in range(0, n_images, chunk_size)
        ]
    )
    # text -> image
    simt = sim.T
    target = simt[texts, mapping]
    t2i = torch.cat(
        [
            _stable_rank(simt[s : s + chunk_size], target[s : s + chunk_size], mapping[s : s + chunk_size])
            for s in range(0, n_texts, chunk_size)
        ]
    )
    return i2t, t2i


def recall_at_k(similarity: torch.Tensor, text_to_image=None, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@k in percent, both directions: {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", ..., "i2t_rsum", "t2i_rsum",
    "rsum"} for the default ks. similarity (N_images, N_texts); `text_to_image` maps each text to its image."""
    bad = [k for k in ks if not isinstance(k, int) or isinstance(k, bool) or k < 1]
    if bad or not ks:
        raise ValueError(f"ks={list(ks)!r}: each k must be an int >= 1 (recall@k counts the top k).")
    i2t, t2i = retrieval_ranks(similarity, text_to_image)
    result = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            result[f"{name}_r{k}"] = 100.0 * (ranks < k).float().mean().item()
        result[f"{name}_rsum"] = sum(result[f"{name}_r{k}"] for k in ks)
    result["rsum"] = result["i2t_rsum"] + result["t2i_rsum"]
    return result


__all__ = [
    "captions_to_images",
    "image_embeddings",
    "recall_at_k",
    "retrieval_ranks",
    "similarity_matrix",
    "text_embeddings",
]

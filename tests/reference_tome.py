"""The original ToMe (Bolya et al., ICLR 2023) as its paper describes it, written for the tests only: the whole
sequence at once, class token included, batched, in the formulation of the paper's reference implementation (not our
prefix/mergeable split), and imports nothing from pitome_hf. tests/test_faithful.py and scripts/tome_agreement.py
compare `merge_method="tome"` with it over several merging layers.

One step on x (B, N, C) with sizes (B, N) and a metric (B, N, c):
- A = the even sequence positions (the class token, at 0, among them), B = the odd ones;
- every A token scores its best cosine match in B; the class token scores -inf, so it never merges;
- the r A tokens with the highest scores merge into their match (size-weighted mean, sizes add up);
- output: the unmerged A tokens, sorted by position when there is a class token (else in score order), then B.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def tome_step(x: torch.Tensor, sizes: torch.Tensor, metric: torch.Tensor, r: int, class_token: bool = True):
    """(x', sizes') after one original ToMe step merging r tokens."""
    B, N, C = x.shape
    r = min(r, (N - int(class_token)) // 2)
    if r <= 0:
        return x, sizes
    unit = F.normalize(metric.float(), dim=-1)
    scores = unit[:, 0::2] @ unit[:, 1::2].transpose(1, 2)  # (B, |A|, |B|)
    if class_token:
        scores[:, 0, :] = -math.inf
    best, match = scores.max(dim=-1)
    ranked = torch.sort(best, dim=-1, descending=True, stable=True).indices
    unmerged, merged = ranked[:, r:], ranked[:, :r]
    if class_token:
        unmerged = unmerged.sort(dim=-1).values
    into = match.gather(1, merged)  # (B, r) index in B of each merged A token's destination

    def rows(t, idx):
        return t.gather(1, idx[..., None].expand(-1, -1, t.shape[-1]))

    xa, xb = x[:, 0::2], x[:, 1::2]
    sa, sb = sizes[:, 0::2, None], sizes[:, 1::2, None]
    weighted_b = (xb * sb).scatter_add(1, into[..., None].expand(-1, -1, C), rows(xa * sa, merged))
    size_b = sb.scatter_add(1, into[..., None], rows(sa, merged))
    out = torch.cat([rows(xa, unmerged), weighted_b / size_b], dim=1)
    new_sizes = torch.cat([rows(sa, unmerged), size_b], dim=1)[..., 0]
    return out, new_sizes


def vit_logits(model, pixels: torch.Tensor, r_of, proportional: bool = True) -> torch.Tensor:
    """A transformers ViT classifier's logits with the original ToMe in every layer: the stock layer's parts in the
    order the ToMe paper puts the step (attention, residual, merge on the keys averaged over heads, MLP), log(size) on
    the attention logits of every key once merged. `r_of(layer, tokens)`: how many tokens that layer merges."""
    vit = model.vit
    x = vit.embeddings(pixels)
    B = x.shape[0]
    sizes = torch.ones(B, x.shape[1], dtype=x.dtype)
    heads = model.config.num_attention_heads
    for index, layer in enumerate(vit.layers):
        att = layer.attention
        h = layer.layernorm_before(x)
        q, k, v = (p(h).view(B, -1, heads, att.head_dim).transpose(1, 2) for p in (att.q_proj, att.k_proj, att.v_proj))
        logits = q @ k.transpose(-1, -2) / math.sqrt(att.head_dim)
        if proportional:
            logits = logits + sizes.log()[:, None, None, :]
        a = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, -1, heads * att.head_dim)
        x = x + att.o_proj(a)
        x, sizes = tome_step(x, sizes, k.mean(1), r_of(index, x.shape[1] - 1))
        x = x + layer.mlp(layer.layernorm_after(x))
    return model.classifier(vit.layernorm(x)[:, 0])

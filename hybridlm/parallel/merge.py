"""Attention partials and their log-sum-exp merge: the one primitive behind split-KV decoding on one
device (flash-decoding), the tree reduction across ranks (`hybridlm.parallel.tree`, Tree Attention,
arXiv 2408.04093) and the ring-attention baseline (`hybridlm.parallel.ring`).

A partial is the attention of some queries over a subset of the keys: its normalized output `out` and
the log-sum-exp `lse` of its scaled scores. For disjoint key subsets i,

    m = max_i lse_i,   w_i = exp(lse_i - m),   out = sum_i w_i out_i / sum_i w_i,   lse = m + log sum_i w_i

is exactly the attention over their union. An empty subset, or a query that sees none of its keys, has
lse = -inf and weight 0 (a zero there would be wrong); when every part is empty the result is out = 0,
lse = -inf, never NaN. Partials are fp32 whatever the inputs' dtype (bf16 caches accumulate in fp32).
Shapes: q (b, heads, queries, head_dim), k and v (b, kv_heads, keys, head_dim) with heads a multiple of
kv_heads (GQA: query head i reads kv head i // (heads / kv_heads), as SDPA's enable_gqa).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

KV_BLOCK = 8192  # keys per split-KV block
Q_BLOCK = 256  # queries per tile in prefill: a tile's fp32 scores are heads x 256 x 8192 x 4 bytes at most


@dataclass
class Partial:
    out: torch.Tensor  # (b, heads, queries, head_dim) fp32, normalized over its keys
    lse: torch.Tensor  # (b, heads, queries) fp32, -inf where no key is visible

    @classmethod
    def empty(cls, q: torch.Tensor) -> Partial:
        return cls(torch.zeros(q.shape, dtype=torch.float32, device=q.device),
                   torch.full(q.shape[:-1], float("-inf"), dtype=torch.float32, device=q.device))


def weights(lse: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """exp(lse - m) for m = the maximum lse over the parts: 1 for the largest part, 0 for empty ones;
    an all-empty row (m = -inf) gives 0, not NaN."""
    return torch.exp(lse - _finite(m))


def normalize(num: torch.Tensor, den: torch.Tensor, m: torch.Tensor) -> Partial:
    """The merged partial from num = sum_i w_i out_i (.., d), den = sum_i w_i and the maximum m: den >= 1
    unless every part was empty, where out = 0 and lse = -inf."""
    out = num / den.clamp(min=torch.finfo(den.dtype).tiny)[..., None]
    return Partial(out, _finite(m) + torch.log(den))


def merge(parts: Sequence[Partial]) -> Partial:
    """Merge partials over disjoint key subsets (in the given order, so the result is deterministic)."""
    if len(parts) == 1:
        return parts[0]
    lse = torch.stack([p.lse for p in parts])
    m = lse.amax(0)
    w = weights(lse, m)
    num = sum(wi[..., None] * p.out for wi, p in zip(w.unbind(0), parts, strict=True))
    return normalize(num, w.sum(0), m)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, q_pos: torch.Tensor | None = None,
           k_pos: torch.Tensor | None = None, window: int | None = None, kv_block: int = KV_BLOCK,
           q_block: int = Q_BLOCK) -> Partial:
    """Attention of q over the keys k, v as a partial. With positions (q_pos (queries,), k_pos (keys,)),
    key j is visible to query i iff k_pos[j] <= q_pos[i] (causal) and, with `window`, k_pos[j] > q_pos[i] -
    window; without, every key is. Keys run in blocks of `kv_block` merged by `merge` (split-KV), queries in
    tiles of `q_block`, so memory stays O(q_block x kv_block) at any length."""
    n = k.shape[2]
    if n == 0:
        return Partial.empty(q)
    tiles = []
    for i in range(0, q.shape[2], q_block):
        qi = q[:, :, i:i + q_block]
        qp = q_pos[i:i + q_block] if q_pos is not None else None
        parts = []
        for j in range(0, n, kv_block):
            kp = k_pos[j:j + kv_block] if k_pos is not None else None
            mask = _visible(qp, kp, window)
            if mask is not None and not bool(mask.any()):
                continue  # a block no query sees: it contributes nothing (lse -inf)
            parts.append(_attend_block(qi, k[:, :, j:j + kv_block], v[:, :, j:j + kv_block], scale, mask))
        tiles.append(merge(parts) if parts else Partial.empty(qi))
    if len(tiles) == 1:
        return tiles[0]
    return Partial(torch.cat([t.out for t in tiles], dim=2), torch.cat([t.lse for t in tiles], dim=2))


def split_kv_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                       kv_block: int = KV_BLOCK) -> torch.Tensor:
    """Flash-decoding on one device: new queries (after every cached key) over a long cache, the keys
    processed in blocks of `kv_block` and merged; returns the output in q's dtype."""
    return attend(q, k, v, scale, kv_block=kv_block).out.to(q.dtype)


def _attend_block(q, k, v, scale: float, mask: torch.Tensor | None) -> Partial:
    b, h, lq, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    e = h // hkv  # query heads per kv head: fold them into the query axis instead of repeating K/V
    qf = q.float().reshape(b, hkv, e * lq, d)
    scores = (qf @ k.float().transpose(-1, -2)).mul_(scale).view(b, hkv, e, lq, n)
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (b, hkv, e, lq); -inf where a query sees none of these keys
    p = torch.exp(scores.sub_(_finite(lse)[..., None]))
    out = p.view(b, hkv, e * lq, n) @ v.float()
    return Partial(out.view(b, h, lq, d), lse.reshape(b, h, lq))


def _visible(q_pos, k_pos, window: int | None) -> torch.Tensor | None:
    """(queries, keys) bool mask, or None when every key is visible to every query."""
    if q_pos is None or k_pos is None:
        return None
    before_all = bool(k_pos.max() <= q_pos.min())
    inside_all = window is None or bool(k_pos.min() > q_pos.max() - window)
    if before_all and inside_all:
        return None
    mask = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        mask &= k_pos[None, :] > q_pos[:, None] - window
    return mask


def _finite(m: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))

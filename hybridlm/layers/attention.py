"""Causal multi-head / grouped-query attention with optional RoPE and a preallocated KV cache.

The same module serves ordinary attention layers and Zamba's shared attention, whose input is
the 2d-wide concat([x, x0]) and whose q/k/v may get per-invocation LoRA deltas."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.layers.casts import cast
from hybridlm.layers.segments import Segments


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin tables (..., len, head_dim) for the rotate-half convention over the full head_dim;
    positions (len,) or (batch, len)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def single_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                           mask: torch.Tensor | None = None) -> torch.Tensor:
    """One decoding step: q (b, heads, 1, d) over k, v (b, kv_heads, keys, d) as two batched matmuls,
    the query heads grouped by the KV head they share (GQA); cheaper than an SDPA call for one query.
    `mask` (b, 1, 1, keys) bool keeps keys."""
    b, h, _, d = q.shape
    kv = k.shape[1]
    scores = torch.matmul(q.reshape(b, kv, h // kv, d) * scale, k.transpose(-1, -2))  # (b, kv, h/kv, keys)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(scores.softmax(-1), v).view(b, h, 1, d)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, heads, len, head_dim)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, n_heads: int, n_kv_heads: int, head_dim: int,
                 rope: bool = True, rope_theta: float = 10000.0, scale: float | None = None,
                 qkv_bias: bool = False, out_bias: bool = False):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.rope, self.rope_theta = rope, rope_theta
        self.scale = scale if scale is not None else head_dim ** -0.5
        self.q_proj = nn.Linear(in_dim, n_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(in_dim, n_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(in_dim, n_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * head_dim, out_dim, bias=out_bias)

    def allocate_cache(self, batch: int, max_len: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        shape = (batch, self.n_kv_heads, max_len, self.head_dim)
        return {"k": torch.zeros(shape, dtype=dtype, device=device),
                "v": torch.zeros(shape, dtype=dtype, device=device)}

    def forward(self, x: torch.Tensor, cache: dict[str, torch.Tensor] | None = None, offset: int = 0,
                lora: tuple[nn.Module, nn.Module, nn.Module] | None = None,
                segments: Segments | None = None) -> torch.Tensor:
        """x (b, l, in_dim), or (b, in_dim) for one decoded token (then the output is (b, out_dim))."""
        q, k, v = self.project(x, offset, lora, segments.positions if segments is not None else None)
        attend = getattr(cache, "attend", None)  # a cache slot that attends across ranks (hybridlm.parallel.kv)
        if attend is not None:
            y = attend(self, q, k, v, offset, segments)
        else:
            y = self.attend(q, k, v, cache, offset, segments)
        if x.dim() == 2:
            return self.o_proj(y.reshape(x.shape[0], self.n_heads * self.head_dim))
        return self.o_proj(y.transpose(1, 2).reshape(*x.shape[:2], self.n_heads * self.head_dim))

    def project(self, x: torch.Tensor, offset: int, lora=None, positions: torch.Tensor | None = None):
        """q (b, heads, l, head_dim), k and v (b, kv_heads, l, head_dim), RoPE applied at `positions`
        ((b, l), e.g. within each segment) or else at offset, offset + 1, ..."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if lora is not None:
            q, k, v = q + lora[0](x), k + lora[1](x), v + lora[2](x)
        if x.dim() == 2:  # one token: (b, heads * head_dim) is already (b, heads, 1, head_dim) in memory
            b, l = x.shape[0], 1
            q = q.view(b, self.n_heads, 1, self.head_dim)
            k = k.view(b, self.n_kv_heads, 1, self.head_dim)
            v = v.view(b, self.n_kv_heads, 1, self.head_dim)
        else:
            b, l, _ = x.shape
            q = q.view(b, l, self.n_heads, self.head_dim).transpose(1, 2)
            k = k.view(b, l, self.n_kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(b, l, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope:
            cos, sin = self._rope_tables(offset + l, x.device)  # positions within a segment are <= absolute ones
            if positions is None:
                cos, sin = cos[offset:offset + l], sin[offset:offset + l]
            else:  # per row: (b, l, d) -> (b, 1, l, d)
                cos, sin = cos[positions][:, None], sin[positions][:, None]
            q, k = apply_rope(q, cast(cos, q.dtype), cast(sin, q.dtype)), apply_rope(k, cast(cos, k.dtype),
                                                                                     cast(sin, k.dtype))
        return q, k, v

    def _rope_tables(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 cos/sin for positions [0, n) and beyond, computed once and grown by doubling (decoding
        then only indexes them)."""
        tables = getattr(self, "_rope", None)
        if tables is None or tables[0].shape[0] < n or tables[0].device != torch.device(device):
            size = max(n, 2 * tables[0].shape[0] if tables is not None else 256)
            positions = torch.arange(size, device=device)
            self._rope = rope_cos_sin(positions, self.head_dim, self.rope_theta, torch.float32)
        return self._rope

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache, offset: int,
               segments: Segments | None = None) -> torch.Tensor:
        """Causal attention of the new queries over every key so far (the cache's and the new ones),
        within each query's segment when `segments` are given."""
        l = q.shape[2]
        mask, causal = None, True
        if cache is not None:
            cache["k"][:, :, offset:offset + l] = k
            cache["v"][:, :, offset:offset + l] = v
            k, v = cache["k"][:, :, :offset + l], cache["v"][:, :, :offset + l]
        if segments is not None:
            first = 0 if cache is not None else offset
            mask, causal = segments.key_mask(torch.arange(first, offset + l, device=q.device)), False
            if l == 1:
                return single_query_attention(q, k, v, self.scale, mask)
        elif cache is not None:
            if l == 1:
                return single_query_attention(q, k, v, self.scale)
            elif offset > 0:  # a chunk after earlier tokens: query i sees keys <= offset + i
                causal = False
                mask = torch.ones(l, offset + l, dtype=torch.bool, device=q.device).tril(diagonal=offset)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale,
                                              enable_gqa=self.n_kv_heads != self.n_heads)

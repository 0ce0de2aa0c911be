"""Sliding-window causal attention: query i attends the keys j with i - window < j <= i, the last
`window` tokens including itself (Mistral's and Character.AI's local attention).

Decoding keeps a rolling KV cache of `window` entries (position p lives in slot p % window): its
memory is constant in the length, like an SSM state. Sequences longer than the window run blockwise,
so the work is O(l * window) rather than O(l^2): the queries in blocks of `window`, each block
attending its own keys and the previous block's (2 * window keys) under the window mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybridlm.layers.attention import Attention, single_query_attention
from hybridlm.layers.segments import Segments


class SlidingWindowAttention(Attention):
    def __init__(self, *args, window: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.window = window

    def allocate_cache(self, batch: int, max_len: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        return super().allocate_cache(batch, min(self.window, max_len), dtype, device)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache, offset: int,
               segments: Segments | None = None) -> torch.Tensor:
        if cache is None:
            return self._windowed(q, k, v, 0, segments)
        l, size = q.shape[2], cache["k"].shape[2]
        if l == 1:  # every cached key is inside the window: no mask but the segment's
            slot = offset % size
            cache["k"][:, :, slot], cache["v"][:, :, slot] = k[:, :, 0], v[:, :, 0]
            n = min(offset + 1, size)
            mask = None
            if segments is not None:
                held = offset - (offset - torch.arange(n, device=q.device)) % size  # position in each slot
                mask = segments.key_mask(held)
            return single_query_attention(q, cache["k"][:, :, :n], cache["v"][:, :, :n], self.scale, mask)
        start = max(0, offset - self.window + 1)  # the earliest position a new query can see
        past = torch.arange(start, offset, device=q.device) % size
        k = torch.cat([cache["k"][:, :, past], k], dim=2)
        v = torch.cat([cache["v"][:, :, past], v], dim=2)
        y = self._windowed(q, k, v, offset - start, segments)
        keep = torch.arange(max(start, offset + l - size), offset + l, device=q.device)  # the last `size` positions
        cache["k"][:, :, keep % size], cache["v"][:, :, keep % size] = k[:, :, keep - start], v[:, :, keep - start]
        return y

    def _windowed(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int,
                  segments: Segments | None = None) -> torch.Tensor:
        """q: l queries; k, v: the `past` (< window) keys before them, then one per query."""
        b, h, l, d = q.shape
        w = self.window
        if past == 0 and l <= w:  # the window covers every earlier token: plain causal attention
            if segments is None:
                return self._sdpa(q, k, v, None, True)
            keys = torch.arange(segments.offset, segments.offset + l, device=q.device)
            return self._sdpa(q, k, v, segments.key_mask(keys), False)
        n_blocks = -(-l // w)
        # left-pad the keys to a full window before the first query and right-pad everything to whole
        # blocks: block c then holds queries c*w .. c*w + w - 1 and padded keys c*w .. c*w + 2w - 1
        left, right = w - past, (n_blocks * w - l)
        q = F.pad(q, (0, 0, 0, right))
        k, v = (F.pad(t, (0, 0, left, right)) for t in (k, v))
        q = q.view(b, h, n_blocks, w, d).transpose(1, 2).flatten(0, 1)  # (b * blocks, h, w, d)
        k, v = (t.unfold(2, 2 * w, w).permute(0, 2, 1, 4, 3).flatten(0, 1) for t in (k, v))  # (b*blocks, kv, 2w, d)
        i = torch.arange(w, device=q.device)[:, None]
        j = torch.arange(2 * w, device=q.device)[None, :]
        block_start = torch.arange(n_blocks, device=q.device)[:, None, None] * w
        mask = ((j > i) & (j <= i + w) & (block_start + j >= left))[None]  # in the window, not left padding
        if segments is not None:  # and in the query's segment: key position >= the segment's start
            starts = torch.cat([segments.start, segments.start[:, -1:].expand(b, right)], dim=1)
            key_pos = segments.offset - w + block_start + j  # (blocks, 1, 2w)
            mask = mask & (key_pos[None] >= starts.view(b, n_blocks, w, 1))
        mask = mask[:, :, None].expand(b, n_blocks, 1, w, 2 * w).flatten(0, 1)
        y = self._sdpa(q, k, v, mask, False)
        return y.unflatten(0, (b, n_blocks)).transpose(1, 2).flatten(2, 3)[:, :, :l]

    def _sdpa(self, q, k, v, mask, causal: bool) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale,
                                              enable_gqa=self.n_kv_heads != self.n_heads)

"""Attention caches under context parallelism. Each is the layer's cache slot (a dict of 'k' and 'v', so
cache byte counts see it) that also knows how to attend: `Attention.forward` calls `slot.attend(module,
q, k, v, offset)` in place of the module's own `attend` when the slot has one.

`ShardedKV` (full attention, Zamba's shared attention): this rank's shard of the positions.
  prefill  the rank's queries (its slice) over the slices of every rank up to its own, the blocks passed
           around the ring (or all-gathered) and merged by log-sum-exp; causal within its own slice.
  decode   the new token's K/V joins one rank's shard (`SequenceLayout.owner`); every rank attends its
           shard in split-KV blocks and the partials combine by the tree reduction (two all-reduces of
           b x heads x (head_dim + 2) values) or, as the baseline, by passing the shards around the ring.
`WindowKV` (sliding window): the rolling cache of `window` keys is replicated, like an SSM state. Prefill
  takes the window - 1 keys before the slice from its predecessors (a halo); decoding needs no
  communication at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hybridlm.errors import HybridLMError
from hybridlm.parallel.halo import gather_tails
from hybridlm.parallel.merge import Partial, attend, merge
from hybridlm.parallel.tree import tree_merge

if TYPE_CHECKING:
    from hybridlm.parallel.context import ContextParallel


class ShardedKV(dict):
    def __init__(self, cp: ContextParallel, cache: dict[str, torch.Tensor]):
        super().__init__(cache)
        self.cp = cp
        self.length = 0  # keys held

    def attend(self, module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offset: int,
               segments=None) -> torch.Tensor:
        _no_segments(segments)
        part = self._prefill(module, q, k, v, offset) if self.cp.prefilling else self._decode(module, q, k, v, offset)
        return part.out.to(q.dtype)

    def _prefill(self, module, q, k, v, offset: int) -> Partial:
        cp, l = self.cp, q.shape[2]
        self._store(k, v, 0)
        q_pos = torch.arange(offset, offset + l, device=q.device)
        parts = []
        for src, block in cp.kv_blocks(torch.stack([k, v])):
            if src > cp.rank:
                continue  # later positions: no query here sees them
            start = cp.layout.starts[src]
            k_pos = torch.arange(start, start + block.shape[3], device=q.device)
            parts.append((src, attend(q, block[0], block[1], module.scale, q_pos, k_pos, kv_block=cp.kv_block)))
        return merge([p for _, p in sorted(parts, key=lambda sp: sp[0])])

    def _decode(self, module, q, k, v, offset: int) -> Partial:
        cp = self.cp
        if q.shape[2] != 1:
            raise HybridLMError(f"context-parallel decoding takes one token per step, got {q.shape[2]}")
        if cp.layout.owner(offset) == cp.rank:
            self._store(k, v, self.length)
        keys, values = self["k"][:, :, :self.length], self["v"][:, :, :self.length]
        if cp.mode == "tree":
            return tree_merge(attend(q, keys, values, module.scale, kv_block=cp.kv_block), cp.comm)
        lengths = [cp.layout.shard_length(r, offset + 1) for r in range(cp.world)]
        parts = dict(
            (src, attend(q, block[0], block[1], module.scale, kv_block=cp.kv_block))
            for src, block in cp.ring(torch.stack([keys, values]), lengths)
        )
        return merge([parts[r] for r in range(cp.world)])  # rank order: the same result on every rank

    def _store(self, k: torch.Tensor, v: torch.Tensor, at: int) -> None:
        n = k.shape[2]
        if at + n > self["k"].shape[2]:
            raise HybridLMError(f"KV shard holds {self['k'].shape[2]} positions; {at + n} do not fit")
        self["k"][:, :, at:at + n] = k
        self["v"][:, :, at:at + n] = v
        self.length = at + n


class WindowKV(dict):
    def __init__(self, cp: ContextParallel, cache: dict[str, torch.Tensor]):
        super().__init__(cache)
        self.cp = cp

    def attend(self, module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offset: int,
               segments=None) -> torch.Tensor:
        _no_segments(segments)
        if not self.cp.prefilling:
            return module.attend(q, k, v, self, offset)
        b, hkv, l, d = k.shape
        size = self["k"].shape[2]
        rows = torch.cat([k, v], dim=-1).transpose(1, 2).reshape(b, l, hkv * 2 * d)
        before, last = gather_tails(self.cp.comm, rows, self.cp.layout.lengths, size)
        self._write(before, offset - min(module.window - 1, offset), offset)
        y = module.attend(q, k, v, self, offset)  # the layer's own windowed attention, halo in the cache
        total = self.cp.layout.length
        self._write(last, total - min(size, total), total)  # every rank continues from the prompt's end
        return y

    def _write(self, rows: torch.Tensor, start: int, stop: int) -> None:
        """Positions [start, stop) from the last rows of `rows` (b, t, hkv * 2d) into their rolling slots."""
        if stop <= start:
            return
        b, hkv, size, d = self["k"].shape
        kv = rows[:, rows.shape[1] - (stop - start):].view(b, stop - start, hkv, 2 * d).transpose(1, 2)
        slots = torch.arange(start, stop, device=rows.device) % size
        self["k"][:, :, slots], self["v"][:, :, slots] = kv[..., :d], kv[..., d:]


def _no_segments(segments) -> None:
    if segments is not None:
        raise HybridLMError("context parallelism takes one sequence per row: no attention_mask or seq_idx")

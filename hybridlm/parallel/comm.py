"""The collectives context parallelism uses, over a process group or over none (a single rank), each
counting the bytes this rank hands to it: an all-reduce its tensor, an all-gather its own part, a ring
hop the block it sends, a broadcast the tensor on the source rank (others 0). That is the payload of the
Tree Attention paper's analysis (tree: b x heads x (head_dim + 2) x 4 bytes per step; ring: the KV shard
per hop); what an all-gather receives is counted apart. With one rank nothing moves and nothing counts.
`hybridlm generate --json` and `hybridlm bench decode` report these counts, the largest over ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist

OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}


class Comm:
    def __init__(self, group: dist.ProcessGroup | None = None):
        self.group = group
        active = dist.is_available() and dist.is_initialized()
        self.world = dist.get_world_size(group) if active else 1
        self.rank = dist.get_rank(group) if active else 0
        self.sent = 0  # payload bytes handed to collectives since the last reset
        self.received = 0  # bytes that arrived from other ranks (all-gather parts, ring blocks, broadcasts)

    def reset(self) -> None:
        self.sent = self.received = 0

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In place."""
        if self.world > 1:
            self._count(t, t)
            dist.all_reduce(t, op=OPS[op], group=self.group)
        return t

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `t` (all the same shape), in rank order."""
        if self.world == 1:
            return [t]
        t = t.contiguous()
        out = [torch.empty_like(t) for _ in range(self.world)]
        self._count(t, t, self.world - 1)
        dist.all_gather(out, t, group=self.group)
        return out

    def broadcast(self, t: torch.Tensor, src: int) -> torch.Tensor:
        """In place, from rank `src` of the group."""
        if self.world > 1:
            if self.rank == src:
                self.sent += _nbytes(t)
            else:
                self.received += _nbytes(t)
            dist.broadcast(t, src=self._global(src), group=self.group)
        return t

    def start_shift(self, send: torch.Tensor, recv: torch.Tensor) -> list:
        """Start sending `send` to the next rank of the ring while receiving `recv` from the previous one;
        returns the pending works (wait on each)."""
        self._count(send, recv)
        ops = [dist.P2POp(dist.isend, send, self._global((self.rank + 1) % self.world), self.group),
               dist.P2POp(dist.irecv, recv, self._global((self.rank - 1) % self.world), self.group)]
        return dist.batch_isend_irecv(ops)

    def _count(self, sent: torch.Tensor, received: torch.Tensor, times: int = 1) -> None:
        self.sent += _nbytes(sent)
        self.received += times * _nbytes(received)

    def _global(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()

"""The rows just before a rank's slice (a halo) and the prompt's last rows, from every rank's tail.

A depthwise conv of width k needs the k - 1 inputs before a slice; a sliding window of w keys the w - 1
keys before it; after the prompt every rank needs the last rows to continue from. A slice may be shorter
than that, so each rank contributes its last min(t, length) rows and the halo is the last t rows of its
predecessors' contributions in order (zeros before the prompt: a causal conv's padding)."""

from __future__ import annotations

import torch

from hybridlm.parallel.comm import Comm


def gather_tails(comm: Comm, x: torch.Tensor, lengths: list[int], t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (b, l, c), this rank's rows of the prompt; lengths: every rank's l. Returns (before, last), each
    (b, t, c): the t rows before this rank's slice and the prompt's last t rows, zero-filled on the left."""
    b, l, c = x.shape
    n = min(t, l)
    tail = x.new_zeros(b, t, c)
    tail[:, t - n:] = x[:, l - n:]
    tails = [part[:, t - min(t, size):] for part, size in zip(comm.all_gather(tail), lengths, strict=True)]
    pad = x.new_zeros(b, t, c)
    before = torch.cat([pad, *tails[:comm.rank]], dim=1)[:, -t:]
    last = torch.cat([pad, *tails], dim=1)[:, -t:]
    return before, last

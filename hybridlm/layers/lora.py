"""Low-rank adapters. In Zamba2 they belong to one *invocation* of a shared block, not to the block."""

from __future__ import annotations

import torch
from torch import nn


class LoRA(nn.Module):
    """delta(x) = B(A(x)), A: in -> rank, B: rank -> out, no biases."""

    def __init__(self, in_dim: int, out_dim: int, rank: int):
        super().__init__()
        self.a = nn.Linear(in_dim, rank, bias=False)
        self.b = nn.Linear(rank, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))

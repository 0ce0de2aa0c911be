"""Feed-forward blocks: plain (act(x W1) W2) and gated (act(x W_gate) * (x W_up)) W2.

Gated MLPs keep gate and up fused in one `up` projection, gate rows first (as Zamba2's
gate_up_proj); a LoRA delta on that projection is added before the split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


class MLP(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, activation: str = "gelu", gated: bool = False, bias: bool = False):
        super().__init__()
        self.gated = gated
        self.act = ACTIVATIONS[activation]
        self.up = nn.Linear(dim, 2 * ffn_dim if gated else ffn_dim, bias=bias)
        self.down = nn.Linear(ffn_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, lora: nn.Module | None = None) -> torch.Tensor:
        h = self.up(x)
        if lora is not None:
            h = h + lora(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        return self.down(h)

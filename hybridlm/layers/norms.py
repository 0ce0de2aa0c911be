"""RMSNorm (computed in fp32, as the reference implementations do), LayerNorm, and Mamba2's gated,
grouped RMSNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.layers.casts import cast, fp32


class RMSNorm(nn.Module):
    """y = weight * x / sqrt(mean(x^2) + eps), normalized in fp32 then cast back before the weight."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = fp32(x)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * cast(xf, x.dtype)


class LayerNorm(nn.LayerNorm):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__(dim, eps=eps)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if kind == "rmsnorm" else LayerNorm(dim, eps)


class GatedRMSNorm(nn.Module):
    """Mamba2's output norm: RMSNorm(y * silu(z)) over groups of `group_size` channels (the gate comes
    first, then the norm; each of the G groups is normalized on its own)."""

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.group_size = group_size
        self.eps = eps
        self.stats_reduce = None  # tensor parallelism: averages the mean square over ranks sharing a group

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = y.dtype
        h = fp32(y) * F.silu(fp32(z))
        g = h.unflatten(-1, (-1, self.group_size))
        ms = g.pow(2).mean(-1, keepdim=True)
        if self.stats_reduce is not None:
            ms = self.stats_reduce(ms)
        g = g * torch.rsqrt(ms + self.eps)
        return self.weight * cast(g.flatten(-2), dtype)

"""Dtype casts that cost nothing when there is nothing to cast.

`t.float()` on a tensor that is already fp32 returns it, but only after a trip through the dispatcher
(about 2 us on a CPU core); decoding one token of a small model ran ~400 of them. These check the
dtype in Python first."""

from __future__ import annotations

import torch


def fp32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype is torch.float32 else t.float()


def cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype is dtype else t.to(dtype)

"""Depthwise causal conv1d over the sequence, with a rolling state for decoding.

With a cache, the conv state holds the last (kernel - 1) inputs; zeros are exactly the causal
zero-padding, so prefill and continuation share one code path."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                state: torch.Tensor | None = None) -> torch.Tensor:
    """x (b, c, l), weight (c, 1, k). `state` (b, c, k-1) is the left context, updated in place."""
    k = weight.shape[-1]
    left = state.to(x.dtype) if state is not None else x.new_zeros(x.shape[0], x.shape[1], k - 1)
    full = torch.cat([left, x], dim=-1)
    if state is not None:
        state.copy_(full[..., -(k - 1):])
    return F.conv1d(full, weight, bias, groups=x.shape[1])


def causal_conv_step(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     state: torch.Tensor) -> torch.Tensor:
    """One token: x (b, c). Returns (b, c) and shifts `state` (b, c, k-1) in place."""
    window = torch.cat([state, x[..., None].to(state.dtype)], dim=-1)  # (b, c, k)
    y = (window * weight[:, 0, :]).sum(-1)
    if bias is not None:
        y = y + bias
    state.copy_(window[..., 1:])
    return y.to(x.dtype)

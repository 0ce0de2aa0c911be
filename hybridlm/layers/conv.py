"""Depthwise causal conv1d over the sequence, with a rolling state for decoding.

    y[t, c] = bias[c] + sum_{j < k} w[c, j] * x[t - (k - 1) + j, c]

Written as k shifted multiply-adds in (batch, length, channels) layout: on CPU this beats the
depthwise F.conv1d (forward and backward) and needs no transposes. With a cache, the state holds the
last (k - 1) inputs; zeros are exactly the causal zero-padding, so prefill and continuation share
one code path. `taps` (from `Segments.conv_taps`) drops the inputs of an earlier segment, exactly
as the causal zero padding of a separate run would."""

from __future__ import annotations

import torch

from hybridlm.layers.casts import cast


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                state: torch.Tensor | None = None, taps: torch.Tensor | None = None) -> torch.Tensor:
    """x (b, l, c), weight (c, 1, k). `state` (b, k-1, c) is the left context, updated in place;
    `taps` (b, l, k) bool keeps tap j of token t (which reads input t - (k - 1) + j)."""
    b, l, c = x.shape
    k = weight.shape[-1]
    left = state.to(x.dtype) if state is not None else x.new_zeros(b, k - 1, c)
    full = torch.cat([left, x], dim=1)  # (b, l + k - 1, c)
    if state is not None:
        state.copy_(full[:, l:])
    w = weight[:, 0, :].t()  # (k, c)
    if taps is not None:
        keep = taps.to(x.dtype)[..., None]  # (b, l, k, 1)
        y = full[:, k - 1:] * w[k - 1] * keep[:, :, k - 1]
        for j in range(k - 1):
            y = y + full[:, j:j + l] * w[j] * keep[:, :, j]
    else:
        y = full[:, k - 1:] * w[k - 1]
        for j in range(k - 1):
            y = y + full[:, j:j + l] * w[j]
    y = y + bias if bias is not None else y
    return y.to(x.dtype)  # fp32 weights must not promote bf16 activations (causal_conv1d keeps the input dtype)


def causal_conv_step(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     state: torch.Tensor, taps: torch.Tensor | None = None) -> torch.Tensor:
    """One token: x (b, c). Returns (b, c) and shifts `state` (b, k-1, c) in place; `taps` (b, k) bool."""
    window = torch.cat([state, cast(x[:, None], state.dtype)], dim=1)  # (b, k, c)
    taken = window if taps is None else window * taps.to(window.dtype)[..., None]
    y = (taken * weight[:, 0, :].t()).sum(1)
    if bias is not None:
        y = y + bias
    state.copy_(window[:, 1:])
    return cast(y, x.dtype)

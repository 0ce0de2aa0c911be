"""Mamba2's state-space duality (SSD): the chunked scan for training/prefill and the recurrent step.

Notation (Mamba2 paper): per head h, with scalar decay a_t = dt_t * A_h (A_h < 0),
    state_t = exp(a_t) * state_{t-1} + dt_t * x_t B_t^T        (state: headdim x d_state)
    y_t     = state_t C_t + D_h * x_t
Head h reads B and C of group h // (H / G).

The chunked form splits the sequence into chunks of Q steps. Inside a chunk the output is a masked
"attention" y = (L o C B^T) X with L[t, s] = exp(sum_{s<u<=t} a_u); chunk-final states are passed
between chunks by a short recurrence, and their contribution C_t exp(cumsum a) state is added.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Stable segment sums: out[..., t, s] = sum_{s < u <= t} a[..., u] for t >= s, -inf above the diagonal."""
    q = a.shape[-1]
    a = a[..., None].expand(*a.shape, q)  # (..., t(u), s)
    strict = torch.ones(q, q, dtype=torch.bool, device=a.device).tril(-1)
    a = a.masked_fill(~strict, 0)
    out = a.cumsum(dim=-2)
    keep = torch.ones(q, q, dtype=torch.bool, device=a.device).tril(0)
    return out.masked_fill(~keep, float("-inf"))


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk_size: int, initial_state: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (b, l, h, p), dt (b, l, h) already softplus'd, A (h,), B/C (b, l, g, n).

    Returns y (b, l, h, p) without the D skip, and the final state (b, h, p, n). Computes in fp32.
    """
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    e = h // g  # heads per group
    q = chunk_size
    pad = (-l) % q
    x, dt, B, C = (t.float() for t in (x, dt, B, C))
    if pad:
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))  # dt = 0 on padding: no decay, no input
    c = (l + pad) // q
    xdt = (x * dt[..., None]).view(b, c, q, g, e, p)
    a = (dt * A.float()).view(b, c, q, g, e).permute(0, 3, 4, 1, 2)  # (b, g, e, c, q)
    B = B.view(b, c, q, g, n)
    C = C.view(b, c, q, g, n)
    a_cum = a.cumsum(-1)

    # 1. within chunks: y = (L o C B^T) (x dt)
    L = torch.exp(segsum(a))  # (b, g, e, c, t, s)
    CB = torch.einsum("bctgn,bcsgn->bgcts", C, B)
    y = torch.einsum("bgects,bgcts,bcsgep->bctgep", L, CB, xdt)

    # 2. each chunk's own final state (from zero)
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, g, e, c, q)
    chunk_states = torch.einsum("bcsgn,bgecs,bcsgep->bcgepn", B, decay_to_end, xdt)

    # 3. pass states between chunks: S_c = exp(sum a over chunk c-1) S_{c-1} + chunk_state_{c-1}
    chunk_decay = torch.exp(a_cum[..., -1])  # (b, g, e, c)
    state = (initial_state.float().view(b, g, e, p, n) if initial_state is not None
             else x.new_zeros(b, g, e, p, n))
    starts = []
    for i in range(c):
        starts.append(state)
        state = chunk_decay[..., i, None, None] * state + chunk_states[:, i]
    start_states = torch.stack(starts, dim=1)  # (b, c, g, e, p, n)

    # 4. contribution of each chunk's start state: C_t exp(a_cum_t) S_c
    decay_from_start = torch.exp(a_cum)  # (b, g, e, c, q)
    y = y + torch.einsum("bctgn,bcgepn,bgect->bctgep", C, start_states, decay_from_start)

    y = y.reshape(b, c * q, h, p)[:, :l]
    return y, state.reshape(b, h, p, n)


def ssd_step(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
             B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """One token. state (b, h, p, n) is updated in place; x (b, h, p), dt (b, h), B/C (b, g, n).
    Returns y (b, h, p) without the D skip."""
    b, h, p, n = state.shape
    g = B.shape[1]
    e = h // g
    dA = torch.exp(dt.float() * A.float())  # (b, h)
    s = state.float().view(b, g, e, p, n)
    xdt = (x.float() * dt.float()[..., None]).view(b, g, e, p)
    s = s * dA.view(b, g, e, 1, 1) + xdt[..., None] * B.float()[:, :, None, None, :]
    state.copy_(s.view(b, h, p, n))
    y = torch.einsum("bgepn,bgn->bgep", s, C.float())
    return y.reshape(b, h, p)

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

from hybridlm.layers.casts import fp32


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk_size: int, initial_state: torch.Tensor | None = None, resets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (b, l, h, p), dt (b, l, h) already softplus'd, A (h,), B/C (b, l, g, n).

    Returns y (b, l, h, p) without the D skip, and the final state (b, h, p, n). Computes in fp32.
    Works head-major, (b, g, e, c, q, .) with e = heads per group, so every product is a batched matmul.
    `resets` (b, l) bool discards the state before a token (a new segment: packed documents, padding):
    every decay that would carry state across a reset is zeroed, as mamba_ssm's `seq_idx` does.
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
    seg = None  # segment number of each position (0: the initial state's), (b, 1, 1, c, q)
    if resets is not None:
        seg = resets.long().cumsum(1)
        seg = torch.cat([seg, seg[:, -1:].expand(b, pad)], dim=1).view(b, 1, 1, c, q)
        seg_before = torch.cat([seg.new_zeros(b, 1, 1, 1), seg[..., :-1, -1]], dim=-1)  # (b, 1, 1, c)
    xdt = (x * dt[..., None]).view(b, c, q, g, e, p).permute(0, 3, 4, 1, 2, 5)  # (b, g, e, c, q, p)
    a_cum = (dt * A.float()).view(b, c, q, g, e).permute(0, 3, 4, 1, 2).cumsum(-1)  # (b, g, e, c, q)
    B = B.view(b, c, q, g, n).permute(0, 3, 1, 2, 4)[:, :, None]  # (b, g, 1, c, q, n)
    C = C.view(b, c, q, g, n).permute(0, 3, 1, 2, 4)[:, :, None]

    # 1. within chunks: y = (L o C B^T) (x dt), L[t, s] = exp(a_cum[t] - a_cum[s]) for t >= s
    segsum = segsum_from_cumsum(a_cum)
    if seg is not None:
        segsum = segsum.masked_fill(seg[..., :, None] != seg[..., None, :], float("-inf"))
    L = torch.exp(segsum)  # (b, g, e, c, q, q)
    y = (L * (C @ B.transpose(-1, -2))) @ xdt  # (b, g, e, c, q, p)

    # 2. each chunk's own final state (from zero): sum_s exp(a_cum[-1] - a_cum[s]) (x dt)_s B_s^T
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, g, e, c, q)
    if seg is not None:
        decay_to_end = decay_to_end * (seg == seg[..., -1:])
    decay_to_end = decay_to_end[..., None]
    chunk_states = (xdt * decay_to_end).transpose(-1, -2) @ B  # (b, g, e, c, p, n)

    # 3. pass states between chunks: S_c = exp(sum of a over chunk c-1) S_{c-1} + chunk_state_{c-1}
    chunk_decay = torch.exp(a_cum[..., -1])  # (b, g, e, c)
    if seg is not None:  # the state entering a chunk survives it only if no segment starts inside
        chunk_decay = chunk_decay * (seg[..., -1] == seg_before)
    chunk_decay = chunk_decay[..., None, None]
    state = (initial_state.float().view(b, g, e, p, n) if initial_state is not None
             else x.new_zeros(b, g, e, p, n))
    starts = []
    # unbind once: indexing inside the loop would make autograd zero-fill a full-size gradient per chunk
    for decay, new_state in zip(chunk_decay.unbind(3), chunk_states.unbind(3), strict=True):
        starts.append(state)
        state = decay * state + new_state
    start_states = torch.stack(starts, dim=3)  # (b, g, e, c, p, n)

    # 4. contribution of each chunk's start state: exp(a_cum[t]) C_t S_c
    decay_from_start = torch.exp(a_cum)
    if seg is not None:
        decay_from_start = decay_from_start * (seg == seg_before[..., None])
    y = y + (C * decay_from_start[..., None]) @ start_states.transpose(-1, -2)

    y = y.permute(0, 3, 4, 1, 2, 5).reshape(b, c * q, h, p)[:, :l]
    return y, state.reshape(b, h, p, n)


def segsum_from_cumsum(a_cum: torch.Tensor) -> torch.Tensor:
    """out[..., t, s] = a_cum[t] - a_cum[s] for t >= s, -inf above the diagonal. Within a chunk a_cum is
    a running sum of a <= 0 over at most chunk_size steps, so the fp32 difference is accurate."""
    q = a_cum.shape[-1]
    diff = a_cum[..., :, None] - a_cum[..., None, :]
    upper = torch.ones(q, q, dtype=torch.bool, device=a_cum.device).triu(1)
    return diff.masked_fill(upper, float("-inf"))


def ssd_step(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
             B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """One token. state (b, h, p, n), fp32, is updated in place; x (b, h, p), dt (b, h), B/C (b, g, n).
    Returns y (b, h, p) without the D skip. Few, in-place ops: this runs once per layer per decoded token."""
    b, h, p, n = state.shape
    g = B.shape[1]
    e = h // g
    dt = fp32(dt)
    s = state.view(b, g, e, p, n)
    s.mul_(torch.exp(dt * fp32(A)).view(b, g, e, 1, 1))
    s.add_((fp32(x) * dt[..., None]).view(b, g, e, p, 1) * fp32(B).view(b, g, 1, 1, n))
    return (s * fp32(C).view(b, g, 1, 1, n)).sum(-1).view(b, h, p)


def state_output(C: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """What a state entering the sequence adds to its outputs: y_t = exp(A_h sum_{s<=t} dt_s) C_t state, the
    chunk start-state term of `ssd_chunked` (step 4) for a whole sequence. C (b, l, g, n), dt (b, l, h), A (h,),
    state (b, h, p, n); returns (b, l, h, p) in fp32."""
    b, l, g, n = C.shape
    h, p = state.shape[1:3]
    y = torch.einsum("blgn,bgepn->blgep", C.float(), state.float().view(b, g, h // g, p, n)).reshape(b, l, h, p)
    return y * torch.exp(dt.float().cumsum(1) * A.float())[..., None]

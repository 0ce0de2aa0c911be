"""Mamba1's selective scan, written once in the paper's notation.

Per channel d and state index n, with input-dependent dt, B, C:
    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t
    y_t = C_t . h_t + D x_t
A is (d, n) diagonal; here B and C are shared by the channels of one "head" (Zamba1 has 2).
"""

from __future__ import annotations

import torch


def selective_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   initial_state: torch.Tensor | None = None, resets: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """x, dt (b, l, h, p) with dt already softplus'd; A (h, p, n); B, C (b, l, h, n).

    Returns y (b, l, h, p) without the D skip, and the final state (b, h, p, n); computes in fp32.
    `resets` (b, l) bool discards the state before a token (a segment start: h_{t-1} counts as 0).
    """
    b, l, h, p = x.shape
    n = A.shape[-1]
    dt, x, B, C = dt.float(), x.float(), B.float(), C.float()
    dA = torch.exp(dt[..., None] * A.float())  # (b, l, h, p, n)
    if resets is not None:
        dA = dA * (~resets).float()[:, :, None, None, None]
    dBx = (dt * x)[..., None] * B[:, :, :, None, :]  # (b, l, h, p, n)
    state = initial_state.float() if initial_state is not None else x.new_zeros(b, h, p, n)
    states = []
    # unbind once: indexing [:, t] in the loop would make autograd zero-fill a full-size gradient per step
    for decay, inp in zip(dA.unbind(1), dBx.unbind(1), strict=True):
        state = decay * state + inp
        states.append(state)
    y = torch.einsum("blhpn,blhn->blhp", torch.stack(states, dim=1), C)
    return y, state


def selective_step(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                   B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """One token. state (b, h, p, n) updated in place; x, dt (b, h, p); B, C (b, h, n)."""
    s = state.float() * torch.exp(dt.float()[..., None] * A.float())
    s = s + (dt * x).float()[..., None] * B.float()[:, :, None]
    state.copy_(s)
    return torch.einsum("bhpn,bhn->bhp", s, C.float())


def state_output(C: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """What a state entering the sequence adds to its outputs: y_t = C_t . (exp(A sum_{s<=t} dt_s) * state).
    C (b, l, h, n), dt (b, l, h, p), A (h, p, n), state (b, h, p, n); returns (b, l, h, p) in fp32."""
    decay = torch.exp(dt.float().cumsum(1)[..., None] * A.float())  # (b, l, h, p, n)
    return torch.einsum("blhpn,blhn->blhp", decay * state.float()[:, None], C.float())

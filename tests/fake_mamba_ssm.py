"""CPU stand-ins for mamba_ssm's two kernels that enforce the real kernels' argument contracts (dtypes,
shapes), record what they were given, and compute the documented result with plain sequential
recurrences in fp32 (independent of hybridlm's own scans).

Contracts, as the real code checks them:
- `selective_scan_fn` (csrc/selective_scan/selective_scan.cpp, `selective_scan_fwd`): u, delta (b, d, l) in
  one of fp32 / fp16 / bf16, delta's dtype = u's; A (d, n) fp32 with n <= 256; B and C variable: (b, n, l)
  or (b, g, n, l) in u's dtype; D and delta_bias (d,) fp32; z like u. The output has delta's dtype.
- `mamba_chunk_scan_combined` (mamba_ssm/ops/triton/ssd_combined.py, `_mamba_chunk_scan_combined_fwd`):
  x (b, l, h, p); dt (b, l, h); A (h,); B and C (b, l, g, n) with h % g == 0; z like x; D (h, p) or (h,);
  initial_states (b, h, p, n); seq_idx (b, l). The Triton kernels read x, B and C as one input type (they
  come from one conv output), A and dt_bias in fp32; the output has x's dtype, the final states fp32.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F

FLOATS = (torch.float32, torch.float16, torch.bfloat16)


class ContractError(AssertionError):
    pass


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ContractError(what)


class FakeMambaSSM:
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def selective_scan_fn(self, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
        _check(u.dtype in FLOATS, f"u dtype {u.dtype}")
        _check(delta.dtype == u.dtype, f"delta dtype {delta.dtype} != u dtype {u.dtype}")
        _check(A.dtype == torch.float32 and A.dim() == 2, f"A must be fp32 (d, n), got {A.dtype} {tuple(A.shape)}")
        b, d, l = u.shape
        n = A.shape[1]
        _check(n <= 256, "d_state <= 256")
        _check(tuple(delta.shape) == (b, d, l) and A.shape[0] == d, "u, delta (b, d, l) and A (d, n)")
        for name, t in (("B", B), ("C", C)):
            _check(t.dim() in (3, 4), f"{name} must be variable: (b, n, l) or (b, g, n, l)")
            _check(t.dtype == u.dtype, f"{name} dtype {t.dtype} != u dtype {u.dtype}")
            _check(t.shape[0] == b and t.shape[-2:] == (n, l), f"{name} shape {tuple(t.shape)}")
        for name, t in (("D", D), ("delta_bias", delta_bias)):
            if t is not None:
                _check(t.dtype == torch.float32 and tuple(t.shape) == (d,), f"{name} must be fp32 (d,)")
        if z is not None:
            _check(z.dtype == u.dtype and z.shape == u.shape, "z like u")
        self.calls.append(("selective_scan", {"u": u.dtype, "delta": delta.dtype, "B": B.dtype, "C": C.dtype}))
        dt = delta.float() + (delta_bias.float()[:, None] if delta_bias is not None else 0)
        dt = F.softplus(dt) if delta_softplus else dt
        Bv = B.float() if B.dim() == 3 else B.float().repeat_interleave(d // B.shape[1], 1)
        Cv = C.float() if C.dim() == 3 else C.float().repeat_interleave(d // C.shape[1], 1)
        state = u.new_zeros(b, d, n, dtype=torch.float32)
        ys = []
        for t in range(l):
            bt = Bv[:, :, t] if Bv.dim() == 3 else Bv[:, :, :, t]
            ct = Cv[:, :, t] if Cv.dim() == 3 else Cv[:, :, :, t]
            bt = bt[:, None, :] if bt.dim() == 2 else bt
            ct = ct[:, None, :] if ct.dim() == 2 else ct
            state = torch.exp(dt[:, :, t, None] * A) * state + (dt[:, :, t] * u[:, :, t].float())[..., None] * bt
            ys.append((state * ct).sum(-1))
        y = torch.stack(ys, dim=-1)
        if D is not None:
            y = y + u.float() * D[:, None]
        if z is not None:
            y = y * F.silu(z.float())
        out = y.to(delta.dtype)
        return (out, state) if return_last_state else out

    def mamba_chunk_scan_combined(self, x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None,
                                  initial_states=None, seq_idx=None, cu_seqlens=None, dt_softplus=False,
                                  dt_limit=(0.0, math.inf), return_final_states=False, return_varlen_states=False):
        b, l, h, p = x.shape
        g, n = B.shape[-2:]
        _check(x.dtype in FLOATS, f"x dtype {x.dtype}")
        _check(h % g == 0, "nheads % ngroups == 0")
        _check(tuple(B.shape) == (b, l, g, n) and C.shape == B.shape, "B, C (b, l, g, n)")
        _check(B.dtype == x.dtype and C.dtype == x.dtype, f"x, B, C in one dtype: {x.dtype} {B.dtype} {C.dtype}")
        _check(tuple(dt.shape) == (b, l, h), "dt (b, l, h)")
        _check(A.dtype == torch.float32 and tuple(A.shape) == (h,), "A fp32 (h,)")
        _check(isinstance(chunk_size, int) and chunk_size > 0, "chunk_size")
        if dt_bias is not None:
            _check(dt_bias.dtype == torch.float32 and tuple(dt_bias.shape) == (h,), "dt_bias fp32 (h,)")
        if D is not None:
            _check(tuple(D.shape) in ((h, p), (h,)), "D (h, p) or (h,)")
        if z is not None:
            _check(z.shape == x.shape, "z like x")
        if initial_states is not None:
            _check(tuple(initial_states.shape) == (b, h, p, n), "initial_states (b, h, p, n)")
        if seq_idx is not None:
            _check(tuple(seq_idx.shape) == (b, l), "seq_idx (b, l)")
        self.calls.append(("ssd", {"x": x.dtype, "dt": dt.dtype, "B": B.dtype, "C": C.dtype}))
        d = dt.float() + (dt_bias.float() if dt_bias is not None else 0)
        d = (F.softplus(d) if dt_softplus else d).clamp(*dt_limit)
        Bh, Ch = (t.float().repeat_interleave(h // g, dim=2) for t in (B, C))  # (b, l, h, n)
        state = initial_states.float() if initial_states is not None else x.new_zeros(b, h, p, n, dtype=torch.float32)
        ys = []
        for t in range(l):
            if seq_idx is not None and t > 0:
                state = state * (seq_idx[:, t] == seq_idx[:, t - 1]).float()[:, None, None, None]
            decay = torch.exp(d[:, t] * A)[..., None, None]
            state = decay * state + (d[:, t, :, None] * x[:, t].float())[..., None] * Bh[:, t, :, None, :]
            ys.append((state * Ch[:, t, :, None, :]).sum(-1))
        y = torch.stack(ys, dim=1)
        if D is not None:
            y = y + x.float() * (D.float()[:, None] if D.dim() == 1 else D.float())
        if z is not None:
            y = y * F.silu(z.float())
        y = y.to(x.dtype)
        return (y, state) if return_final_states else y

    def modules(self) -> dict[str, types.SimpleNamespace]:
        """What `hybridlm.layers.kernels` imports, by module name."""
        return {"mamba_ssm.ops.selective_scan_interface": types.SimpleNamespace(
                    selective_scan_fn=self.selective_scan_fn),
                "mamba_ssm.ops.triton.ssd_combined": types.SimpleNamespace(
                    mamba_chunk_scan_combined=self.mamba_chunk_scan_combined)}

"""The Mamba1 mixer: in_proj -> (x, z); causal conv + SiLU on x; per-head x_proj -> (dt, B, C);
dt_proj; selective scan; y * silu(z); out_proj.

`n_heads` > 1 is Zamba1's variant: the d_inner channels split into heads, each with its own
x_proj and dt_proj. `inner_norms` adds Jamba's RMSNorms on dt, B and C."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.init import Constant, DtBias, LogPosition, Uniform, apply_rules, draw_seed
from hybridlm.layers import kernels
from hybridlm.layers.conv import causal_conv, causal_conv_step
from hybridlm.layers.norms import RMSNorm
from hybridlm.layers.segments import Segments
from hybridlm.layers.selective_scan import selective_scan, selective_step, state_output


class Mamba1(nn.Module):
    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int | None = None,
                 n_heads: int = 1, conv_bias: bool = True, proj_bias: bool = False, inner_norms: bool = False,
                 norm_eps: float = 1e-6, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_inner = expand * d_model
        self.n_heads, self.d_state = n_heads, d_state
        self.headdim = self.d_inner // n_heads
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=proj_bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, bias=conv_bias)
        h, p, r, n = n_heads, self.headdim, self.dt_rank, d_state
        self.x_proj = nn.Parameter(torch.empty(h, r + 2 * n, p))
        self.dt_proj = nn.Parameter(torch.empty(h, p, r))
        self.dt_proj_bias = nn.Parameter(torch.empty(h, p))
        self.A_log = nn.Parameter(torch.empty(h, p, n))
        self.D = nn.Parameter(torch.empty(h, p))
        for param in (self.dt_proj_bias, self.A_log, self.D):
            param._no_weight_decay = True  # as mamba_ssm: no weight decay on the SSM's own parameters
        self.inner_norms = nn.ModuleDict(
            {"dt": RMSNorm(r, norm_eps), "B": RMSNorm(n, norm_eps), "C": RMSNorm(n, norm_eps)}
        ) if inner_norms else None
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=proj_bias)
        self._dt_init = (dt_min, dt_max, dt_init_floor)
        self.x_proj_reduce = None  # set by tensor parallelism (hybridlm.parallel)
        self.reset_ssm_parameters()

    def init_rules(self) -> dict:
        """mamba_ssm's init: x_proj like nn.Linear, dt_proj uniform(+-rank^-0.5), dt bias = softplus^-1 of a
        log-uniform dt, A = 1..N per channel (S4D-real), D = 1; the conv as PyTorch's default."""
        bound = self.conv1d.kernel_size[0] ** -0.5
        rules = {"x_proj": Uniform(self.headdim ** -0.5), "dt_proj": Uniform(self.dt_rank ** -0.5),
                 "dt_proj_bias": DtBias(*self._dt_init), "A_log": LogPosition(2), "D": Constant(1.0),
                 "conv1d.weight": Uniform(bound)}
        if self.conv1d.bias is not None:
            rules["conv1d.bias"] = Uniform(bound)
        return rules

    def reset_ssm_parameters(self) -> None:
        apply_rules(self, self.init_rules(), draw_seed())

    def allocate_cache(self, batch: int, max_len: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        k = self.conv1d.kernel_size[0]
        return {
            "conv": torch.zeros(batch, k - 1, self.d_inner, dtype=dtype, device=device),
            "ssm": torch.zeros(batch, self.n_heads, self.headdim, self.d_state, dtype=torch.float32, device=device),
        }

    def _ssm_inputs(self, x: torch.Tensor, softplus: bool = True):
        """x (..., h, p) -> dt (..., h, p), after bias and softplus unless `softplus` is False (the kernel
        applies them), B and C (..., h, n)."""
        dbc = torch.einsum("...hp,hkp->...hk", x, self.x_proj)
        if self.x_proj_reduce is not None:  # tensor parallelism: x_proj contracted only this rank's channels
            dbc = self.x_proj_reduce(dbc)
        dt, B, C = dbc.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        if self.inner_norms is not None:
            dt, B, C = self.inner_norms["dt"](dt), self.inner_norms["B"](B), self.inner_norms["C"](C)
        dt = torch.einsum("...hr,hpr->...hp", dt, self.dt_proj)
        if softplus:
            dt = F.softplus(dt.float() + self.dt_proj_bias.float())
        return dt, B, C

    def forward(self, u: torch.Tensor, cache: dict[str, torch.Tensor] | None = None, offset: int = 0,
                segments: Segments | None = None) -> torch.Tensor:
        """u (b, l, d), or (b, d) for one decoded token (with a cache)."""
        if u.dim() == 2:
            return self.forward(u[:, None], cache, offset, segments)[:, 0]
        b, l, _ = u.shape
        x, z = self.in_proj(u).chunk(2, dim=-1)
        A = -torch.exp(self.A_log.float())
        taps = segments.conv_taps(self.conv1d.kernel_size[0]) if segments is not None else None
        passing = getattr(cache, "passing", None)  # context-parallel prefill (hybridlm.parallel.state)
        if cache is not None and l == 1 and passing is None:
            x = F.silu(causal_conv_step(x[:, 0], self.conv1d.weight, self.conv1d.bias, cache["conv"],
                                        taps[:, 0] if taps is not None else None))
            x = x.view(b, self.n_heads, self.headdim)
            dt, B, C = self._ssm_inputs(x)
            y = selective_step(cache["ssm"], x, dt, A, B, C)[:, None]
            x = x[:, None]
        else:
            if passing is not None:  # one rank's slice: left context from the ranks before, scan from zero
                left = passing.left_context(x, self.conv1d.kernel_size[0] - 1, cache)
            else:
                left = cache["conv"] if cache is not None else None
            x = causal_conv(x, self.conv1d.weight, self.conv1d.bias, left, taps)
            x = F.silu(x).unflatten(-1, (self.n_heads, self.headdim))
            resets = segments.resets if segments is not None else None
            # mamba_ssm's selective_scan_fn has no state resets: segments take the PyTorch path
            use_kernel = self.n_heads == 1 and cache is None and resets is None
            kernel = kernels.selective_scan_kernel(x) if use_kernel else None
            dt, B, C = self._ssm_inputs(x, softplus=kernel is None)
            if kernel is not None:  # mamba_ssm's contract: u, delta, B, C (b, ., l) in one dtype; A, bias fp32
                io = x.dtype
                y = kernel(x.flatten(-2).transpose(1, 2), dt.flatten(-2).transpose(1, 2).to(io),
                           A.flatten(0, 1), B[:, :, 0].transpose(1, 2).to(io), C[:, :, 0].transpose(1, 2).to(io),
                           delta_bias=self.dt_proj_bias.float().flatten(), delta_softplus=True)
                y = y.transpose(1, 2).unflatten(-1, (self.n_heads, self.headdim)).float()
            else:
                initial = cache["ssm"] if cache is not None and passing is None else None
                y, final = selective_scan(x, dt, A, B, C, initial, resets)
                if passing is not None:
                    y = y + state_output(C, dt, A, passing.start_state(final, dt.sum(1)[..., None] * A, cache))
                elif cache is not None:
                    cache["ssm"].copy_(final)
        y = y + x.float() * self.D.float()
        y = y.flatten(-2).to(u.dtype) * F.silu(z)
        return self.out_proj(y)

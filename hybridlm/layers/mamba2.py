"""The Mamba2 mixer (in_proj -> causal conv -> SSD -> gated grouped RMSNorm -> out_proj)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.init import Constant, DtBias, LogPosition, Uniform, apply_rules, draw_seed
from hybridlm.layers import kernels
from hybridlm.layers.casts import cast, fp32
from hybridlm.layers.conv import causal_conv, causal_conv_step
from hybridlm.layers.norms import GatedRMSNorm
from hybridlm.layers.segments import Segments
from hybridlm.layers.ssd import ssd_chunked, ssd_step, state_output


class Mamba2(nn.Module):
    def __init__(self, d_model: int, d_state: int = 128, d_conv: int = 4, expand: int = 2, headdim: int = 64,
                 ngroups: int = 1, chunk_size: int = 64, cpu_chunk_size: int | None = 64, conv_bias: bool = True,
                 proj_bias: bool = False,
                 norm_eps: float = 1e-5, dt_limit: tuple[float, float] = (0.0, math.inf),
                 dt_clamp_in_step: bool = True, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_inner = expand * d_model
        self.n_heads = self.d_inner // headdim
        self.headdim, self.d_state, self.ngroups = headdim, d_state, ngroups
        self.chunk_size, self.cpu_chunk_size = chunk_size, cpu_chunk_size  # see Mamba2Config.chunk_for
        self.dt_limit, self.dt_clamp_in_step = tuple(dt_limit), dt_clamp_in_step
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.n_heads, bias=proj_bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, bias=conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(self.n_heads))
        self.A_log = nn.Parameter(torch.empty(self.n_heads))
        self.D = nn.Parameter(torch.empty(self.n_heads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True  # as mamba_ssm: no weight decay on the SSM's own parameters
        self.norm = GatedRMSNorm(self.d_inner, self.d_inner // ngroups, eps=norm_eps)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=proj_bias)
        self._dt_init = (dt_min, dt_max, dt_init_floor)
        self.reset_ssm_parameters()

    def init_rules(self) -> dict:
        """mamba_ssm's init: dt log-uniform in [dt_min, dt_max] (stored as softplus^-1), A = 1..H, D = 1; the
        conv as PyTorch's default (U(+-1/sqrt(kernel)))."""
        bound = self.conv1d.kernel_size[0] ** -0.5
        rules = {"dt_bias": DtBias(*self._dt_init), "A_log": LogPosition(0), "D": Constant(1.0),
                 "conv1d.weight": Uniform(bound)}
        if self.conv1d.bias is not None:
            rules["conv1d.bias"] = Uniform(bound)
        return rules

    def reset_ssm_parameters(self) -> None:
        apply_rules(self, self.init_rules(), draw_seed())

    def allocate_cache(self, batch: int, max_len: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        k = self.conv1d.kernel_size[0]
        return {
            "conv": torch.zeros(batch, k - 1, self.conv_dim, dtype=dtype, device=device),
            "ssm": torch.zeros(batch, self.n_heads, self.headdim, self.d_state, dtype=torch.float32, device=device),
        }

    def forward(self, u: torch.Tensor, cache: dict[str, torch.Tensor] | None = None, offset: int = 0,
                segments: Segments | None = None) -> torch.Tensor:
        """u (b, l, d), or (b, d) for one decoded token (with a cache)."""
        passing = getattr(cache, "passing", None)  # context-parallel prefill (hybridlm.parallel.state)
        if cache is not None and passing is None and (u.dim() == 2 or u.shape[1] == 1):
            taps = segments.conv_taps(self.conv1d.kernel_size[0])[:, 0] if segments is not None else None
            return self._step(u, cache, taps) if u.dim() == 2 else self._step(u[:, 0], cache, taps)[:, None]
        if u.dim() == 2:  # a one-token slice of a context-parallel prefill
            return self.forward(u[:, None], cache, offset, segments)[:, 0]
        z, xBC, dt = self.in_proj(u).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        y = self._scan(xBC, dt, -torch.exp(self.A_log.float()), cache, segments, passing)
        return self.out_proj(self.norm(y.to(u.dtype), z))

    def _split_xBC(self, xBC: torch.Tensor):
        gn = self.ngroups * self.d_state
        x, B, C = xBC.split([self.d_inner, gn, gn], dim=-1)
        return x, B.unflatten(-1, (self.ngroups, self.d_state)), C.unflatten(-1, (self.ngroups, self.d_state))

    def _scan(self, xBC: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, cache, segments,
              passing=None) -> torch.Tensor:
        """With `passing`, this is one rank's slice: the conv's left context comes from the ranks before,
        the scan starts from zero and the entering state's contribution is added after."""
        b, l, _ = xBC.shape
        taps = segments.conv_taps(self.conv1d.kernel_size[0]) if segments is not None else None
        if passing is not None:
            left = passing.left_context(xBC, self.conv1d.kernel_size[0] - 1, cache)
        else:
            left = cache["conv"] if cache is not None else None
        xBC = F.silu(causal_conv(xBC, self.conv1d.weight, self.conv1d.bias, left, taps))
        x, B, C = self._split_xBC(xBC)
        x = x.unflatten(-1, (self.n_heads, self.headdim))
        initial = cache["ssm"] if cache is not None and passing is None else None
        resets = segments.resets if segments is not None else None
        kernel = kernels.ssd_kernel(x) if resets is None or initial is None else None
        raw_dt, dt = dt, F.softplus(dt.float() + self.dt_bias.float()).clamp(*self.dt_limit)
        if kernel is not None:  # x, B, C in the activation dtype (bf16 under autocast); dt raw, its bias fp32
            seq_idx = resets.int().cumsum(1, dtype=torch.int32) if resets is not None else None
            y, final = kernel(x, raw_dt, A, B, C, self.chunk_size, D=None, dt_bias=self.dt_bias.float(),
                              dt_softplus=True, dt_limit=self.dt_limit, initial_states=initial, seq_idx=seq_idx,
                              return_final_states=True)
        else:
            chunk = self.chunk_size
            if x.device.type == "cpu" and self.cpu_chunk_size is not None:
                chunk = min(chunk, self.cpu_chunk_size)
            y, final = ssd_chunked(x, dt, A, B, C, chunk, initial, resets)
        if passing is not None:
            y = y + state_output(C, dt, A, passing.start_state(final, (A * dt.sum(1))[..., None, None], cache))
        elif cache is not None:
            cache["ssm"].copy_(final)
        y = y + x.float() * self.D.float()[:, None]
        return y.flatten(-2)

    def _step(self, u: torch.Tensor, cache, taps=None) -> torch.Tensor:
        """One decoded token, u (b, d) -> (b, d): the recurrent form, in as few ops as the math allows
        (decoding a small model is bound by per-op overhead as much as by reading the weights)."""
        b = u.shape[0]
        z, xBC, dt = self.in_proj(u).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        xBC = F.silu(causal_conv_step(xBC, self.conv1d.weight, self.conv1d.bias, cache["conv"], taps))
        gn = self.ngroups * self.d_state
        x, B, C = xBC.split([self.d_inner, gn, gn], dim=-1)
        dt = F.softplus(fp32(dt) + fp32(self.dt_bias))
        if self.dt_clamp_in_step and self.dt_limit != (0.0, math.inf):  # softplus is >= 0 already
            dt = dt.clamp(*self.dt_limit)
        x = x.view(b, self.n_heads, self.headdim)
        B, C = B.view(b, self.ngroups, self.d_state), C.view(b, self.ngroups, self.d_state)
        y = ssd_step(cache["ssm"], x, dt, -torch.exp(fp32(self.A_log)), B, C)
        y = torch.addcmul(y, fp32(x), fp32(self.D)[:, None])
        return self.out_proj(self.norm(cast(y.view(b, self.d_inner), u.dtype), z))

"""`r`: the Mamba1 mixer (selective scan), section `mamba1`; module `hybridlm.layers.mamba1.Mamba1`."""

from __future__ import annotations

from hybridlm.kinds.base import LayerKind
from hybridlm.kinds.counting import einsum_flops, linear_flops, linear_params
from hybridlm.kinds.tp import Cut, TPPlan, split_parts

FP32 = 4  # SSM states and the scan's fp32 intermediates


class Mamba1Kind(LayerKind):
    token, name, section = "r", "mamba1", "mamba1"
    mixer = ssm = True
    core_terms = ("mamba1_scan",)
    bench = {"mamba1": {}}

    def validate(self, cfg):
        m1 = cfg.mamba1
        if cfg.mamba1_d_inner % m1.n_heads:
            raise ValueError(f"mamba1.n_heads={m1.n_heads} must divide d_inner = expand*d_model = {cfg.mamba1_d_inner}")

    def build(self, cfg):
        from hybridlm.layers.mamba1 import Mamba1

        m = cfg.mamba1
        return Mamba1(cfg.d_model, m.d_state, m.d_conv, m.expand, cfg.mamba1_dt_rank, m.n_heads, m.conv_bias,
                      m.proj_bias, m.inner_norms, cfg.norm_eps, m.dt_min, m.dt_max, m.dt_init_floor)

    def allocate_cache(self, module, batch, max_len, dtype, device):
        return module.allocate_cache(batch, max_len, dtype, device)

    def allocate_sharded_cache(self, module, batch, max_len, dtype, device, cp):
        """Conv and SSM states replicated on every rank, reached in prefill by state passing."""
        return cp.passed_state(module.allocate_cache(batch, max_len, dtype, device))

    def params(self, cfg):
        """in_proj d -> 2 d_inner; depthwise conv; per-head x_proj (dt_rank + 2N) and dt_proj (+ bias);
        A_log (d_inner x N); D; Jamba's inner RMSNorms on dt, B, C; out_proj."""
        m, d, di, r, n = cfg.mamba1, cfg.d_model, cfg.mamba1_d_inner, cfg.mamba1_dt_rank, cfg.mamba1.d_state
        total = linear_params(d, 2 * di, m.proj_bias)
        total += di * m.d_conv + (di if m.conv_bias else 0)
        total += di * (r + 2 * n)  # x_proj, summed over heads: h * (r + 2n) * headdim
        total += di * r + di  # dt_proj and its bias
        total += di * n + di  # A_log, D
        total += (r + 2 * n) if m.inner_norms else 0  # inner norms are always RMSNorms
        total += linear_params(di, d, m.proj_bias)
        return {self.name: total}

    def flops(self, cfg, batch, seq_len, attention, device):
        t, d = batch * seq_len, cfg.d_model
        m, di, r, n = cfg.mamba1, cfg.mamba1_d_inner, cfg.mamba1_dt_rank, cfg.mamba1.d_state
        return {
            "mamba1_proj": linear_flops(t, d, 2 * di) + linear_flops(t, di, d)  # in_proj, out_proj
            # per-head x_proj (contracts headdim) and dt_proj (contracts dt_rank), as einsums over heads
            + einsum_flops(di // m.n_heads, t * m.n_heads * (r + 2 * n))
            + einsum_flops(r, t * di),
            "mamba1_scan": einsum_flops(n, t * di),  # y = C . state (the recurrence itself is elementwise)
        }

    def final_projection_width(self, cfg):
        return cfg.mamba1_d_inner

    def cache_bytes(self, cfg, batch, max_len, dtype_bytes):
        """The last (d_conv - 1) conv inputs in the model dtype; the state (d_inner x N) in fp32."""
        di = cfg.mamba1_d_inner
        return {"conv": batch * di * (cfg.mamba1.d_conv - 1) * dtype_bytes,
                "ssm": batch * di * cfg.mamba1.d_state * FP32}

    def activation_bytes_per_token(self, cfg, seq_len, recompute, dtype_bytes):
        """norm in/out, in_proj out, conv and silu outputs, x_proj out, y and gate; dt and y in fp32;
        without recomputation the per-step states (3 x d_inner x N, fp32)."""
        a, m, di = dtype_bytes, cfg.mamba1, cfg.mamba1_d_inner
        keep = a * (2 * cfg.d_model + 2 * di + 2 * di + cfg.mamba1_dt_rank + 2 * m.d_state + 2 * di)
        keep += FP32 * 2 * di
        return keep + (FP32 * 3 * di * m.d_state if recompute == "none" else 0)

    def tp_splits(self, cfg):
        return [("mamba1 head dim (d_inner / n_heads)", cfg.mamba1_d_inner // cfg.mamba1.n_heads)]

    def tp_plan(self, cfg, tp):
        """The inner channels of every head split over the ranks (x and z of in_proj separately, the conv,
        dt_proj, A_log, D); x_proj contracts the split channels, so its output (dt, B, C) is summed over the
        ranks: the second reduction of a Mamba1 layer, after out_proj's."""
        m, h = cfg.mamba1, cfg.mamba1.n_heads
        p = cfg.mamba1_d_inner // h
        rows = split_parts(0, *[p] * (2 * h))  # x of each head, then z of each head
        conv = split_parts(0, *[p] * h)
        cuts = {"in_proj.weight": rows, "conv1d.weight": conv, "x_proj": Cut(2), "dt_proj": Cut(1),
                "dt_proj_bias": Cut(1), "A_log": Cut(1), "D": Cut(1), "out_proj.weight": Cut(1)}
        if m.proj_bias:
            cuts["in_proj.bias"] = rows
        if m.conv_bias:
            cuts["conv1d.bias"] = conv
        partial = tuple(f"inner_norms.{k}.weight" for k in ("dt", "B", "C")) if m.inner_norms else ()
        return TPPlan(cuts=cuts, partial=partial, leave=("out_proj",),
                      local={"": {"d_inner": cfg.mamba1_d_inner // tp, "headdim": p // tp}},
                      reduce={"x_proj_reduce": "sum"} if tp > 1 else {})

    def sizing(self, cfg, multiple):
        return [("mamba1 d_inner", cfg.mamba1_d_inner, multiple, f"divisible by {multiple}")]

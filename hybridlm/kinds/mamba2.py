"""`m`: the Mamba2 mixer (SSD), section `mamba2`; module `hybridlm.layers.mamba2.Mamba2`."""

from __future__ import annotations

from hybridlm.kinds.base import LayerKind
from hybridlm.kinds.counting import BACKWARD_FACTOR, linear_flops, linear_params, matmul_flops
from hybridlm.kinds.tp import Cut, Part, TPPlan

FP32 = 4


def in_proj_width(cfg) -> int:
    """in_proj output: z (d_inner) | xBC (d_inner + 2 G N) | dt (H)."""
    m = cfg.mamba2
    return 2 * cfg.mamba2_d_inner + 2 * m.ngroups * m.d_state + cfg.mamba2_n_heads


def conv_dim(cfg) -> int:
    """Channels of the depthwise conv: x, B and C."""
    return cfg.mamba2_d_inner + 2 * cfg.mamba2.ngroups * cfg.mamba2.d_state


def ssd_flops(cfg, batch: int, seq_len: int, device: str = "cuda") -> dict[str, int]:
    """The four batched matmuls of `hybridlm.layers.ssd.ssd_chunked` on the sequence padded to a multiple
    of the chunk size Q (pad = (-l) % Q), per layer:
      cb      C B^T within each chunk, per group:        2 b Lp Q G N
      y_diag  (L o CB) (x dt) within each chunk, per head: 2 b Lp Q H P
      states  each chunk's final state:                  2 b Lp H P N
      y_off   C_t exp(a) S_c from the chunk start state:  2 b Lp H P N
    The intra-chunk terms grow with Q, the state terms with N; the chunk-to-chunk recurrence is
    elementwise. Q is the chunk the model uses on `device` (`Mamba2Config.chunk_for`: GPU kernels use
    chunk_size, the CPU path caps it at cpu_chunk_size)."""
    m = cfg.mamba2
    q, g, n, h, p = m.chunk_for(device), m.ngroups, m.d_state, cfg.mamba2_n_heads, m.headdim
    lp = seq_len + (-seq_len) % q
    return {
        "cb": matmul_flops(n, batch * lp * q * g),
        "y_diag": matmul_flops(q, batch * lp * h * p),
        "states": matmul_flops(q, batch * lp // q * h * p * n),
        "y_off": matmul_flops(n, batch * lp * h * p),
    }


class Mamba2Kind(LayerKind):
    token, name, section = "m", "mamba2", "mamba2"
    mixer = ssm = True
    core_terms = ("mamba2_ssd",)
    bench = {"mamba2": {}}

    def validate(self, cfg):
        m2, di = cfg.mamba2, cfg.mamba2_d_inner
        if di % m2.headdim:
            raise ValueError(f"mamba2.headdim={m2.headdim} must divide d_inner = expand*d_model = {di}")
        if cfg.mamba2_n_heads % m2.ngroups:
            raise ValueError(
                f"mamba2.ngroups={m2.ngroups} must divide the number of heads d_inner/headdim = {cfg.mamba2_n_heads}"
            )

    def build(self, cfg):
        from hybridlm.layers.mamba2 import Mamba2

        m = cfg.mamba2
        return Mamba2(cfg.d_model, m.d_state, m.d_conv, m.expand, m.headdim, m.ngroups, m.chunk_size,
                      m.cpu_chunk_size, m.conv_bias, m.proj_bias, m.norm_eps, m.dt_limit, m.dt_clamp_in_step,
                      m.dt_min, m.dt_max, m.dt_init_floor)

    def allocate_cache(self, module, batch, max_len, dtype, device):
        return module.allocate_cache(batch, max_len, dtype, device)

    def allocate_sharded_cache(self, module, batch, max_len, dtype, device, cp):
        """Conv and SSM states replicated on every rank, reached in prefill by state passing."""
        return cp.passed_state(module.allocate_cache(batch, max_len, dtype, device))

    def params(self, cfg):
        """in_proj; depthwise conv over xBC; dt_bias, A_log, D (one per head); gated RMSNorm; out_proj."""
        m, d, di, h = cfg.mamba2, cfg.d_model, cfg.mamba2_d_inner, cfg.mamba2_n_heads
        conv = conv_dim(cfg)
        total = linear_params(d, in_proj_width(cfg), m.proj_bias)
        total += conv * m.d_conv + (conv if m.conv_bias else 0)
        total += 3 * h + di
        total += linear_params(di, d, m.proj_bias)
        return {self.name: total}

    def flops(self, cfg, batch, seq_len, attention, device):
        t = batch * seq_len
        return {
            "mamba2_proj": linear_flops(t, cfg.d_model, in_proj_width(cfg)) + linear_flops(t, cfg.mamba2_d_inner,
                                                                                         cfg.d_model),
            "mamba2_ssd": sum(ssd_flops(cfg, batch, seq_len, device).values()),
        }

    def backward_flops(self, cfg, batch, seq_len, attention, device, forward):
        """On a single chunk (training starts from a zero state) two SSD products need less: the chunk's
        final state feeds nothing the loss sees (no backward), and the start state is a constant zero
        (y_off needs only C's gradient)."""
        out = super().backward_flops(cfg, batch, seq_len, attention, device, forward)
        if seq_len <= cfg.mamba2.chunk_for(device):
            ssd = ssd_flops(cfg, batch, seq_len, device)
            out["mamba2_ssd"] = BACKWARD_FACTOR * (ssd["cb"] + ssd["y_diag"]) + ssd["y_off"]
        return out

    def final_projection_width(self, cfg):
        return cfg.mamba2_d_inner

    def cache_bytes(self, cfg, batch, max_len, dtype_bytes):
        """The last (d_conv - 1) inputs of the conv over xBC in the model dtype; the state (H x P x N) in fp32."""
        return {"conv": batch * conv_dim(cfg) * (cfg.mamba2.d_conv - 1) * dtype_bytes,
                "ssm": batch * cfg.mamba2_d_inner * cfg.mamba2.d_state * FP32}

    def activation_bytes_per_token(self, cfg, seq_len, recompute, dtype_bytes):
        """norm in/out, in_proj out, conv and silu outputs, y / gate / norm; dt, x*dt and y in fp32; one
        state per chunk; without recomputation the intra-chunk decay matrix L and C B^T (fp32)."""
        a, m, di, h = dtype_bytes, cfg.mamba2, cfg.mamba2_d_inner, cfg.mamba2_n_heads
        keep = a * (2 * cfg.d_model + in_proj_width(cfg) + 2 * conv_dim(cfg) + 3 * di)
        keep += FP32 * (h + 2 * di)
        keep += FP32 * -(-h * m.headdim * m.d_state // m.chunk_size)
        return keep + (FP32 * m.chunk_size * (h + m.ngroups) if recompute == "none" else 0)

    def tp_splits(self, cfg):
        return [("mamba2 heads", cfg.mamba2_n_heads)]

    def tp_plan(self, cfg, tp):
        """Megatron's layout: z, x, B, C and dt split separately (by heads and groups), the conv per rank,
        dt_bias / A_log / D by head, the grouped gated norm local, one reduction after out_proj. With
        ngroups = 1 < tp every rank keeps B and C (vLLM's choice) and the norm's one group spans the ranks:
        its mean square is averaged over them."""
        m, di, h = cfg.mamba2, cfg.mamba2_d_inner, cfg.mamba2_n_heads
        g, gn = m.ngroups, m.ngroups * m.d_state
        if g % tp and g != 1:
            raise ValueError(f"mamba2.ngroups={g}: tensor parallelism needs tp={tp} to divide it (or ngroups 1, "
                             "with B and C on every rank)")
        bc = g % tp == 0
        rows = Cut(0, (Part(di), Part(di), Part(gn, bc), Part(gn, bc), Part(h)))
        conv = Cut(0, (Part(di), Part(gn, bc), Part(gn, bc)))
        cuts = {"in_proj.weight": rows, "conv1d.weight": conv, "dt_bias": Cut(0), "A_log": Cut(0), "D": Cut(0),
                "norm.weight": Cut(0), "out_proj.weight": Cut(1)}
        if m.proj_bias:
            cuts["in_proj.bias"] = rows
        if m.conv_bias:
            cuts["conv1d.bias"] = conv
        g_local = g // tp if bc else g
        local = {"": {"d_inner": di // tp, "n_heads": h // tp, "ngroups": g_local,
                      "conv_dim": di // tp + 2 * g_local * m.d_state},
                 "norm": {"group_size": di // g if bc else di // tp}}
        reduce = {} if bc or tp == 1 else {"norm.stats_reduce": "mean"}
        return TPPlan(cuts=cuts, leave=("out_proj",), local=local, reduce=reduce)

    def sizing(self, cfg, multiple):
        div = f"divisible by {multiple}"
        return [("mamba2 d_inner", cfg.mamba2_d_inner, multiple, div),
                ("mamba2.headdim", cfg.mamba2.headdim, multiple, f"head dim {div}"),
                ("mamba2.d_state", cfg.mamba2.d_state, 16, "divisible by 16 (SSD state GEMMs)")]

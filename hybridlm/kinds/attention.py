"""`a`: causal self-attention (MHA/GQA, optional RoPE), section `attention`; module
`hybridlm.layers.attention.Attention`. The attention formulas here also serve Zamba's shared
attention (`shared.py`) and sliding-window attention (`sliding_window.py`)."""

from __future__ import annotations

from hybridlm.kinds.base import LayerKind
from hybridlm.kinds.counting import linear_flops, linear_params
from hybridlm.kinds.tp import Cut, TPPlan

FP32 = 4


def attention_params(n_in: int, n_out: int, n_heads: int, n_kv: int, head_dim: int, qkv_bias: bool = False,
                     out_bias: bool = False) -> int:
    """q (n_heads), k and v (n_kv heads each) from n_in, o back to n_out."""
    return (linear_params(n_in, n_heads * head_dim, qkv_bias) + 2 * linear_params(n_in, n_kv * head_dim, qkv_bias)
            + linear_params(n_heads * head_dim, n_out, out_bias))


def attention_proj_flops(tokens: int, n_in: int, n_out: int, n_heads: int, n_kv: int, head_dim: int) -> int:
    return linear_flops(tokens, n_in, (n_heads + 2 * n_kv) * head_dim) + linear_flops(tokens, n_heads * head_dim, n_out)


def attention_core_flops(batch: int, seq_len: int, n_heads: int, head_dim: int, attention: str = "kernel") -> int:
    """QK^T and PV for every query head (GQA shares K/V, not the work).
    kernel: s^2 pairs; causal: s(s+1)/2."""
    pairs = seq_len * seq_len if attention == "kernel" else seq_len * (seq_len + 1) // 2
    return 2 * 2 * batch * n_heads * head_dim * pairs


def kv_cache_bytes(batch: int, n_kv: int, length: int, head_dim: int, dtype_bytes: int) -> int:
    """K and V (factor 2) of n_kv heads for `length` positions."""
    return 2 * batch * n_kv * length * head_dim * dtype_bytes


def attention_activation_bytes(n_in: int, n_heads: int, n_kv: int, head_dim: int, keys_per_query: int,
                               recompute: str, dtype_bytes: int) -> int:
    """Per token: norm in and out, q k v, the attention output; without recomputation the softmax
    probabilities (heads x keys per query: the quadratic term), else fp32 softmax statistics."""
    a = dtype_bytes
    keep = a * (2 * n_in + (n_heads + 2 * n_kv) * head_dim + n_heads * head_dim)
    return keep + (a * n_heads * keys_per_query if recompute == "none" else FP32 * n_heads)


def attention_tp_plan(n_heads: int, n_kv: int, tp: int, qkv_bias: bool = False, prefix: str = "") -> TPPlan:
    """Heads split over the ranks: q, k, v column-parallel (whole heads), o row-parallel."""
    cuts = {f"{prefix}{p}.{w}": Cut(0) for p in ("q_proj", "k_proj", "v_proj")
            for w in (("weight", "bias") if qkv_bias else ("weight",))}
    cuts[f"{prefix}o_proj.weight"] = Cut(1)
    return TPPlan(cuts=cuts, enter=(prefix.rstrip("."),), leave=(f"{prefix}o_proj",),
                  local={prefix.rstrip("."): {"n_heads": n_heads // tp, "n_kv_heads": n_kv // tp}})


class AttentionKind(LayerKind):
    token, name, section = "a", "attention", "attention"
    mixer = True
    core_terms = ("attention_core",)
    bench = {"attention": {}}

    def validate(self, cfg):
        a = cfg.attention
        if a.head_dim is None and cfg.d_model % a.n_heads:
            raise ValueError(f"attention.n_heads={a.n_heads} must divide d_model={cfg.d_model} "
                             "(or set attention.head_dim)")
        if a.rope and cfg.attention_head_dim % 2:
            raise ValueError(f"attention head_dim={cfg.attention_head_dim} must be even with RoPE")

    def build(self, cfg):
        from hybridlm.layers.attention import Attention

        a, d = cfg.attention, cfg.d_model
        return Attention(d, d, a.n_heads, cfg.attention_kv_heads, cfg.attention_head_dim, a.rope, a.rope_theta,
                         qkv_bias=a.qkv_bias, out_bias=a.out_bias)

    def allocate_cache(self, module, batch, max_len, dtype, device):
        return module.allocate_cache(batch, max_len, dtype, device)

    def allocate_sharded_cache(self, module, batch, max_len, dtype, device, cp):
        """A shard of the positions, combined across ranks by the tree reduction or the ring."""
        return cp.sharded_kv(module.allocate_cache(batch, cp.shard_capacity(max_len), dtype, device))

    def params(self, cfg):
        a, d = cfg.attention, cfg.d_model
        return {self.name: attention_params(d, d, a.n_heads, cfg.attention_kv_heads, cfg.attention_head_dim,
                                            a.qkv_bias, a.out_bias)}

    def core_flops(self, cfg, batch, seq_len, attention):
        return attention_core_flops(batch, seq_len, cfg.attention.n_heads, cfg.attention_head_dim, attention)

    def flops(self, cfg, batch, seq_len, attention, device):
        a, d = cfg.attention, cfg.d_model
        return {
            f"{self.name}_proj": attention_proj_flops(batch * seq_len, d, d, a.n_heads, cfg.attention_kv_heads,
                                                      cfg.attention_head_dim),
            self.core_terms[0]: self.core_flops(cfg, batch, seq_len, attention),
        }

    def final_projection_width(self, cfg):
        return cfg.attention.n_heads * cfg.attention_head_dim

    def cache_length(self, cfg, max_len: int) -> int:
        """Positions the KV cache holds: all `max_len`, preallocated."""
        return max_len

    def cache_bytes(self, cfg, batch, max_len, dtype_bytes):
        return {"kv": kv_cache_bytes(batch, cfg.attention_kv_heads, self.cache_length(cfg, max_len),
                                     cfg.attention_head_dim, dtype_bytes)}

    def keys_per_query(self, cfg, seq_len: int) -> int:
        """Softmax entries each query's row holds in the dense kernel."""
        return seq_len

    def activation_bytes_per_token(self, cfg, seq_len, recompute, dtype_bytes):
        a = cfg.attention
        return attention_activation_bytes(cfg.d_model, a.n_heads, cfg.attention_kv_heads, cfg.attention_head_dim,
                                          self.keys_per_query(cfg, seq_len), recompute, dtype_bytes)

    def tp_splits(self, cfg):
        return [("attention heads", cfg.attention.n_heads), ("attention kv heads", cfg.attention_kv_heads)]

    def tp_plan(self, cfg, tp):
        return attention_tp_plan(cfg.attention.n_heads, cfg.attention_kv_heads, tp, cfg.attention.qkv_bias)

    def sizing(self, cfg, multiple):
        return [("attention head_dim", cfg.attention_head_dim, multiple, f"head dim divisible by {multiple}")]

    def bench_config(self, cfg, d_model):
        from hybridlm.kinds import KINDS

        fields = {"layers": self.token}
        uses_section = any(KINDS[t].section == self.section for t in set(cfg.tokens))
        if not uses_section and d_model % 64 == 0:  # only the default section: give it heads of width 64
            fields["attention.n_heads"] = d_model // 64
        return fields

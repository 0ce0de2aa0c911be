"""Parameter counts from a `ModelConfig`, term by term, without building the model.

Each function below counts the tensors one module of `hybridlm.layers` creates, in the order that
module creates them. `params(cfg)` sums them over the layer stack; the tests compare the total with
`HybridLM(cfg).num_parameters()` for every preset and for random configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridlm.config import ModelConfig
from hybridlm.config.pattern import TOKEN_NAMES


def norm_params(cfg: ModelConfig, dim: int) -> int:
    """RMSNorm: a weight; LayerNorm: weight and bias."""
    return dim if cfg.norm == "rmsnorm" else 2 * dim


def linear_params(n_in: int, n_out: int, bias: bool = False) -> int:
    return n_in * n_out + (n_out if bias else 0)


def mamba1_params(cfg: ModelConfig) -> int:
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
    return total


def mamba2_in_proj_width(cfg: ModelConfig) -> int:
    """in_proj output: z (d_inner) | xBC (d_inner + 2 G N) | dt (H)."""
    m = cfg.mamba2
    return 2 * cfg.mamba2_d_inner + 2 * m.ngroups * m.d_state + cfg.mamba2_n_heads


def mamba2_conv_dim(cfg: ModelConfig) -> int:
    return cfg.mamba2_d_inner + 2 * cfg.mamba2.ngroups * cfg.mamba2.d_state


def mamba2_params(cfg: ModelConfig) -> int:
    """in_proj; depthwise conv over xBC; dt_bias, A_log, D (one per head); gated RMSNorm; out_proj."""
    m, d, di, h = cfg.mamba2, cfg.d_model, cfg.mamba2_d_inner, cfg.mamba2_n_heads
    conv = mamba2_conv_dim(cfg)
    total = linear_params(d, mamba2_in_proj_width(cfg), m.proj_bias)
    total += conv * m.d_conv + (conv if m.conv_bias else 0)
    total += 3 * h + di
    total += linear_params(di, d, m.proj_bias)
    return total


def attention_params(cfg: ModelConfig) -> int:
    a, d, hd, kv = cfg.attention, cfg.d_model, cfg.attention_head_dim, cfg.attention_kv_heads
    return (
        linear_params(d, a.n_heads * hd, a.qkv_bias)
        + 2 * linear_params(d, kv * hd, a.qkv_bias)
        + linear_params(a.n_heads * hd, d, a.out_bias)
    )


def mlp_params(dim: int, ffn: int, gated: bool, bias: bool) -> int:
    return linear_params(dim, (2 if gated else 1) * ffn, bias) + linear_params(ffn, dim, bias)


def moe_expert_params(cfg: ModelConfig) -> int:
    """One expert: up (2 ffn rows when gated) and down, with their biases."""
    m = cfg.moe
    return mlp_params(cfg.d_model, cfg.moe_ffn_dim, m.gated, m.bias)


def moe_router_params(cfg: ModelConfig) -> int:
    return linear_params(cfg.d_model, cfg.moe.n_experts, cfg.moe.router_bias)


def shared_block_params(cfg: ModelConfig) -> dict[str, int]:
    """One shared block (weights common to all its calls): 2d norm, 2d -> d attention, d norm, MLP."""
    s, d, w, hd, kv = cfg.shared, cfg.d_model, cfg.shared_input_dim, cfg.shared_head_dim, cfg.shared_kv_heads
    attn = linear_params(w, s.n_heads * hd) + 2 * linear_params(w, kv * hd) + linear_params(s.n_heads * hd, d)
    return {
        "norms": norm_params(cfg, w) + norm_params(cfg, d),
        "attention": attn,
        "mlp": mlp_params(d, cfg.shared_ffn_dim, s.gated, False),
    }


def shared_call_params(cfg: ModelConfig) -> dict[str, int]:
    """What one 'g' call owns: the d x d projection and its LoRA pairs (A: in -> r, B: r -> out)."""
    s, d, w, hd, kv, r = (
        cfg.shared,
        cfg.d_model,
        cfg.shared_input_dim,
        cfg.shared_head_dim,
        cfg.shared_kv_heads,
        cfg.shared.lora_rank,
    )
    lora = 0
    if s.lora_qkv:
        lora += r * (w + s.n_heads * hd) + 2 * r * (w + kv * hd)
    if s.lora_mlp:
        lora += r * (d + (2 if s.gated else 1) * cfg.shared_ffn_dim)
    return {"proj": d * d, "lora": lora}


def sublayer_params(cfg: ModelConfig, kind: str) -> int:
    """Parameters of one residual sub-layer of a kind (r, m, a, f, e) without its pre-norm;
    for 'g', what the call owns (projection + LoRA), not the shared block."""
    if kind == "r":
        return mamba1_params(cfg)
    if kind == "m":
        return mamba2_params(cfg)
    if kind == "a":
        return attention_params(cfg)
    if kind == "f":
        return mlp_params(cfg.d_model, cfg.mlp_ffn_dim, cfg.mlp.gated, cfg.mlp.bias)
    if kind == "e":
        return moe_router_params(cfg) + cfg.moe.n_experts * moe_expert_params(cfg)
    if kind == "g":
        return sum(shared_call_params(cfg).values())
    raise ValueError(f"unknown layer kind {kind!r}")


@dataclass
class ParamReport:
    """`total` equals HybridLM(cfg).num_parameters(); `active` counts top-k of the experts (per token)."""

    total: int
    active: int
    by_component: dict[str, int] = field(default_factory=dict)
    per_layer: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "active": self.active,
            "by_component": dict(self.by_component),
            "per_layer": list(self.per_layer),
        }


_COMPONENT = {"r": "mamba1", "m": "mamba2", "a": "attention", "f": "mlp"}


def params(cfg: ModelConfig) -> ParamReport:
    """Count every parameter of `HybridLM(cfg)` analytically, by component and by layer."""
    d, vocab = cfg.d_model, cfg.padded_vocab_size
    comp: dict[str, int] = {
        "embedding": vocab * d,
        "lm_head": 0 if cfg.tie_embeddings else vocab * d,
        "norms": norm_params(cfg, d),
    }  # final norm
    per_layer: list[dict] = []
    inactive = 0
    for i, kind in enumerate(cfg.tokens):
        if kind == "g":
            call = shared_call_params(cfg)
            comp["shared_proj"] = comp.get("shared_proj", 0) + call["proj"]
            comp["lora"] = comp.get("lora", 0) + call["lora"]
            n = call["proj"] + call["lora"]
            per_layer.append({"index": i, "kind": kind, "name": TOKEN_NAMES[kind], "params": n, "active": n})
            continue
        norm = norm_params(cfg, d)
        comp["norms"] += norm
        n = sublayer_params(cfg, kind)
        active = n + norm
        if kind == "e":
            comp["moe_router"] = comp.get("moe_router", 0) + moe_router_params(cfg)
            comp["moe_experts"] = comp.get("moe_experts", 0) + cfg.moe.n_experts * moe_expert_params(cfg)
            dropped = (cfg.moe.n_experts - cfg.moe.top_k) * moe_expert_params(cfg)
            inactive += dropped
            active -= dropped
        else:
            comp[_COMPONENT[kind]] = comp.get(_COMPONENT[kind], 0) + n
        per_layer.append(
            {"index": i, "kind": kind, "name": TOKEN_NAMES[kind], "params": n + norm, "active": active}
        )
    if cfg.n_shared_calls:
        block = shared_block_params(cfg)
        nb = cfg.shared.n_blocks
        comp["shared_attention"] = nb * block["attention"]
        comp["shared_mlp"] = nb * block["mlp"]
        comp["norms"] += nb * block["norms"]
    comp = {k: v for k, v in comp.items() if v}
    total = sum(comp.values())
    return ParamReport(total=total, active=total - inactive, by_component=comp, per_layer=per_layer)

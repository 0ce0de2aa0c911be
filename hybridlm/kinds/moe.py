"""`e`: mixture of experts (top-k router, load-balancing loss), section `moe`; module `hybridlm.layers.moe.MoE`."""

from __future__ import annotations

from hybridlm.kinds.base import LayerKind
from hybridlm.kinds.counting import linear_flops, linear_params, mlp_flops, mlp_params
from hybridlm.kinds.tp import Cut, TPPlan, split_parts

FP32 = 4


def expert_params(cfg) -> int:
    """One expert: up (2 ffn rows when gated) and down, with their biases."""
    return mlp_params(cfg.d_model, cfg.moe_ffn_dim, cfg.moe.gated, cfg.moe.bias)


def router_params(cfg) -> int:
    return linear_params(cfg.d_model, cfg.moe.n_experts, cfg.moe.router_bias)


class MoEKind(LayerKind):
    token, name, section = "e", "moe", "moe"
    bench = {"moe": {}}

    def validate(self, cfg):
        if cfg.moe.top_k > cfg.moe.n_experts:
            raise ValueError(f"moe.top_k={cfg.moe.top_k} must be <= moe.n_experts={cfg.moe.n_experts}")

    def build(self, cfg):
        from hybridlm.layers.moe import MoE

        m = cfg.moe
        return MoE(cfg.d_model, cfg.moe_ffn_dim, m.n_experts, m.top_k, m.activation, m.gated, m.bias, m.router_bias,
                   m.normalize_topk, m.router_activation)

    def run(self, module, h, cache, offset, segments=None):
        return module(h)  # (output, load-balancing loss); position-wise: segments do not matter

    def params(self, cfg):
        return {"moe_router": router_params(cfg), "moe_experts": cfg.moe.n_experts * expert_params(cfg)}

    def inactive_params(self, cfg):
        return (cfg.moe.n_experts - cfg.moe.top_k) * expert_params(cfg)

    def flops(self, cfg, batch, seq_len, attention, device):
        t, m = batch * seq_len, cfg.moe
        routed = t * m.top_k  # every token goes to exactly top_k experts (no capacity drop)
        return {
            "moe_router": linear_flops(t, cfg.d_model, m.n_experts),
            "moe_experts": mlp_flops(routed, cfg.d_model, cfg.moe_ffn_dim, m.gated),
        }

    def activation_bytes_per_token(self, cfg, seq_len, recompute, dtype_bytes):
        """norm in and out, router probabilities (fp32), and per route: the gathered row, up and
        activation outputs."""
        a, m, f = dtype_bytes, cfg.moe, cfg.moe_ffn_dim
        per_route = a * (cfg.d_model + (2 if m.gated else 1) * f + f)
        return a * 2 * cfg.d_model + FP32 * m.n_experts + m.top_k * per_route

    def tp_splits(self, cfg):
        return [("moe ffn_dim", cfg.moe_ffn_dim)]

    def tp_plan(self, cfg, tp):
        """Experts split along ffn_dim (gate and up rows separately), the router replicated; the routing
        itself (and expert parallelism over dim 0) is the module's `parallel` hook."""
        m, f = cfg.moe, cfg.moe_ffn_dim
        if tp > 1 and m.bias:
            raise ValueError("moe.bias: tensor parallelism splits the experts along ffn_dim and cannot add "
                             "their output biases once; set moe.bias false or tp 1")
        rows = split_parts(1, f, f) if m.gated else Cut(1)
        cuts = {"up": rows, "down": Cut(2)}
        experts = ("up", "down")
        if m.bias:
            cuts["up_bias"] = split_parts(1, f, f) if m.gated else Cut(1)
            experts += ("up_bias", "down_bias")
        full = ("router.weight", "router.bias") if m.router_bias else ("router.weight",)
        return TPPlan(cuts=cuts, full=full, enter=(), experts=experts)

    def sizing(self, cfg, multiple):
        return [("moe.ffn_dim", cfg.moe_ffn_dim, multiple, f"divisible by {multiple}")]


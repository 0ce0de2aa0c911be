"""`f`: the dense feed-forward (plain, GeGLU, SwiGLU), section `mlp`; module `hybridlm.layers.mlp.MLP`."""

from __future__ import annotations

from hybridlm.kinds.base import LayerKind
from hybridlm.kinds.counting import mlp_flops, mlp_params
from hybridlm.kinds.tp import Cut, TPPlan, split_parts


def mlp_tp_plan(ffn: int, gated: bool, bias: bool, prefix: str = "") -> TPPlan:
    """up column-parallel (gate and up rows split separately when gated), down row-parallel."""
    rows = split_parts(0, ffn, ffn) if gated else Cut(0)
    cuts = {f"{prefix}up.weight": rows, f"{prefix}down.weight": Cut(1)}
    if bias:
        cuts[f"{prefix}up.bias"] = rows
    return TPPlan(cuts=cuts, enter=(prefix.rstrip("."),), leave=(f"{prefix}down",))


class MLPKind(LayerKind):
    token, name, section = "f", "mlp", "mlp"
    bench = {"mlp": {}, "mlp-gated": {"mlp.gated": True}}  # the config's MLP as it is, and gated

    def build(self, cfg):
        from hybridlm.layers.mlp import MLP

        return MLP(cfg.d_model, cfg.mlp_ffn_dim, cfg.mlp.activation, cfg.mlp.gated, cfg.mlp.bias)

    def run(self, module, h, cache, offset, segments=None):
        return module(h), None  # position-wise: segments do not matter

    def params(self, cfg):
        return {self.name: mlp_params(cfg.d_model, cfg.mlp_ffn_dim, cfg.mlp.gated, cfg.mlp.bias)}

    def flops(self, cfg, batch, seq_len, attention, device):
        return {self.name: mlp_flops(batch * seq_len, cfg.d_model, cfg.mlp_ffn_dim, cfg.mlp.gated)}

    def final_projection_width(self, cfg):
        return cfg.mlp_ffn_dim

    def activation_bytes_per_token(self, cfg, seq_len, recompute, dtype_bytes):
        """norm in and out, up output, activation output."""
        f = cfg.mlp_ffn_dim
        return dtype_bytes * (2 * cfg.d_model + (2 if cfg.mlp.gated else 1) * f + f)

    def tp_splits(self, cfg):
        return [("mlp ffn_dim", cfg.mlp_ffn_dim)]

    def tp_plan(self, cfg, tp):
        return mlp_tp_plan(cfg.mlp_ffn_dim, cfg.mlp.gated, cfg.mlp.bias)

    def sizing(self, cfg, multiple):
        return [("mlp.ffn_dim", cfg.mlp_ffn_dim, multiple, f"divisible by {multiple}")]

"""Parameter counts from a `ModelConfig`, term by term, without building the model.

Each kind's spec (`hybridlm.kinds`) counts the tensors its module creates; `params(cfg)` sums them
over the layer stack with the pre-norms, embeddings and final norm; the tests compare the total with
`HybridLM(cfg).num_parameters()` for every preset and for random configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridlm.config import ModelConfig
from hybridlm.kinds import KINDS
from hybridlm.kinds.counting import norm_params
from hybridlm.kinds.moe import expert_params as moe_expert_params  # noqa: F401  (public: one expert's count)


def sublayer_params(cfg: ModelConfig, kind: str) -> int:
    """Parameters of one sub-layer of a kind (token) without its pre-norm; for a shared-block call
    ('g'), what the call owns (projection + LoRA), not the shared block."""
    return sum(KINDS[kind].params(cfg).values())


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


def params(cfg: ModelConfig) -> ParamReport:
    """Count every parameter of `HybridLM(cfg)` analytically, by component and by layer."""
    d, vocab = cfg.d_model, cfg.padded_vocab_size
    comp: dict[str, int] = {
        "embedding": vocab * d,
        "lm_head": 0 if cfg.tie_embeddings else vocab * d,
        "norms": norm_params(cfg.final_norm_kind, d),  # final norm
    }
    per_layer: list[dict] = []
    inactive = 0
    for i, token in enumerate(cfg.tokens):
        spec = KINDS[token]
        parts = spec.params(cfg)
        for name, n in parts.items():
            comp[name] = comp.get(name, 0) + n
        n = sum(parts.values())
        if not spec.call:  # a residual sub-layer has its pre-norm
            norm = norm_params(cfg.norm, d)
            comp["norms"] += norm
            n += norm
        dropped = spec.inactive_params(cfg)
        inactive += dropped
        per_layer.append({"index": i, "kind": token, "name": spec.name, "params": n, "active": n - dropped})
    for spec in {KINDS[t] for t in cfg.tokens}:
        for name, n in spec.shared_params(cfg).items():
            comp[name] = comp.get(name, 0) + n
    comp = {k: v for k, v in comp.items() if v}
    total = sum(comp.values())
    return ParamReport(total=total, active=total - inactive, by_component=comp, per_layer=per_layer)

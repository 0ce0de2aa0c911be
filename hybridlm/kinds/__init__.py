"""The registry of sub-layer kinds: one `LayerKind` spec per token of the layer-pattern language.

    from hybridlm.kinds import KINDS
    spec = KINDS["m"]            # Mamba2: spec.build(cfg), spec.params(cfg), spec.flops(cfg, ...), ...

The model (`hybridlm.model`), the planner (`hybridlm.plan`) and the block benchmarks (`hybridlm.bench`)
iterate over this registry; nothing outside it and the pattern parser looks at a token's letter.
To add a kind: write its layer module in `hybridlm/layers/`, its spec here (a `LayerKind` subclass in
its own file), list it below, and give its token a line in `hybridlm.config.pattern.TOKEN_NAMES`
(docs/architecture.md walks through sliding-window attention as the example).
"""

from __future__ import annotations

from hybridlm.kinds.attention import AttentionKind
from hybridlm.kinds.base import LayerKind
from hybridlm.kinds.mamba1 import Mamba1Kind
from hybridlm.kinds.mamba2 import Mamba2Kind
from hybridlm.kinds.mlp import MLPKind
from hybridlm.kinds.moe import MoEKind
from hybridlm.kinds.shared import SharedKind
from hybridlm.kinds.sliding_window import SlidingWindowKind

MAMBA1, MAMBA2, ATTENTION = Mamba1Kind(), Mamba2Kind(), AttentionKind()
SLIDING_WINDOW, MLP, MOE, SHARED = SlidingWindowKind(), MLPKind(), MoEKind(), SharedKind()

KINDS: dict[str, LayerKind] = {k.token: k for k in (MAMBA1, MAMBA2, ATTENTION, SLIDING_WINDOW, MLP, MOE, SHARED)}


def kind(token: str) -> LayerKind:
    return KINDS[token]


def kinds_in(tokens: list[str]) -> list[LayerKind]:
    """The kinds a token list uses, in registry order."""
    used = set(tokens)
    return [k for t, k in KINDS.items() if t in used]


__all__ = ["ATTENTION", "KINDS", "MAMBA1", "MAMBA2", "MLP", "MOE", "SHARED", "SLIDING_WINDOW", "LayerKind", "kind",
           "kinds_in"]

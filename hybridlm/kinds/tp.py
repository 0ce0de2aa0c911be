"""What tensor and expert parallelism do to one sub-layer, as data: each kind's spec says it
(`LayerKind.tp_plan`), `hybridlm.parallel` carries it out, and the planner counts with it.

A parameter is cut along one dimension into consecutive parts; each part is split into tp equal pieces
(rank r keeps piece r of every part, concatenated in order) or kept whole on every rank. Splitting the
parts separately is what keeps a packed projection correct: Mamba2's in_proj rows [z | x | B | C | dt]
give rank r [z_r | x_r | B_r | C_r | dt_r], where a contiguous cut of the packed rows would hand rank 0
all of z and half of x.

The region of a sub-layer that runs on split activations starts at the inputs of the `enter` modules
(forward: identity, or an all-gather of the sequence under sequence parallelism; backward: sum over the
ranks) and ends at the outputs of the row-parallel `leave` linears (forward: sum over the ranks, or a
reduce-scatter of the sequence; a bias is added once, after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Part:
    size: int
    split: bool = True  # False: every rank keeps the whole part (its gradient is then summed over the ranks)


@dataclass(frozen=True)
class Cut:
    dim: int
    parts: tuple[Part, ...] | None = None  # None: the whole dimension is one split part


def split_parts(dim: int, *sizes: int) -> Cut:
    """A cut into consecutive parts of `sizes`, each split over the ranks."""
    return Cut(dim, tuple(Part(s) for s in sizes))


@dataclass(frozen=True)
class TPPlan:
    """Names are relative to the sub-layer's module; parameters not in `cuts` are replicated."""

    cuts: dict[str, Cut] = field(default_factory=dict)
    # replicated parameters applied to split activations inside the region: their gradients are partial
    # sums, added over the ranks after the backward pass (as a replicated part of a cut parameter is)
    partial: tuple[str, ...] = ()
    # replicated parameters whose gradients are complete on every rank even under sequence parallelism
    # (computed on the gathered sequence, outside the region); every other replicated parameter then
    # sees only its rank's tokens and is summed like `partial`
    full: tuple[str, ...] = ()
    enter: tuple[str, ...] = ("",)  # modules whose first input enters the region ("" is the sub-layer)
    leave: tuple[str, ...] = ()  # row-parallel linears whose output leaves it
    local: dict[str, dict[str, int]] = field(default_factory=dict)  # module -> attribute -> per-rank value
    reduce: dict[str, str] = field(default_factory=dict)  # "module.attribute" hook -> "sum" | "mean" over ranks
    experts: tuple[str, ...] = ()  # expert-stacked parameters (dim 0): expert parallelism splits them

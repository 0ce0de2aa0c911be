"""Which elements of every parameter this rank holds, as global index ranges.

The kinds' tensor-parallel plans (`hybridlm.kinds.tp`), expert parallelism (experts split along dim 0)
and FSDP2 (a contiguous chunk of dim 0 of the local tensor) together decide, per dimension of a parameter,
the runs of global indices this rank's local tensor holds, in order. Everything that must agree across
layouts is computed from these runs: the shards themselves (`local_index`), the initial values (the
same stream positions as the single-process model), the checkpoint boxes (resharding), which gradients
are summed over the tensor-parallel ranks, the gradient norm and the planner's per-rank memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from itertools import product

from hybridlm.errors import ConfigError
from hybridlm.kinds import KINDS
from hybridlm.kinds.tp import Cut, Part, TPPlan


@dataclass(frozen=True)
class Run:
    """Consecutive global indices [start, start + length) of one dimension, at local position `local`."""

    start: int
    length: int
    local: int
    shared: bool = False  # a replicated part: every tensor-parallel rank holds the same elements


@dataclass(frozen=True)
class ParamLayout:
    name: str
    shape: tuple[int, ...]  # the parameter's full (single-process) shape
    runs: tuple[tuple[Run, ...], ...]  # per dimension, in local order
    tp_whole: bool = True  # not cut by tensor parallelism: every tp rank holds the same elements
    partial: bool = False  # its tp-replicated elements get partial gradients (summed over the tp ranks)
    expert: bool = False  # split over the expert-parallel ranks (dim 0), replicated over dp

    @property
    def local_shape(self) -> tuple[int, ...]:
        return tuple(sum(r.length for r in runs) for runs in self.runs)

    @property
    def numel(self) -> int:
        return math.prod(self.local_shape)

    def local_index(self, device=None):
        """The global flat index of every local element (a LongTensor of the local shape)."""
        import torch

        index = torch.zeros((), dtype=torch.int64, device=device)
        for d, runs in enumerate(self.runs):
            stride = math.prod(self.shape[d + 1:])
            ids = torch.cat([torch.arange(r.start, r.start + r.length, device=device) for r in runs]) if runs \
                else torch.zeros(0, dtype=torch.int64, device=device)
            index = index[..., None] + ids * stride
        return index

    def boxes(self):
        """(global offsets, sizes, local slices, shared over tp) for every box of local elements that is
        contiguous in the full tensor."""
        for combo in product(*self.runs):
            offsets = tuple(r.start for r in combo)
            sizes = tuple(r.length for r in combo)
            where = tuple(slice(r.local, r.local + r.length) for r in combo)
            yield offsets, sizes, where, self.tp_whole or any(r.shared for r in combo)

    def shared_slices(self):
        """Local slices held identically by every tensor-parallel rank."""
        if self.tp_whole:
            return [tuple(slice(None) for _ in self.shape)]
        out = []
        for d, runs in enumerate(self.runs):
            for r in runs:
                if r.shared:
                    out.append(tuple(slice(r.local, r.local + r.length) if i == d else slice(None)
                                     for i in range(len(self.shape))))
        return out

    def chunk(self, lo: int, hi: int) -> ParamLayout:
        """The layout of local rows [lo, hi) of dim 0 (an FSDP2 shard of the local tensor)."""
        kept, pos = [], 0
        for r in self.runs[0]:
            a, b = max(lo, r.local), min(hi, r.local + r.length)
            if a < b:
                kept.append(Run(r.start + a - r.local, b - a, pos, r.shared))
                pos += b - a
        return replace(self, runs=(tuple(kept),) + self.runs[1:])


def _runs(size: int, cut: Cut | None, ways: int, rank: int, name: str) -> tuple[Run, ...]:
    parts = cut.parts if cut is not None and cut.parts is not None else (Part(size),)
    if sum(p.size for p in parts) != size:
        raise ValueError(f"{name}: parts {[p.size for p in parts]} do not add up to {size}")
    out, start, local = [], 0, 0
    for p in parts:
        if p.split and ways > 1:
            if p.size % ways:
                raise ValueError(f"{name}: a part of {p.size} does not split over {ways} ranks")
            n = p.size // ways
            out.append(Run(start + rank * n, n, local))
        else:
            n = p.size
            out.append(Run(start, n, local, shared=not p.split))
        start, local = start + p.size, local + n
    return tuple(out)


@dataclass
class Plans:
    """The plan of every module prefix of a model (`module_plans`), looked up by parameter name."""

    entries: list[tuple[str, object, TPPlan]] = field(default_factory=list)

    def find(self, name: str) -> tuple[str, object, TPPlan]:
        best = max((e for e in self.entries if name.startswith(e[0])), key=lambda e: len(e[0]))
        return best


def model_plan(model) -> TPPlan:
    """The model's own parameters: vocabulary-parallel embedding and output head; norms replicated."""
    cuts = {"embed.weight": Cut(0)}
    if model.lm_head is not None:
        cuts["lm_head.weight"] = Cut(0)
    return TPPlan(cuts=cuts, enter=())


def module_plans(model, tp: int) -> Plans:
    """(prefix, module, plan) for the model and every sub-layer module, from the kinds' specs."""
    cfg = model.config
    entries = [("", model, model_plan(model))]
    for i, block in enumerate(model.layers):
        entries.append((f"layers.{i}.mixer.", block.mixer, block.spec.tp_plan(cfg, tp)))
    if model.shared is not None:
        spec = next(KINDS[t] for t in cfg.tokens if KINDS[t].call)
        entries += [(f"shared.{j}.", b, spec.block_tp_plan(cfg, tp)) for j, b in enumerate(model.shared)]
        entries += [(f"calls.{j}.", c, spec.tp_plan(cfg, tp)) for j, c in enumerate(model.calls)]
    return Plans(entries)


def param_layouts(model, tp: int = 1, tp_rank: int = 0, ep: int = 1, ep_rank: int = 0,
                  sp: bool = False) -> dict[str, ParamLayout]:
    """The layout of every parameter of the plain (unsplit, possibly meta) model on rank (tp_rank, ep_rank)."""
    plans = module_plans(model, tp)
    out = {}
    for name, p in model.named_parameters():
        prefix, _, plan = plans.find(name)
        rel = name[len(prefix):]
        cut, expert = plan.cuts.get(rel), rel in plan.experts
        shape = tuple(p.shape)
        runs = []
        for d, size in enumerate(shape):
            if cut is not None and d == cut.dim:
                runs.append(_runs(size, cut, tp, tp_rank, name))
            elif expert and d == 0:
                runs.append(_runs(size, None, ep, ep_rank, name))
            else:
                runs.append((Run(0, size, 0),))
        tp_whole = cut is None or tp == 1
        partial = tp > 1 and (rel in plan.partial or (cut is not None and any(not q.split for q in cut.parts or ()))
                              or (sp and cut is None and rel not in plan.full))
        out[name] = ParamLayout(name, shape, tuple(runs), tp_whole, partial, expert)
    return out


def validate(cfg, tp: int, ep: int, sp: bool = False, seq_len: int | None = None) -> None:
    """One-line ConfigError when the model cannot be split this way."""
    for token in sorted(set(cfg.tokens)):
        for what, size in KINDS[token].tp_splits(cfg):
            if size % tp:
                raise ConfigError(f"tp={tp} must divide the {what} ({size})")
        try:
            KINDS[token].tp_plan(cfg, tp)
        except ValueError as err:
            raise ConfigError(f"tp={tp}: {err}") from None
    if cfg.padded_vocab_size % tp:
        raise ConfigError(f"tp={tp} must divide the padded vocabulary ({cfg.padded_vocab_size}); "
                          "set pad_vocab_multiple to a multiple of tp")
    if ep > 1:
        if not any(KINDS[t].tp_plan(cfg, tp).experts for t in set(cfg.tokens)):
            raise ConfigError(f"ep={ep}: the model has no experts to split")
        if cfg.moe.n_experts % ep:
            raise ConfigError(f"ep={ep} must divide moe.n_experts ({cfg.moe.n_experts})")
    if sp and seq_len is not None and seq_len % tp:
        raise ConfigError(f"sequence parallelism: tp={tp} must divide data.seq_len ({seq_len})")

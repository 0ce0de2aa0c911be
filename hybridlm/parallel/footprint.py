"""Elements of parameters, gradients and optimizer state that the most loaded rank stores, for a layout
(tensor, expert and data parallelism with a ZeRO stage), computed from the same parameter layouts the
trainer splits the model with: the planner's per-GPU training memory (`hybridlm plan --gpus --tp --ep
--zero`), equal to what `ParallelModel.local_bytes` measures on the split model.

ZeRO stages as the trainer runs them: 0 keeps everything on every data rank (DDP); 1 partitions the
optimizer state by whole tensors as torch's ZeroRedundancyOptimizer does (largest first, each to the
least loaded rank, per parameter group); 2 partitions gradients the same way; 3 shards every tensor
along dim 0 over the data ranks as FSDP2 does (torch.chunk pieces; experts over their dp replicas).
"""

from __future__ import annotations

import functools
import math

from hybridlm.config import ModelConfig


@functools.lru_cache(maxsize=32)
def _local_tensors(cfg: ModelConfig, tp: int, ep: int) -> tuple[tuple[str, tuple[int, ...], bool, bool], ...]:
    """(name, local shape on tensor/expert rank 0, expert, no weight decay) of every parameter."""
    import torch

    from hybridlm.model import HybridLM
    from hybridlm.parallel.shards import param_layouts
    from hybridlm.train.config import OptimConfig
    from hybridlm.train.optim import no_decay_names

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # no side effect on the caller's generator
            model = HybridLM(cfg)
    except RuntimeError as err:  # a tensor torch cannot represent even on the meta device (d_model: 1000000000)
        from hybridlm.errors import ConfigError

        raise ConfigError(f"a tensor of this model is too large for torch to represent ({str(err)[:120]}); check "
                          f"its sizes (d_model={cfg.d_model}, vocab_size={cfg.vocab_size})") from None
    exempt = no_decay_names(model, OptimConfig())
    layouts = param_layouts(model, tp, 0, ep, 0)
    return tuple((n, lay.local_shape, lay.expert, n in exempt) for n, lay in layouts.items())


def _first_chunk(shape: tuple[int, ...], ways: int) -> int:
    rows = shape[0] if shape else 1
    return min(-(-rows // ways), rows) * math.prod(shape[1:])


def _greedy_max(tensors, ways: int) -> int:
    """The largest per-rank total of ZeroRedundancyOptimizer's partition (decay group, then no-decay)."""
    sizes = [0] * ways
    for exempt in (False, True):
        group = [math.prod(shape) for _, shape, _, ex in tensors if ex == exempt]
        for n in sorted(group, reverse=True):
            sizes[sizes.index(min(sizes))] += n
    return max(sizes)


def local_elements(cfg: ModelConfig, tp: int = 1, ep: int = 1, zero: int = 0, data: int = 1) -> dict[str, int]:
    """{"weights", "grads", "optimizer"}: elements per tensor kind on the most loaded rank (optimizer: per
    state tensor, e.g. Adam's m). `data`: data-parallel ranks (dp x ep)."""
    tensors = _local_tensors(cfg, tp, ep)  # ModelConfig is frozen: hashable
    full = sum(math.prod(shape) for _, shape, _, _ in tensors)
    if zero >= 3:
        sharded = sum(_first_chunk(shape, data // ep if expert else data) for _, shape, expert, _ in tensors)
        return {"weights": sharded, "grads": sharded, "optimizer": sharded}
    partitioned = _greedy_max(tensors, data) if zero >= 1 and data > 1 else full
    return {"weights": full, "grads": partitioned if zero >= 2 else full, "optimizer": partitioned}

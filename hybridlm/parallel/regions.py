"""Differentiable collectives at the edges of tensor-parallel regions (Megatron's f and g), their
sequence-parallel variants, and the vocabulary-parallel cross-entropy.

Every tensor a collective receives is an activation or gradient on the training device (nothing here
builds a tensor on the host), so they run unchanged on NCCL.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.autograd import Function


def _all_reduce(x: torch.Tensor, group, op=dist.ReduceOp.SUM) -> torch.Tensor:
    x = x.clone(memory_format=torch.contiguous_format)  # never modify a tensor autograd may have saved
    dist.all_reduce(x, op=op, group=group)
    return x


def _all_gather(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    pieces = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(pieces, x.contiguous(), group=group)
    return torch.cat(pieces, dim=dim)


def _local_chunk(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    return x.chunk(dist.get_world_size(group), dim=dim)[dist.get_rank(group)].contiguous()


def _reduce_scatter(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    """Sum over the ranks, keep this rank's chunk along `dim` (as an all-reduce: gloo has no reduce-scatter)."""
    if dist.get_backend(group) == "nccl":
        chunks = [c.contiguous() for c in x.chunk(dist.get_world_size(group), dim=dim)]
        out = torch.empty_like(chunks[0])
        dist.reduce_scatter(out, chunks, group=group)
        return out
    return _local_chunk(_all_reduce(x, group), dim, group)


class _Copy(Function):
    """Enter a region: identity forward, gradients summed over the ranks backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad, ctx.group), None


class _Reduce(Function):
    """Leave a region: partial sums added over the ranks forward, identity backward."""

    @staticmethod
    def forward(ctx, x, group):
        return _all_reduce(x, group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _SumBoth(Function):
    """Sum over the ranks in both directions: a replicated value computed from partial sums whose
    consumers are themselves split (Mamba1's x_proj, a norm group spanning ranks, MoE statistics)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_reduce(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad, ctx.group), None


class _GatherSeq(Function):
    """Sequence parallelism, entering a region: all-gather along the sequence; backward reduce-scatter."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_gather(x, 1, group)

    @staticmethod
    def backward(ctx, grad):
        return _reduce_scatter(grad, 1, ctx.group), None


class _ScatterSeq(Function):
    """Sequence parallelism, leaving a region: reduce-scatter along the sequence; backward all-gather."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _reduce_scatter(x, 1, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad, 1, ctx.group), None


class _GatherSeqReplicated(Function):
    """All-gather along the sequence for a consumer that computes the same thing on every rank (its
    gradient is then complete everywhere): backward keeps this rank's chunk."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_gather(x, 1, group)

    @staticmethod
    def backward(ctx, grad):
        return _local_chunk(grad, 1, ctx.group), None


class _SplitSeq(Function):
    """Keep this rank's chunk of the sequence; backward all-gather."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _local_chunk(x, 1, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad, 1, ctx.group), None


class Region:
    """The edges of the tensor-parallel regions of one model over `group` (None: one rank, no-ops), with
    or without sequence parallelism (activations outside the regions split along dim 1)."""

    def __init__(self, group, sp: bool = False):
        self.group, self.sp = group, sp

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        if self.group is None:
            return x
        return _GatherSeq.apply(x, self.group) if self.sp else _Copy.apply(x, self.group)

    def leave(self, x: torch.Tensor) -> torch.Tensor:
        if self.group is None:
            return x
        return _ScatterSeq.apply(x, self.group) if self.sp else _Reduce.apply(x, self.group)

    def copy(self, x: torch.Tensor) -> torch.Tensor:
        """A replicated value entering a region as it is (no gather): gradients summed over the ranks."""
        return _Copy.apply(x, self.group) if self.group is not None else x

    def gather_replicated(self, x: torch.Tensor) -> torch.Tensor:
        """The full sequence for a replicated computation (identity without sequence parallelism)."""
        return _GatherSeqReplicated.apply(x, self.group) if self.sp and self.group is not None else x

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's chunk of a replicated full-sequence tensor (identity without sequence parallelism)."""
        return _SplitSeq.apply(x, self.group) if self.sp and self.group is not None else x

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        return _SumBoth.apply(x, self.group) if self.group is not None else x

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.sum(x) / dist.get_world_size(self.group) if self.group is not None else x


def sum_over(x: torch.Tensor, group) -> torch.Tensor:
    """Differentiable sum over a group in both directions (identity for None)."""
    return _SumBoth.apply(x, group) if group is not None else x


class _VocabParallelCrossEntropy(Function):
    """Per-row cross-entropy of logits split along the vocabulary (Megatron's): the max, the target's
    logit and the sum of exponentials are reduced over the ranks; no rank holds the full softmax."""

    @staticmethod
    def forward(ctx, logits, targets, vocab_start, group):
        n_local = logits.shape[-1]
        peak = logits.max(-1).values
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
        z = logits - peak[:, None]
        local = targets - vocab_start
        inside = (local >= 0) & (local < n_local)
        index = local.clamp(0, n_local - 1)[:, None]
        picked = z.gather(1, index)[:, 0] * inside
        dist.all_reduce(picked, group=group)
        e = z.exp()
        total = e.sum(-1)
        dist.all_reduce(total, group=group)
        softmax = e / total[:, None]
        ctx.save_for_backward(softmax, index, inside)
        return total.log() - picked

    @staticmethod
    def backward(ctx, grad):
        softmax, index, inside = ctx.saved_tensors
        out = softmax.scatter_add(1, index, -inside.to(softmax.dtype)[:, None])
        return out * grad[:, None], None, None, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, vocab_start: int, group,
                                 reduction: str = "mean", ignore_index: int = -100) -> torch.Tensor:
    """F.cross_entropy over logits (..., V / tp) holding vocabulary rows vocab_start.. of each rank."""
    logits, targets = logits.flatten(0, -2).float(), targets.flatten()
    valid = targets != ignore_index
    losses = _VocabParallelCrossEntropy.apply(logits, targets, vocab_start, group) * valid
    if reduction == "none":
        return losses
    total = losses.sum()
    return total if reduction == "sum" else total / valid.sum()

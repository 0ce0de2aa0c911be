"""Routing of an MoE layer across ranks (`MoE.parallel`): expert parallelism, the tensor-parallel region of
the expert FFN, and load-balancing statistics over the global batch.

Expert parallelism (torchtitan's token dispatcher, as all-to-all): rank j of the expert-parallel group
holds experts [j E/ep, (j+1) E/ep). The routed rows, already sorted by expert, go to the ranks that hold
their experts with one all-to-all of uneven splits (the per-expert counts are exchanged first, and one
host synchronization turns them into split sizes), are regrouped expert-major, run through the local
experts' grouped matmuls, and come back by the reverse all-to-all.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.autograd import Function

from hybridlm.parallel.regions import Region, sum_over


class ExpertRouting:
    def __init__(self, region: Region, n_experts: int, ep_group=None, data_group=None):
        self.region = region
        self.n_experts = n_experts
        self.ep_group = ep_group
        self.ep = dist.get_world_size(ep_group) if ep_group is not None else 1
        self.data_group = data_group
        self.data = dist.get_world_size(data_group) if data_group is not None else 1

    # ----- the tensor-parallel region (the experts split along ffn_dim) -----
    def inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the router's input, the experts' input): the router computes the same routing on every
        tensor-parallel rank, outside the region; the experts' input enters it."""
        return self.region.gather_replicated(x), self.region.enter(x)

    def combine_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """The routing weights scale split expert outputs: their gradients are summed over the ranks."""
        return self.region.copy(weights)

    def output(self, out: torch.Tensor) -> torch.Tensor:
        return self.region.leave(out)

    # ----- the balancing loss over every data-parallel rank's tokens -----
    def batch_stats(self, counts: torch.Tensor, prob_sum: torch.Tensor, tokens: int):
        if self.data_group is None:
            return counts, prob_sum, tokens
        counts = counts.clone()
        dist.all_reduce(counts, group=self.data_group)
        return counts, sum_over(prob_sum, self.data_group), tokens * self.data

    # ----- expert parallelism -----
    def dispatch(self, routed: torch.Tensor, counts: torch.Tensor):
        """Rows sorted by expert -> (rows for this rank's experts, grouped by local expert; their counts;
        what `combine` needs to send the results back)."""
        if self.ep_group is None:
            return routed, counts, None
        local = self.n_experts // self.ep
        received = torch.empty_like(counts)
        dist.all_to_all_single(received, counts, group=self.ep_group)  # [peer j's counts for my experts]
        received = received.view(self.ep, local)
        send, recv = torch.stack([counts.view(self.ep, local).sum(1), received.sum(1)]).tolist()
        x = _all_to_all(routed, recv, send, self.ep_group)  # peer-major, then expert
        expert_of = torch.repeat_interleave(torch.arange(local, device=x.device).repeat(self.ep),
                                            received.flatten(), output_size=x.shape[0])
        order = expert_of.argsort(stable=True)
        return x[order], received.sum(0), (order, send, recv)

    def combine(self, y: torch.Tensor, state) -> torch.Tensor:
        if state is None:
            return y
        order, send, recv = state
        back = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
        return _all_to_all(y[back], send, recv, self.ep_group)


class _AllToAll(Function):
    """Rows exchanged with uneven splits; the backward sends the gradients back the same way."""

    @staticmethod
    def forward(ctx, x, output_splits, input_splits, group):
        ctx.splits, ctx.group = (output_splits, input_splits), group
        out = x.new_empty((sum(output_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), output_splits, input_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        output_splits, input_splits = ctx.splits
        out = grad.new_empty((sum(input_splits), *grad.shape[1:]))
        dist.all_to_all_single(out, grad.contiguous(), input_splits, output_splits, group=ctx.group)
        return out, None, None, None


def _all_to_all(x: torch.Tensor, output_splits: list[int], input_splits: list[int], group) -> torch.Tensor:
    return _AllToAll.apply(x, output_splits, input_splits, group)

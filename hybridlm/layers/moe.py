"""Mixture of experts with a top-k router (softmax or sigmoid scores) and a Switch-style load-balancing loss.

Experts are stored stacked (E, out, in) so one parameter holds all experts of a layer. The routed rows are
sorted by expert and every expert runs in one grouped matrix multiply (`torch.nn.functional.grouped_mm`,
offsets from a cumulative count: no host synchronization, no Python loop over experts; the loop remains
only as the fallback where grouped_mm does not apply). No capacity limit, no dropped tokens.

Parallelism plugs in through `MoE.parallel` (set by `hybridlm.parallel`): it sums the balancing statistics
over the data-parallel ranks (so the loss is the global batch's, as in one process), sends the sorted rows
to the ranks that hold their experts and back (expert parallelism), and marks the tensor-parallel region
of the expert FFN (experts split along ffn_dim)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.layers.mlp import ACTIVATIONS


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matrix products run in: autocast's when it is on for x's device, else x's."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def _grouped_mm_applies(x: torch.Tensor, w: torch.Tensor) -> bool:
    """grouped_mm needs 16-byte aligned strides; on CUDA it takes bf16 only."""
    size = x.element_size()
    aligned = all((n * size) % 16 == 0 for n in w.shape[-2:])
    return aligned and (x.device.type == "cpu" or x.dtype == torch.bfloat16)


def _grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of torch's grouped matmul, for FlopCounterMode (which has no formula for it): 2 x the
    multiply-adds, whichever operand is jagged (forward (M, K) x (E, K, N); weight gradient (K, M) x (M, N))."""
    if len(a_shape) == 2 and len(b_shape) == 3:
        return 2 * a_shape[0] * a_shape[1] * b_shape[2]
    if len(a_shape) == 2 and len(b_shape) == 2:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]
    if len(a_shape) == 3 and len(b_shape) == 2:
        return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[1] // a_shape[0]
    return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]


def _register_flop_formula() -> None:
    from torch.utils import flop_counter

    if torch.ops.aten._grouped_mm not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(torch.ops.aten._grouped_mm)(_grouped_mm_flops)


_register_flop_formula()


def grouped_linear(x: torch.Tensor, w: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Rows of x grouped by expert (counts[e] rows for expert e, in order) times w[e]^T: x (N, in), w (E, out, in)."""
    if x.shape[0] and _grouped_mm_applies(x, w):
        return F.grouped_mm(x, w.transpose(-2, -1), offs=counts.cumsum(0).to(torch.int32))
    # unbind once: indexing w[e] per expert would make autograd zero-fill a full-size gradient each
    pieces = [rows @ we.t() for rows, we in zip(x.split(counts.tolist()), w.unbind(0), strict=True)]
    return torch.cat(pieces) if pieces else x.new_zeros(0, w.shape[1])


class MoE(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, n_experts: int, top_k: int, activation: str = "silu",
                 gated: bool = True, bias: bool = False, router_bias: bool = False, normalize_topk: bool = False,
                 router_activation: str = "softmax"):
        super().__init__()
        self.n_experts, self.top_k, self.gated, self.normalize_topk = n_experts, top_k, gated, normalize_topk
        self.router_activation = router_activation
        self.act = ACTIVATIONS[activation]
        self.router = nn.Linear(dim, n_experts, bias=router_bias)
        up_rows = 2 * ffn_dim if gated else ffn_dim
        self.up = nn.Parameter(torch.empty(n_experts, up_rows, dim))
        self.down = nn.Parameter(torch.empty(n_experts, dim, ffn_dim))
        self.up_bias = nn.Parameter(torch.zeros(n_experts, up_rows)) if bias else None
        self.down_bias = nn.Parameter(torch.zeros(n_experts, dim)) if bias else None
        for w in (self.up, self.down):
            nn.init.kaiming_uniform_(w.view(-1, w.shape[-1]), a=math.sqrt(5))
        self.parallel = None  # hybridlm.parallel's routing across ranks; None: everything in this process

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(router probabilities (T, E) for the balancing loss, the k kept scores (T, k), their experts (T, k)).
        Sigmoid scores are independent per expert; their per-token normalization is the loss's distribution."""
        logits = self.router(x).float()
        if self.router_activation == "sigmoid":
            scores = torch.sigmoid(logits)
            probs = scores / scores.sum(-1, keepdim=True)
        else:
            scores = probs = torch.softmax(logits, dim=-1)
        weights, experts = scores.topk(self.top_k, dim=-1)
        return probs, weights, experts

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output, load-balancing loss E * sum_e f_e * P_e; 1.0 when perfectly balanced)."""
        par = self.parallel
        x_route, x = (x, x) if par is None else par.inputs(x)
        shape = x.shape
        x_route, x = x_route.reshape(-1, shape[-1]), x.reshape(-1, shape[-1])
        probs, weights, experts = self.route(x_route)
        if self.normalize_topk:
            weights = weights / weights.sum(-1, keepdim=True)
        flat = experts.flatten()
        counts = torch.bincount(flat, minlength=self.n_experts)
        aux = self.balance_loss(probs, counts)
        weights = weights.to(x.dtype) if par is None else par.combine_weights(weights.to(x.dtype))
        order = flat.argsort(stable=True)
        rows = order // self.top_k  # the token of each routed row, rows sorted by expert
        routed = x[rows]
        if par is None:
            y = self.experts(routed, counts)
        else:
            routed, local_counts, state = par.dispatch(routed, counts)
            y = par.combine(self.experts(routed, local_counts), state)
        weighted = y * weights.flatten()[order, None]  # under autocast: bf16 expert outputs, fp32 weights
        out = torch.zeros(x.shape, dtype=weighted.dtype, device=x.device).index_add(0, rows, weighted)
        out = out.reshape(shape)
        return (out if par is None else par.output(out)), aux

    def balance_loss(self, probs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """E * sum_e f_e * P_e: f_e the fraction of routed rows sent to expert e, P_e the mean router
        probability of e, both over the whole batch (every data-parallel rank's tokens)."""
        tokens, prob_sum, counts = probs.shape[0], probs.sum(0), counts.float()
        if self.parallel is not None:
            counts, prob_sum, tokens = self.parallel.batch_stats(counts, prob_sum, tokens)
        return self.n_experts * (counts / (tokens * self.top_k) * (prob_sum / tokens)).sum()

    def experts(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The expert FFNs on rows grouped by (local) expert: counts[e] rows for expert e, in order."""
        dtype = compute_dtype(x)
        x = x.to(dtype)
        h = grouped_linear(x, self.up.to(dtype), counts)
        if self.up_bias is not None or self.down_bias is not None:
            expert_of = torch.repeat_interleave(torch.arange(len(counts), device=x.device), counts,
                                                output_size=x.shape[0])
        if self.up_bias is not None:
            h = h + self.up_bias.to(dtype)[expert_of]
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        y = grouped_linear(h, self.down.to(dtype), counts)
        if self.down_bias is not None:
            y = y + self.down_bias.to(dtype)[expert_of]
        return y

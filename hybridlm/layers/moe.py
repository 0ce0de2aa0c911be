"""Mixture of experts with a top-k router (softmax or sigmoid scores) and a Switch-style load-balancing loss.

Experts are stored stacked (E, out, in) so one parameter holds all experts of a layer; each
expert runs on the tokens routed to it (no capacity limit, no dropped tokens)."""

from __future__ import annotations

import math

import torch
from torch import nn

from hybridlm.layers.mlp import ACTIVATIONS


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
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs, weights, experts = self.route(x)
        if self.normalize_topk:
            weights = weights / weights.sum(-1, keepdim=True)
        weights = weights.to(x.dtype)
        out = torch.zeros_like(x)
        flat_experts = experts.flatten()
        order = flat_experts.argsort(stable=True)
        counts = torch.bincount(flat_experts, minlength=self.n_experts)
        token_of = order // self.top_k
        start = 0
        # unbind once: indexing self.up[e] per expert would make autograd zero-fill a full-size gradient each
        ups, downs = self.up.unbind(0), self.down.unbind(0)
        up_biases = self.up_bias.unbind(0) if self.up_bias is not None else None
        down_biases = self.down_bias.unbind(0) if self.down_bias is not None else None
        for e, n in enumerate(counts.tolist()):
            if n == 0:
                continue
            slots = order[start:start + n]
            rows = token_of[start:start + n]
            start += n
            h = x[rows] @ ups[e].t()
            if up_biases is not None:
                h = h + up_biases[e]
            if self.gated:
                gate, up = h.chunk(2, dim=-1)
                h = self.act(gate) * up
            else:
                h = self.act(h)
            y = h @ downs[e].t()
            if down_biases is not None:
                y = y + down_biases[e]
            out.index_add_(0, rows, y * weights.flatten()[slots, None])
        fraction = counts.float() / flat_experts.numel()
        aux = self.n_experts * (fraction * probs.mean(0)).sum()
        return out.reshape(shape), aux

"""Counting primitives that every layer kind's formulas are written with.

Convention: FLOPs = 2 x multiply-accumulates of the matrix products the code runs (nn.Linear, einsums,
batched matmuls, SDPA), exactly what `torch.utils.flop_counter.FlopCounterMode` counts; elementwise work
and bias adds count 0 (see `hybridlm.plan.flops`).
"""

from __future__ import annotations

BACKWARD_FACTOR = 2  # autograd runs every product once per operand that needs a gradient


def linear_params(n_in: int, n_out: int, bias: bool = False) -> int:
    return n_in * n_out + (n_out if bias else 0)


def norm_params(norm: str, dim: int) -> int:
    """RMSNorm: a weight; LayerNorm: weight and bias."""
    return dim if norm == "rmsnorm" else 2 * dim


def mlp_params(dim: int, ffn: int, gated: bool, bias: bool) -> int:
    """up (2 ffn rows when gated: gate and up fused) and down."""
    return linear_params(dim, (2 if gated else 1) * ffn, bias) + linear_params(ffn, dim, bias)


def linear_flops(tokens: int, n_in: int, n_out: int) -> int:
    return 2 * tokens * n_in * n_out


def mlp_flops(tokens: int, dim: int, ffn: int, gated: bool) -> int:
    return linear_flops(tokens, dim, (2 if gated else 1) * ffn) + linear_flops(tokens, ffn, dim)


def einsum_flops(contracted: int, others: int) -> int:
    """A two-operand einsum contracting one index of size `contracted` over `others` output/batch
    elements. torch.einsum runs a size-1 contraction as an elementwise product (no matmul), so 0."""
    return 0 if contracted == 1 else 2 * contracted * others


def matmul_flops(contracted: int, others: int) -> int:
    """A batched matmul (`@`) contracting `contracted` over `others` output elements; unlike einsum, a
    size-1 contraction still runs as a matmul."""
    return 2 * contracted * others

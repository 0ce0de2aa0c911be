"""One rank's side of each benchmarked op: its buffers, the call, and the data check.

Every rank fills its input with pattern(rank, index) = (index + 7*rank + 1) mod m, small integers
stored in floats. The right result of every op is then known in closed form, and sums of n such
values stay exact in the chosen dtype (m is picked so n*m fits the dtype's exact-integer range).
Output buffers are refilled with -1, never a pattern value, before each trial, so an op that
writes nothing is caught too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hybridlm.bench.comms_math import buffer_numels, check_op

SENTINEL = -1.0

# Largest integer up to which every integer is exactly representable.
EXACT_INT_LIMIT = {
    torch.float16: 2**11,
    torch.bfloat16: 2**8,
    torch.float32: 2**24,
    torch.float64: 2**53,
}

# Newer torch names; older releases only have the *_into_tensor / *_tensor spellings.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def pattern_modulus(dtype: torch.dtype, n: int) -> int:
    """m such that a sum of n pattern values (plus one injected +1) is exact in dtype."""
    return max(2, min(251, (EXACT_INT_LIMIT[dtype] - 1) // n))


@dataclass
class Case:
    """What the worker loop needs for one (op, size) on one rank."""

    run: Callable[[], object]
    reset: Callable[[], object]
    count_wrong: Callable[[], int]


def build_case(
    op: str,
    nbytes: int,
    dtype: torch.dtype,
    device: torch.device,
    rank: int,
    n: int,
    corrupt: bool = False,
) -> Case:
    """Buffers and closures for `op` moving `nbytes` (nccl-tests S) on this rank.

    `corrupt` makes this rank add 1 to the first element of its input, as a faulty link or kernel
    would; the data check must then report wrong elements. It exists to test the check.
    """
    check_op(op)
    m = pattern_modulus(dtype, n)
    n_in, n_out = buffer_numels(op, nbytes, n, torch.empty(0, dtype=dtype).element_size())

    def idx(numel: int) -> torch.Tensor:
        return torch.arange(numel, device=device)

    def pat(r: int | torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return ((index + 7 * r + 1) % m).to(dtype)

    def source(values: torch.Tensor) -> torch.Tensor:
        if corrupt:
            values[0] += 1
        return values

    def check(out: torch.Tensor, expected: torch.Tensor) -> Callable[[], int]:
        return lambda: int((out != expected).sum().item())

    if op == "all_reduce":
        i = idx(n_in)
        src, buf = source(pat(rank, i)), torch.empty(n_in, dtype=dtype, device=device)
        expected = sum(pat(s, i) for s in range(n))
        return Case(lambda: dist.all_reduce(buf), lambda: buf.copy_(src), check(buf, expected))

    if op == "broadcast":
        i = idx(n_in)
        src = source(pat(0, i) if rank == 0 else torch.full((n_in,), SENTINEL, dtype=dtype, device=device))
        buf = torch.empty_like(src)
        return Case(lambda: dist.broadcast(buf, src=0), lambda: buf.copy_(src), check(buf, pat(0, i)))

    out = torch.empty(n_out, dtype=dtype, device=device)

    def reset() -> None:
        out.fill_(SENTINEL)

    if op == "all_gather":
        c = n_in
        src = source(pat(rank, rank * c + idx(c)))
        i = idx(n_out)
        return Case(lambda: _all_gather(out, src), reset, check(out, pat(i // c, i)))

    if op == "reduce_scatter":
        c = n_out
        src = source(pat(rank, idx(n_in)))
        mine = rank * c + idx(c)
        expected = sum(pat(s, mine) for s in range(n))
        return Case(lambda: _reduce_scatter(out, src), reset, check(out, expected))

    if op == "all_to_all":
        c = n_in // n
        src = source(pat(rank, idx(n_in)))
        i = idx(n_out)  # chunk s of my output is chunk `rank` of rank s's input
        expected = pat(i // c, rank * c + i % c)
        return Case(lambda: dist.all_to_all_single(out, src), reset, check(out, expected))

    # Point-to-point: ranks pair up as (0, 1), (2, 3), ...; the even rank sends first.
    peer = rank ^ 1
    if peer >= n:  # odd world size: the last rank sits out
        return Case(lambda: None, lambda: None, lambda: 0)
    i = idx(n_in)
    src = source(pat(rank, i))
    sender = min(rank, peer)
    is_sender = rank == sender

    if op == "pingpong":

        def run() -> None:
            if is_sender:
                dist.send(src, peer)
                dist.recv(out, peer)
            else:
                dist.recv(out, peer)
                dist.send(out, peer)

        return Case(run, reset, check(out, pat(sender, i)))

    if op == "p2p_uni":
        if is_sender:
            return Case(lambda: dist.send(src, peer), reset, lambda: 0)
        return Case(lambda: dist.recv(out, peer), reset, check(out, pat(sender, i)))

    # p2p_bidir: both directions at once
    def run_both() -> None:
        for req in (dist.isend(src, peer), dist.irecv(out, peer)):
            req.wait()

    return Case(run_both, reset, check(out, pat(peer, i)))

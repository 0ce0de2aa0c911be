"""Ring attention's communication (the baseline Tree Attention is measured against): every rank's KV
block travels around the ring, p - 1 hops, each rank sending the block it holds to the next rank while it
receives the previous rank's and attends the one in hand (so transfer and compute overlap). A rank holds
two blocks at a time besides its cache: the one in hand and the one arriving."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from hybridlm.parallel.comm import Comm


def ring_blocks(comm: Comm, block: torch.Tensor, lengths: list[int], dim: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (source rank, its block) for every rank, this rank's own first. `lengths[s]` is rank s's block
    size along `dim` (blocks may differ there, nowhere else). Consume the whole iterator: every rank must
    take part in every hop."""
    rank, world = comm.rank, comm.world
    current, shape = block.contiguous(), list(block.shape)
    del block  # from the first hop on, a rank holds only the block in hand and the one arriving
    for hop in range(world):
        works, incoming = [], None
        if hop + 1 < world:
            shape[dim] = lengths[(rank - hop - 1) % world]
            incoming = current.new_empty(shape)
            works = comm.start_shift(current, incoming)
        yield (rank - hop) % world, current
        for work in works:
            work.wait()
        current = incoming

"""Mamba layers under context parallelism: exact without moving the sequence.

Each rank scans its slice from a zero state. A linear recurrence state_t = decay_t * state_{t-1} +
input_t over a slice is an affine map of the state entering it: (total decay D_s, final state from
zero F_s). The ranks all-gather their (F_s, log D_s), and rank r's entering state folds its
predecessors' in order, S_r = D_{r-1} * S_{r-1} + F_{r-1} (S_0 = 0); its outputs gain that state's
contribution, y_t += C_t . (exp(A * cumsum(dt))_t * S_r) (`ssd.state_output`,
`selective_scan.state_output`), the SSD chunk recurrence one level up. The depthwise conv takes the
d_conv - 1 inputs before the slice from its predecessors (`gather_tails`). After the prompt every rank
holds the same conv and SSM states (the fold over all ranks), and decoding runs replicated.

The layer reads this through its cache slot: a `PassingState` has `passing` set while prefilling."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hybridlm.parallel.comm import Comm
from hybridlm.parallel.halo import gather_tails

if TYPE_CHECKING:
    from hybridlm.parallel.context import ContextParallel


class StatePassing:
    def __init__(self, comm: Comm, lengths: list[int]):
        self.comm, self.lengths = comm, lengths

    def left_context(self, inputs: torch.Tensor, k: int, cache: dict[str, torch.Tensor]) -> torch.Tensor:
        """inputs (b, l, c): the conv's inputs on this slice. Returns the k inputs before it; sets the cache's
        conv state to the prompt's last k inputs."""
        before, last = gather_tails(self.comm, inputs, self.lengths, k)
        cache["conv"].copy_(last)
        return before

    def start_state(self, final: torch.Tensor, log_decay: torch.Tensor, cache: dict[str, torch.Tensor]) -> torch.Tensor:
        """final: the slice's final state from a zero start; log_decay: the log of its total decay,
        broadcastable to `final` (a head's scalar in Mamba2, per channel and state in Mamba1). Returns the
        state entering this slice; sets the cache's SSM state to the prompt's final state."""
        final, log_decay = final.float(), log_decay.float()
        n_state = final[0].numel()
        packed = torch.cat([final.flatten(1), log_decay.flatten(1)], dim=1)
        state, start = torch.zeros_like(final), None
        for rank, part in enumerate(self.comm.all_gather(packed)):
            if rank == self.comm.rank:
                start = state
            fin, dec = part.split([n_state, part.shape[1] - n_state], dim=1)
            state = torch.exp(dec.view(log_decay.shape)) * state + fin.view(final.shape)
        cache["ssm"].copy_(state)
        return start


class PassingState(dict):
    """A Mamba layer's conv and SSM states, replicated on every rank."""

    def __init__(self, cp: ContextParallel, cache: dict[str, torch.Tensor]):
        super().__init__(cache)
        self.cp = cp

    @property
    def passing(self) -> StatePassing | None:
        return self.cp.passing if self.cp.prefilling else None

"""Inference cache: constant-size conv and SSM states for Mamba layers, a preallocated KV cache for
each attention layer and each shared-attention call. Nothing else grows with the context."""

from __future__ import annotations

import torch

from hybridlm.errors import HybridLMError


class InferenceCache:
    def __init__(self, slots: list[dict[str, torch.Tensor] | None], batch: int, max_len: int):
        self.slots = slots
        self.batch = batch
        self.max_len = max_len
        self.offset = 0  # tokens already processed
        self.seg_start: torch.Tensor | None = None  # (batch,) start of each row's last segment, once masks were used

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for slot in self.slots if slot for t in slot.values())

    def bytes_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for slot in self.slots:
            for name, t in (slot or {}).items():
                out[name] = out.get(name, 0) + t.numel() * t.element_size()
        return out

    def reserve(self, n_new: int, batch: int) -> None:
        if batch != self.batch:
            raise HybridLMError(f"cache was allocated for batch {self.batch}, got batch {batch}")
        if self.offset + n_new > self.max_len:
            raise HybridLMError(
                f"cache holds {self.max_len} tokens; {self.offset} used, {n_new} more do not fit "
                "(allocate a larger cache)"
            )

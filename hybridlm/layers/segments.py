"""Several sequences in one row: packed documents and padding, as per-token segment starts.

A row may hold more than one sequence: documents packed for training (`seq_idx`, mamba_ssm's name)
or a prompt after left padding (`attention_mask`, transformers' convention). Both become one notion:
each token belongs to a contiguous segment, and `start[b, i]` is the absolute position (in the
cache's coordinates) of the first token of token i's segment. Then every layer does the same thing
a separate run of each segment would:

    attention   query i sees key j iff start_i <= j <= i            (and i - window < j for 'w')
    RoPE        position of token i is i - start_i
    conv        tap reading position j contributes iff j >= start_i (the causal zero padding)
    SSM state   discarded where a segment starts (start_i == i)
    loss        token i does not predict token i + 1 across a segment start

Padding is a segment of its own, so real tokens never see it and its state never reaches them.
Decoding continues the last segment of each row (the cache keeps its start).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridlm.errors import HybridLMError


@dataclass
class Segments:
    start: torch.Tensor  # (b, l) long: absolute position where each token's segment starts
    offset: int  # absolute position of the first token

    @classmethod
    def from_masks(cls, shape: tuple[int, int], offset: int, attention_mask: torch.Tensor | None,
                   seq_idx: torch.Tensor | None, continuing: torch.Tensor | None,
                   device: torch.device) -> Segments:
        """A segment starts where `attention_mask` (1 = token, 0 = padding) or `seq_idx` (document
        index) changes along the row. The first token starts one unless it continues the cache's last
        segment (`continuing`: that segment's start per row, when there is a cache)."""
        b, l = shape
        change = torch.zeros(b, l, dtype=torch.bool, device=device)
        for name, m in (("attention_mask", attention_mask), ("seq_idx", seq_idx)):
            if m is None:
                continue
            if tuple(m.shape) != (b, l):
                raise HybridLMError(f"{name} must have the shape of input_ids {(b, l)}, got {tuple(m.shape)}")
            m = m.to(device)
            change[:, 1:] |= m[:, 1:] != m[:, :-1]
        pos = torch.arange(offset, offset + l, device=device).expand(b, l)
        first = continuing[:, None] if continuing is not None else torch.full((b, 1), offset, device=device)
        start = torch.where(change, pos, torch.zeros_like(pos))
        start[:, :1] = first
        return cls(torch.cummax(start, dim=1).values, offset)

    @classmethod
    def continuing(cls, start: torch.Tensor, length: int, offset: int) -> Segments:
        """New tokens that all continue the segment starting at `start` (b,)."""
        return cls(start[:, None].expand(-1, length), offset)

    @property
    def positions(self) -> torch.Tensor:
        """(b, l): each token's position within its segment (RoPE)."""
        l = self.start.shape[1]
        return torch.arange(self.offset, self.offset + l, device=self.start.device) - self.start

    @property
    def resets(self) -> torch.Tensor:
        """(b, l) bool: the token starts a segment (the state before it is discarded)."""
        return self.positions == 0

    def key_mask(self, key_positions: torch.Tensor, window: int | None = None) -> torch.Tensor:
        """(b, 1, l, k) bool: query i may attend the key at absolute position key_positions[k]
        ((k,) or (b, k)): causal, in its segment, and within the window if one is given."""
        l = self.start.shape[1]
        q = torch.arange(self.offset, self.offset + l, device=self.start.device)[None, :, None]
        k = key_positions[..., None, :] if key_positions.dim() == 2 else key_positions[None, None, :]
        mask = (k <= q) & (k >= self.start[:, :, None])
        if window is not None:
            mask &= k > q - window
        return mask[:, None]

    def conv_taps(self, k: int) -> torch.Tensor:
        """(b, l, k) bool: tap j of a width-k causal conv (reading position i - (k - 1) + j) is inside
        token i's segment."""
        taps = torch.arange(k - 1, -1, -1, device=self.start.device)  # distance back from i
        return self.positions[..., None] >= taps

    def labels_mask(self) -> torch.Tensor:
        """(b, l - 1) bool: position i may be trained to predict token i + 1 (same segment)."""
        return ~self.resets[:, 1:]

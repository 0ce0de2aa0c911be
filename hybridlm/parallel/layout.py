"""Which positions live on which rank.

A prompt of L tokens splits into contiguous slices over p ranks, the first L % p ranks one token longer.
Decoding appends the token at position t to rank t % p's KV shard: the first decoded token goes to the
first rank with a short slice, so the shards stay within one token of each other (at most
ceil(max_len / p) each, the capacity every rank allocates)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SequenceLayout:
    length: int  # prompt tokens
    world: int

    @property
    def lengths(self) -> list[int]:
        q, r = divmod(self.length, self.world)
        return [q + (i < r) for i in range(self.world)]

    @property
    def starts(self) -> list[int]:
        out, total = [], 0
        for n in self.lengths:
            out.append(total)
            total += n
        return out

    def slice(self, rank: int) -> tuple[int, int]:
        start = self.starts[rank]
        return start, start + self.lengths[rank]

    def owner(self, position: int) -> int:
        """The rank whose KV shard holds a decoded position (>= length)."""
        return position % self.world

    def shard_length(self, rank: int, upto: int) -> int:
        """Keys in rank's shard once every position < upto is written."""
        return self.lengths[rank] + _count_congruent(upto, rank, self.world) - _count_congruent(
            self.length, rank, self.world)

    def capacity(self, max_len: int) -> int:
        return -(-max_len // self.world)


def _count_congruent(stop: int, r: int, p: int) -> int:
    """#{t in [0, stop): t % p == r}."""
    return max(0, (stop - r + p - 1) // p)

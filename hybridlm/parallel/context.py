"""`ContextParallel`: sequence-sharded inference of a `HybridLM` over the ranks of a process group.

    model.generate(ids, context_parallel="tree")          # inside torch.distributed (torchrun, gloo/NCCL)

Every rank passes the same prompt and gets the same tokens as one device would. Each rank prefills a
contiguous slice of the prompt; what each kind of layer does with it is its spec's choice
(`LayerKind.allocate_sharded_cache`): full and shared attention keep a KV shard (`kv.ShardedKV`),
sliding-window attention a replicated window (`kv.WindowKV`), Mamba layers replicated states reached by
state passing (`state.PassingState`); token-local kinds (MLP, MoE) just run on the slice. The last
rank's logits of the last prompt token go to every rank by one broadcast; decoding then runs the
same step on every rank, attention combining the shards by the tree reduction ("tree") or by passing
the shards around the ring ("ring", the baseline). Outside a process group there is one rank: "tree"
is then split-KV decoding (flash-decoding) on this device.

Prefill attention gets the other ranks' KV by passing it around the ring (the default: a rank holds two
blocks at a time) or by one all-gather (`prefill="allgather"`: every rank holds all blocks up to its
own); `benchmarks/bench_context_prefill.py` compares them.
"""

from __future__ import annotations

import torch

from hybridlm.cache import InferenceCache
from hybridlm.errors import HybridLMError
from hybridlm.parallel.comm import Comm
from hybridlm.parallel.kv import ShardedKV, WindowKV
from hybridlm.parallel.layout import SequenceLayout
from hybridlm.parallel.merge import KV_BLOCK
from hybridlm.parallel.ring import ring_blocks
from hybridlm.parallel.state import PassingState, StatePassing

MODES = ("tree", "ring")
PREFILL = ("ring", "allgather")


class ContextParallel:
    def __init__(self, mode: str = "tree", group=None, prefill: str = "ring", kv_block: int = KV_BLOCK):
        if mode not in MODES:
            raise HybridLMError(f"context_parallel must be one of {', '.join(MODES)}, got {mode!r}")
        if prefill not in PREFILL:
            raise HybridLMError(f"prefill must be one of {', '.join(PREFILL)}, got {prefill!r}")
        if kv_block < 1:
            raise HybridLMError(f"kv_block must be >= 1, got {kv_block}")
        self.mode, self.prefill, self.kv_block = mode, prefill, kv_block
        self.comm = Comm(group)
        self.layout: SequenceLayout | None = None
        self.passing: StatePassing | None = None
        self.prefilling = False
        self.prefill_bytes = 0
        self.cache: InferenceCache | None = None

    @classmethod
    def of(cls, spec: str | ContextParallel, group=None) -> ContextParallel:
        return spec if isinstance(spec, ContextParallel) else cls(spec, group)

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def world(self) -> int:
        return self.comm.world

    # ----- the generation's phases -----
    def start(self, model, input_ids: torch.Tensor, max_len: int, dtype: torch.dtype | None = None,
              device=None) -> tuple[InferenceCache, torch.Tensor]:
        """Allocate this rank's cache for a prompt (batch, L) and up to max_len positions; return it with
        this rank's slice of the prompt (the cache's offset at the slice's first position)."""
        b, l = input_ids.shape
        if l < self.world:
            raise HybridLMError(f"context-parallel prefill needs at least one prompt token per rank: {l} tokens "
                                f"for {self.world} ranks")
        self.layout = SequenceLayout(l, self.world)
        self.passing = StatePassing(self.comm, self.layout.lengths)
        self.prefilling = True
        self.comm.reset()
        param = model.embed.weight
        dtype, device = dtype or param.dtype, device or param.device
        slots = [spec.allocate_sharded_cache(module, b, max_len, dtype, device, self)
                 for spec, module in model.cache_owners()]
        self.cache = cache = InferenceCache(slots, b, max_len)
        start, stop = self.layout.slice(self.rank)
        cache.offset = start
        return cache, input_ids[:, start:stop]

    def finish_prefill(self, logits: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """logits (b, vocab) of this rank's last token -> the prompt's last token's, on every rank."""
        logits = self.comm.broadcast(logits.contiguous(), src=self.world - 1)
        cache.offset = self.layout.length
        self.prefilling = False
        self.prefill_bytes = self.comm.sent
        return logits

    def comm_bytes(self) -> dict[str, int]:
        """Payload bytes this rank handed to collectives: the prefill's, and per decoding step (the mean over
        the steps run so far; every tree step moves the same amount)."""
        steps = self.cache.offset - self.layout.length
        decode = self.comm.sent - self.prefill_bytes
        return {"prefill": self.prefill_bytes, "decode_per_step": round(decode / steps) if steps else 0}

    def common_seed(self, seed: int | None, device=None) -> int:
        """The same sampling seed on every rank (rank 0's when none is given)."""
        if seed is not None or self.world == 1:
            return seed if seed is not None else torch.seed() % 2**63
        t = torch.tensor([torch.seed() % 2**63], dtype=torch.int64, device=device)
        return int(self.comm.broadcast(t, src=0).item())

    # ----- what the kinds' specs build (LayerKind.allocate_sharded_cache) -----
    def shard_capacity(self, max_len: int) -> int:
        return SequenceLayout(max_len, self.world).capacity(max_len)

    def sharded_kv(self, cache: dict[str, torch.Tensor]) -> ShardedKV:
        return ShardedKV(self, cache)

    def replicated_window(self, cache: dict[str, torch.Tensor]) -> WindowKV:
        return WindowKV(self, cache)

    def passed_state(self, cache: dict[str, torch.Tensor]) -> PassingState:
        return PassingState(self, cache)

    # ----- moving KV blocks -----
    def ring(self, block: torch.Tensor, lengths: list[int]):
        """(source rank, block) for every rank, passed around the ring; blocks are stacked (k, v) (2, b, kv, n, d)."""
        return ring_blocks(self.comm, block, lengths, dim=3)

    def kv_blocks(self, block: torch.Tensor):
        """Every rank's prefill block (source rank, (2, b, kv, n_src, d)), by the prefill strategy."""
        lengths = self.layout.lengths
        if self.prefill == "ring":
            return self.ring(block, lengths)
        longest = max(lengths)
        padded = torch.nn.functional.pad(block, (0, 0, 0, longest - block.shape[3]))
        return [(src, part[:, :, :, :n]) for src, (part, n) in
                enumerate(zip(self.comm.all_gather(padded), lengths, strict=True))]

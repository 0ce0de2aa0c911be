"""Run under torchrun with 4 gloo ranks: every tiny family, sharded over 2, 3 and 4 of them (process
subgroups, one launch), against the single-process model.

argv: OUT_JSON. For each config and prompt length (neither divisible by the rank count; the shorter
gives slices below the conv's halo and the window), each rank computes the single-process reference
itself, then: prefill logits at every position with ring and all-gather prefill, and greedy generation
with tree and ring decoding (tokens and per-step logits, the latter bitwise the same on every rank).
Rank 0 writes one record per check, with the worst value over the group's ranks."""

import json
import sys

import torch
import torch.distributed as dist

from hybridlm import HybridLM, ModelConfig
from hybridlm.config.presets import tiny_presets
from hybridlm.parallel import ContextParallel

NEW_TOKENS = 5


def configs() -> dict[str, ModelConfig]:
    """Every tiny family with a sequence mixer of its own (MoE runs in jamba-tiny), and attention with `w`."""
    skip = ("moe-tiny", "blackmamba-tiny")
    out = {name: ModelConfig.from_preset(name) for name in tiny_presets() if name not in skip}
    out["swa"] = ModelConfig(name="swa", d_model=32, layers="(m m w m)*2 a", vocab_size=64,
                             attention={"n_heads": 4, "n_kv_heads": 2, "window": 5},
                             mamba2={"d_state": 8, "headdim": 8, "chunk_size": 8})
    return out


def prefill_logits(model, ids, group, prefill: str) -> torch.Tensor:
    """The whole prompt's logits, each rank computing its slice's and all-gathering them."""
    cp = ContextParallel("tree", group=group, prefill=prefill)
    cache, local = cp.start(model, ids, ids.shape[1] + 1)
    logits = model(local, cache=cache).logits
    longest = max(cp.layout.lengths)
    padded = torch.nn.functional.pad(logits, (0, 0, 0, longest - logits.shape[1]))
    parts = [torch.empty_like(padded) for _ in range(cp.world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:, :n] for p, n in zip(parts, cp.layout.lengths, strict=True)], dim=1)


def worst(value: float, op, group) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=op, group=group)
    return t.item()


def check(world: int, group) -> list[dict]:
    records = []
    for name, cfg in configs().items():
        torch.manual_seed(0)
        model = HybridLM(cfg).eval()
        for length in (world + 1, 41):
            ids = torch.randint(0, cfg.vocab_size, (2, length), generator=torch.Generator().manual_seed(length))
            with torch.no_grad():
                ref_logits = model(ids).logits
            ref_ids, ref_scores = model.generate(ids, max_new_tokens=NEW_TOKENS, return_scores=True)
            base = {"world": world, "config": name, "length": length}
            for prefill in ("ring", "allgather"):
                with torch.no_grad():
                    diff = (prefill_logits(model, ids, group, prefill) - ref_logits).abs().max().item()
                records.append({**base, "check": f"prefill-{prefill}", "same_tokens": True,
                                "max_diff": worst(diff, dist.ReduceOp.MAX, group)})
            for mode in ("tree", "ring"):
                out, scores = model.generate(ids, max_new_tokens=NEW_TOKENS, return_scores=True,
                                             context_parallel=ContextParallel(mode, group=group))
                same = float(torch.equal(out, ref_ids))
                diff = (scores - ref_scores).abs().max().item()
                lo, hi = scores.clone(), scores.clone()  # every rank must hold the very same logits (sampling)
                dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=group)
                dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=group)
                records.append({**base, "check": f"decode-{mode}", "max_diff": worst(diff, dist.ReduceOp.MAX, group),
                                "same_tokens": bool(worst(same, dist.ReduceOp.MIN, group)),
                                "same_on_every_rank": torch.equal(lo, hi)})
    return records


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    records = []
    for world in (2, 3, 4):
        group = dist.new_group(list(range(world)))  # every rank takes part in creating it
        if dist.get_rank() < world:
            records += check(world, group)
        dist.barrier()
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(records, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

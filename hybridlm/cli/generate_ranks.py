"""`hybridlm generate` on one rank: in-process, under torchrun, or as one of the ranks `--nproc N` starts
(`python -m hybridlm.cli.generate_ranks`, see `hybridlm.parallel.launch`). With context parallelism every
rank loads the same model (a checkpoint, or random weights from the same seed) and runs
`model.generate(..., context_parallel=mode)`; rank 0 answers, with the collectives' payload bytes (the
largest over ranks)."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from hybridlm.cli.generate import load_model
from hybridlm.parallel.launch import join_group, under_torchrun, worker_main


def generate_on_rank(request: dict) -> dict | None:
    """The answer on rank 0 (or without ranks); None on the other ranks."""
    mode = request["context_parallel"]
    if mode is not None and (under_torchrun() or dist.is_initialized()):
        device = join_group()
    else:
        device = torch.device(request.get("device") or "cpu")
    if request["threads"]:
        torch.set_num_threads(request["threads"])
    model, origin = load_model(request["source"], request["seed"], request.get("dtype"), device)
    cp = None
    if mode is not None:
        from hybridlm.parallel import ContextParallel

        cp = ContextParallel(mode)
    start = time.perf_counter()
    out = model.generate(torch.tensor([request["prompt_ids"]], device=device), max_new_tokens=request["max_new_tokens"],
                         do_sample=request["sample"], temperature=request["temperature"], top_k=request["top_k"],
                         top_p=request["top_p"], seed=request["seed"], context_parallel=cp)
    param = next(model.parameters())
    answer = {"describe": model.config.describe(), "parameters": model.num_parameters(), "origin": origin,
              "placement": f"{str(param.dtype).removeprefix('torch.')} on {param.device}",
              "new_ids": out[0, len(request["prompt_ids"]):].tolist(), "elapsed_s": time.perf_counter() - start}
    if cp is not None:
        counts = cp.comm_bytes()
        if cp.world > 1:  # the largest over ranks (this reduction itself is not counted)
            t = torch.tensor(list(counts.values()), dtype=torch.float64, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            counts = dict(zip(counts, (int(v) for v in t.tolist()), strict=True))
        answer["comm_bytes"] = counts
    return answer if cp is None or cp.rank == 0 else None


if __name__ == "__main__":
    worker_main(generate_on_rank)

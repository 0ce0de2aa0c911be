"""The per-rank loop of `bench comms`; started by torchrun as `python -m hybridlm.bench.comms_worker`.

For each (op, size): warm up, then time each trial between a barrier and the op's completion.
Per trial, the time is the max across ranks (a collective is as slow as its slowest rank) and the
wrong-element count is the sum across ranks; a record reports the median/min/p99 of the former and
the worst trial of the latter.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from hybridlm.bench.comms import DTYPES, PROGRESS_MARK, CommsConfig, ProgressFn, resolve_backend
from hybridlm.bench.comms_math import TRANSFERS_PER_TRIAL, algbw_gbps, busbw_gbps, valid_bytes
from hybridlm.bench.comms_ops import build_case
from hybridlm.bench.report import Record, write_json
from hybridlm.bench.timing import Stats, time_trials


def _device(backend: str) -> torch.device:
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def run_rank(config: CommsConfig, progress: ProgressFn | None = None) -> list[Record]:
    """Benchmark every (op, size) in `config`; rank 0 gets the records, other ranks []."""
    backend = resolve_backend(config.backend)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend, timeout=timedelta(seconds=120))
    try:
        return _sweep(config, backend, progress)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _sweep(config: CommsConfig, backend: str, progress: ProgressFn | None) -> list[Record]:
    rank, n = dist.get_rank(), dist.get_world_size()
    device = _device(backend)
    dtype = DTYPES[config.dtype]
    barrier_kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
    records: list[Record] = []
    jobs = [(op, size) for op in config.ops for size in config.sizes]
    for done, (op, size) in enumerate(jobs, start=1):
        nbytes = valid_bytes(op, size, n, dtype.itemsize, strict=config.exact)
        if nbytes > 0:
            case = build_case(op, nbytes, dtype, device, rank, n, corrupt=rank == config.corrupt_rank)
            wrong: list[int] = []

            def setup(case=case) -> None:
                case.reset()
                dist.barrier(**barrier_kw)

            times = time_trials(
                case.run,
                warmup=config.warmup,
                trials=config.trials,
                device=device,
                setup=setup,
                after=lambda case=case, wrong=wrong: wrong.append(case.count_wrong()),
            )
            t = torch.tensor(times, dtype=torch.float64, device=device) / TRANSFERS_PER_TRIAL.get(op, 1)
            w = torch.tensor(wrong, dtype=torch.int64, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            dist.all_reduce(w, op=dist.ReduceOp.SUM)
            stats = Stats.of(t.cpu().numpy())
            records.append(
                {
                    "op": op,
                    "world_size": n,
                    "backend": backend,
                    "dtype": config.dtype,
                    "bytes": nbytes,
                    "count": nbytes // dtype.itemsize,
                    "time_s": stats.median,
                    "time_min_s": stats.min,
                    "time_p99_s": stats.p99,
                    "algbw_gbps": algbw_gbps(nbytes, stats.median),
                    "busbw_gbps": busbw_gbps(op, nbytes, stats.median, n),
                    "wrong": int(w.max().item()),
                    "trials": config.trials,
                }
            )
        if rank == 0 and progress is not None:
            progress(done, len(jobs), op, nbytes)
    return records if rank == 0 else []


def _print_progress(done: int, total: int, op: str, nbytes: int) -> None:
    print(PROGRESS_MARK + json.dumps([done, total, op, nbytes]), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="JSON file with a CommsConfig")
    parser.add_argument("--out", required=True, help="where rank 0 writes the records (JSON list)")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        config = CommsConfig.from_json(f.read())
    records = run_rank(config, _print_progress)
    if int(os.environ.get("RANK", 0)) == 0:
        write_json(args.out, records)


if __name__ == "__main__":
    main()

"""Context-parallel prefill: attention KV by ring passing (the default) against one all-gather.

    python benchmarks/bench_context_prefill.py [--nproc 4] [--length 8192] [--config zamba2-tiny]

Starts --nproc gloo ranks (torchrun); each prefills its slice of one random prompt with
`ContextParallel(prefill="ring")` and with `prefill="allgather"`, after one untimed run of each. Prints
per strategy the prefill time (slowest rank), the bytes a rank sends and receives (largest rank) and the
peak memory above what was in use before the cache (largest rank), the ratios all-gather / ring, the
single-process prefill time, and the largest difference between the two strategies' last logits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]


def rank_main(args) -> None:
    from hybridlm.bench import memory
    from hybridlm.config.resolve import resolve_config
    from hybridlm.model import HybridLM
    from hybridlm.parallel import ContextParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    memory.return_large_frees()
    torch.manual_seed(0)
    model = HybridLM(resolve_config(args.config)).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, args.length), generator=torch.Generator().manual_seed(0))
    results, last = {}, {}
    for strategy in ("ring", "allgather", "ring", "allgather"):  # the first round is the warm-up
        cp = ContextParallel("tree", prefill=strategy)
        memory.settle()
        before = memory.rss_bytes()
        out = {}

        def prefill(cp=cp, out=out):
            cache, local = cp.start(model, ids, args.length + 1)
            dist.barrier()
            start = time.perf_counter()
            with torch.no_grad():
                out["logits"] = model(local, cache=cache, logits_to_keep=1).logits[:, -1]
            out["time"] = time.perf_counter() - start

        peak = memory.peak_rss_above(before, prefill)
        values = torch.tensor([out["time"], cp.comm.sent, cp.comm.received, peak], dtype=torch.float64)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        results[strategy] = dict(zip(("time_s", "sent", "received", "peak_bytes"), values.tolist(), strict=True))
        last[strategy] = out["logits"]
    diff = (last["ring"] - last["allgather"]).abs().max().item()
    if dist.get_rank() == dist.get_world_size() - 1:
        start = time.perf_counter()
        with torch.no_grad():
            model(ids, logits_to_keep=1)
        print(json.dumps({"results": results, "single_s": time.perf_counter() - start, "max_logit_diff": diff}),
              flush=True)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=4)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--config", default="zamba2-tiny")
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank:
        return rank_main(args)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           __file__, "--rank", "--length", str(args.length), "--config", args.config]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    data = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    res = data["results"]
    print(f"prefill of {args.length} tokens of {args.config} on {args.nproc} gloo ranks (1 thread each)")
    print(f"{'strategy':>10} {'time s':>8} {'sent MiB':>9} {'received MiB':>13} {'peak MiB':>9}")
    for name, r in res.items():
        print(f"{name:>10} {r['time_s']:8.3f} {r['sent'] / 2**20:9.1f} {r['received'] / 2**20:13.1f} "
              f"{r['peak_bytes'] / 2**20:9.1f}")
    ring, gather = res["ring"], res["allgather"]
    print(f"all-gather / ring: time {gather['time_s'] / ring['time_s']:.2f}x, received "
          f"{gather['received'] / ring['received']:.2f}x, peak memory {gather['peak_bytes'] / ring['peak_bytes']:.2f}x")
    print(f"single process: {data['single_s']:.3f} s; ring vs all-gather last logits differ by "
          f"{data['max_logit_diff']:.1e}")


if __name__ == "__main__":
    main()

"""Decoding speed (greedy, batch 1) against CPU threads for models of several sizes: the measurement behind
`hybridlm generate`'s default `--threads` (`hybridlm.threads.default_threads`).

For each model, tokens/s of `model.generate` at 1, 2, 4, ... threads (up to the cores this process may use), best
of `--repeat` interleaved runs, and the ratio of the rule's choice to the fastest measured count. Random weights:
speed does not depend on the values.

    python benchmarks/bench_generate_threads.py [--models zamba2-tiny zamba2-20m mamba-130m] [--new 32]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from hybridlm import HybridLM
from hybridlm.config import ModelConfig
from hybridlm.threads import default_threads

DEFAULT_MODELS = ["zamba2-tiny", "transformer-tiny", "zamba2-20m", "mamba-130m", "zamba2-1.2b"]


def tokens_per_s(model: HybridLM, threads: int, prompt: int, new: int) -> float:
    torch.set_num_threads(threads)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt))
    model.generate(ids, max_new_tokens=2)  # warm up
    t0 = time.perf_counter()
    model.generate(ids, max_new_tokens=new)
    return new / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="Write the records here.")
    args = ap.parse_args()
    default = torch.get_num_threads()  # torch's own choice, before this script changes it
    cores = len(os.sched_getaffinity(0))
    counts = sorted(({1, 2, 4, 8, 16, 32, 64, cores} & set(range(1, cores + 1))) | {default})
    records = []
    print(f"{cores} cores; greedy decoding, batch 1, prompt {args.prompt}, {args.new} new tokens, best of "
          f"{args.repeat}")
    print(f"{'model':>14} {'params':>14} " + " ".join(f"{f't={t}':>8}" for t in counts) + "  best  rule  rule/best")
    for name in args.models:
        torch.manual_seed(0)
        model = HybridLM(ModelConfig.from_preset(name)).eval()
        n = model.num_parameters()
        best = dict.fromkeys(counts, 0.0)
        for _ in range(args.repeat):  # interleaved: background load hits every count alike
            for t in counts:
                best[t] = max(best[t], tokens_per_s(model, t, args.prompt, args.new))
        fastest = max(best, key=best.get)
        rule = default_threads(n) or default
        print(f"{name:>14} {n:>14,} " + " ".join(f"{best[t]:8.1f}" for t in counts)
              + f"  {fastest:>4}  {rule:>4}  {best[rule] / best[fastest]:9.2f}")
        records.append({"model": name, "params": n, "cores": cores, "tokens_per_s": best, "fastest": fastest,
                        "rule": rule})
        del model
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=2)


if __name__ == "__main__":
    main()

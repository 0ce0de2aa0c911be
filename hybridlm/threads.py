"""How many CPU threads decoding should use, by model size (measured: `benchmarks/bench_generate_threads.py`).

Greedy decoding at batch 1 is a chain of small matrix-vector products; below a size, the cost of waking and joining
threads exceeds the work they share, so one thread is fastest. Measured on this project's 2-core CPU (greedy, 32
new tokens after 16, best of 3, tokens/s at 1 and 2 threads):

| model            | parameters | 1 thread | 2 threads |
|------------------|-----------:|---------:|----------:|
| transformer-tiny |      0.25M |    1,916 |       139 |
| zamba2-tiny      |      0.43M |      702 |        13 |
| zamba2-20m       |        22M |     85.6 |       1.2 |
| mamba-130m       |       129M |     25.6 |       2.1 |

That machine was shared (load ~3 on 2 cores), where a second thread waits for a busy core at every product, so
these ratios are the worst case; the issue that asked for this default saw 112-165 tokens/s on one thread against
12-20 at torch's default for tiny models on a many-core machine. On a quiet machine zamba2-20m decoded 1.24x faster
on 2 threads than on 1 (README, "Speed"), so from 10M parameters the default stays torch's (one thread per physical
core); on a busy machine pass `--threads 1`.
"""

from __future__ import annotations

ONE_THREAD_BELOW = 10_000_000  # parameters


def default_threads(params: int) -> int | None:
    """The thread count decoding a model of `params` parameters runs fastest with: 1 for small models, None (torch's
    default) for the others."""
    return 1 if params < ONE_THREAD_BELOW else None

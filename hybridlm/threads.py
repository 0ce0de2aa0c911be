"""How many CPU threads decoding should use, by model size (measured: `benchmarks/bench_generate_threads.py`).

Greedy decoding at batch 1 is a chain of small matrix-vector products; below a size, the cost of waking and joining
threads exceeds the work they share, so one thread is fastest. Measured on this project's 2-core CPU (greedy, 32
new tokens after 16, best of 3): zamba2-tiny (0.4M parameters) 212 tokens/s on 1 thread against 14 on 2,
transformer-tiny (0.25M) 246 against 45; the issue that asked for this saw 112-165 against 12-20 on a many-core
machine. For zamba2-20m (22M), 2 threads decoded 1.24x faster than 1 on a quiet machine (README, "Speed"), so
models from 10M parameters keep torch's default (one thread per physical core).
"""

from __future__ import annotations

ONE_THREAD_BELOW = 10_000_000  # parameters


def default_threads(params: int) -> int | None:
    """The thread count decoding a model of `params` parameters runs fastest with: 1 for small models, None (torch's
    default) for the others."""
    return 1 if params < ONE_THREAD_BELOW else None

"""nccl-tests bandwidth arithmetic, written once (nccl-tests doc/PERFORMANCE.md).

S is the message size in bytes as nccl-tests counts it:
  all_reduce, broadcast, point-to-point: the size of each rank's buffer;
  all_gather: the full gathered output (each rank contributes S/n);
  reduce_scatter: the full input (each rank keeps S/n);
  all_to_all: each rank's whole send buffer (S/n to every rank).
algbw = S / t. busbw = algbw * factor(n), the factor that makes busbw comparable to the link speed
regardless of n: all_reduce 2(n-1)/n, all_gather / reduce_scatter / all_to_all (n-1)/n, others 1.
GB/s means 1e9 bytes per second, as in nccl-tests.
"""

from __future__ import annotations

from hybridlm.errors import HybridLMError

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast")
POINT_TO_POINT = ("pingpong", "p2p_uni", "p2p_bidir")
OPS = COLLECTIVES + POINT_TO_POINT

# Ops whose S is split into n equal chunks, one per rank.
CHUNKED = ("all_gather", "reduce_scatter", "all_to_all")

# pingpong times a round trip; its time_s is the one-way latency, half of it.
TRANSFERS_PER_TRIAL = {"pingpong": 2}


def check_op(op: str) -> None:
    if op not in OPS:
        raise HybridLMError(f"unknown op {op!r}; allowed: {', '.join(OPS)} (or 'all')")


def bus_factor(op: str, n: int) -> float:
    check_op(op)
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in CHUNKED:
        return (n - 1) / n
    return 1.0


def algbw_gbps(nbytes: int, time_s: float) -> float:
    return nbytes / time_s / 1e9


def busbw_gbps(op: str, nbytes: int, time_s: float, n: int) -> float:
    return algbw_gbps(nbytes, time_s) * bus_factor(op, n)


def buffer_numels(op: str, nbytes: int, n: int, itemsize: int) -> tuple[int, int]:
    """(input, output) element counts per rank for a message of `nbytes` (S above)."""
    count = nbytes // itemsize
    if op == "all_gather":
        return count // n, count
    if op == "reduce_scatter":
        return count, count // n
    return count, count


def valid_bytes(op: str, nbytes: int, n: int, itemsize: int, *, strict: bool) -> int:
    """`nbytes` if the op can move exactly that many bytes on n ranks.

    Otherwise: with strict (a size the user asked for) a HybridLMError; without (one step of a scan)
    the largest valid size below it, as nccl-tests does, or 0 if there is none.
    """
    if nbytes <= 0:
        raise HybridLMError(f"message size must be positive, got {nbytes} bytes")
    unit = itemsize * (n if op in CHUNKED else 1)
    if nbytes % unit == 0:
        return nbytes
    if strict:
        what = f"{itemsize}-byte elements x {n} ranks" if op in CHUNKED else f"{itemsize}-byte elements"
        raise HybridLMError(
            f"{op}: size {nbytes} bytes is not a multiple of {unit} ({what}); pick a multiple of {unit}"
        )
    return nbytes - nbytes % unit

"""`bench compare`: match the records of two runs and report how run B's times relate to run A's.

Works on any record type: two records match when all their fields agree except measurements
(times, bandwidths, TFLOP/s, wrong counts, trial counts) and the environment (backend, device,
dtype), so a CPU run can be compared with a GPU run of the same sweep.
"""

from __future__ import annotations

from hybridlm.bench.report import Record
from hybridlm.errors import HybridLMError

MEASURED = {
    "time_s", "time_min_s", "time_max_s", "time_p99_s", "algbw_gbps", "busbw_gbps",
    "tflops", "useful_tflops", "wrong", "trials", "warmup", "tokens_per_s", "mem_bytes",
}  # fmt: skip
ENVIRONMENT = {"backend", "device", "dtype"}
RATES = ("busbw_gbps", "tflops")  # the throughput shown beside the times, first one present


def record_key(rec: Record) -> tuple:
    return tuple(sorted((k, v) for k, v in rec.items() if k not in MEASURED | ENVIRONMENT))


def compare_records(a: list[Record], b: list[Record]) -> tuple[list[Record], int]:
    """One row per record present in both runs (in A's order), and how many records did not match.

    `speedup` = time A / time B: above 1 means B is faster.
    """
    by_key = {}
    for rec in b:
        by_key.setdefault(record_key(rec), rec)
    rows: list[Record] = []
    for ra in a:
        rb = by_key.get(record_key(ra))
        if rb is None or "time_s" not in ra or "time_s" not in rb:
            continue
        row = {k: v for k, v in ra.items() if k not in MEASURED | ENVIRONMENT}
        row.update(time_a_s=ra["time_s"], time_b_s=rb["time_s"], speedup=ra["time_s"] / rb["time_s"])
        rate = next((r for r in RATES if r in ra and r in rb), None)
        if rate is not None:
            row.update({f"{rate}_a": ra[rate], f"{rate}_b": rb[rate]})
        rows.append(row)
    if not rows:
        raise HybridLMError("no record of run A matches one of run B; compare two runs of the same sweep")
    return rows, len(a) + len(b) - 2 * len(rows)

"""`bench compare`: match the records of two runs and report how run B's times relate to run A's.

Works on any record type: two records match when all their fields agree except measurements
(times, bandwidths, TFLOP/s, wrong counts, trial counts), what follows from the model (FLOPs), the environment
(backend, device, dtype) and the run's settings (the config and its `--set` overrides), so a CPU run can be
compared with a GPU run of the same sweep, and `--set mlp.activation=gelu` with `--set mlp.activation=silu`.
Environment and settings that differ between the runs are named (`run_differences`).
"""

from __future__ import annotations

from hybridlm.bench.report import Record
from hybridlm.errors import HybridLMError

MEASURED = {
    "time_s", "time_min_s", "time_max_s", "time_p99_s", "algbw_gbps", "busbw_gbps",
    "tflops", "useful_tflops", "wrong", "trials", "warmup", "tokens_per_s", "mem_bytes",
}  # fmt: skip
ENVIRONMENT = {"backend", "device", "dtype"}
SETTINGS = {"config", "set"}  # how the run was configured (bench blocks --config, --set), not which point it measured
DERIVED = {"flops"}  # follows from the point and the settings
RATES = ("busbw_gbps", "tflops")  # the throughput shown beside the times, first one present
_NOT_KEY = MEASURED | ENVIRONMENT | SETTINGS | DERIVED


def record_key(rec: Record) -> tuple:
    return tuple(sorted((k, v) for k, v in rec.items() if k not in _NOT_KEY))


def run_differences(a: list[Record], b: list[Record]) -> dict[str, tuple[str, str]]:
    """Environment and settings fields whose values differ between the runs: {field: (A's values, B's values)}."""
    out = {}
    for key in sorted(ENVIRONMENT | SETTINGS):
        va = ", ".join(sorted({str(r.get(key, "")) for r in a}))
        vb = ", ".join(sorted({str(r.get(key, "")) for r in b}))
        if va != vb:
            out[key] = (va or "(none)", vb or "(none)")
    return out


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
        row = {k: v for k, v in ra.items() if k not in _NOT_KEY}
        row.update(time_a_s=ra["time_s"], time_b_s=rb["time_s"], speedup=ra["time_s"] / rb["time_s"])
        rate = next((r for r in RATES if r in ra and r in rb), None)
        if rate is not None:
            row.update({f"{rate}_a": ra[rate], f"{rate}_b": rb[rate]})
        rows.append(row)
    if not rows:
        raise HybridLMError("no record of run A matches one of run B; compare two runs of the same sweep")
    return rows, len(a) + len(b) - 2 * len(rows)

"""Partitioning (`hybridlm data partition`): split a dataset into N JSONL (optionally zstd) files, losing nothing.

Records are dealt round-robin in input order (record k goes to partition k mod N), so partitions are balanced by
count and the result is deterministic. Records keep all their fields; records without a text field are kept too
(partitioning does not need the text). Malformed input lines go to `OUTPUT/_rejects.jsonl` with file and line, and
the report (`OUTPUT/_report.json`; underscore names are skipped when the directory is read back as input) checks
that input records = sum of partition records and input lines = records + rejects. Partition files of an earlier run
into the same directory (another `-n`, `--zstd` or prefix) are removed, so the directory holds one dataset.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from hybridlm.data.errors import DataError
from hybridlm.data.io import JsonlWriter, RejectLog, expand_inputs, iter_records
from hybridlm.data.outputs import data_stage, write_json

_PARTITION = re.compile(r".+-\d{5}-of-\d{5}\.jsonl(\.zst)?")


@data_stage("partition", owned=("*-of-*.jsonl", "*-of-*.jsonl.zst", "_rejects.jsonl", "_report.json"))
def partition(
    inputs: list[str | Path],
    output_dir: str | Path,
    num_partitions: int,
    compress: bool = False,
    prefix: str = "part",
    progress=None,
) -> dict:
    if num_partitions < 1:
        raise DataError("--num-partitions must be >= 1")
    files = expand_inputs(inputs)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = ".jsonl.zst" if compress else ".jsonl"
    names = [f"{prefix}-{i:05d}-of-{num_partitions:05d}{ext}" for i in range(num_partitions)]
    rejects = RejectLog(out / "_rejects.jsonl")  # "_" names are never picked up as inputs
    k = 0
    with contextlib.ExitStack() as stack:
        stack.callback(rejects.close)
        writers = [stack.enter_context(JsonlWriter(out / n)) for n in names]
        for f in files:
            for _, rec in iter_records(f, None, rejects):
                writers[k % num_partitions].write(rec)
                k += 1
                if progress is not None and k % 1000 == 0:
                    progress(1000)
    # partitions of an earlier run (another -n, --zstd or prefix) would be read back as part of this dataset
    stale = [p for p in out.glob("*-of-*.jsonl*") if _PARTITION.fullmatch(p.name) and p.name not in names]
    for p in stale:
        p.unlink()
    report = {
        "input_lines": rejects.lines,
        "input_records": k,
        "partitions": [{"file": n, "records": w.count} for n, w in zip(names, writers, strict=True)],
        "rejected_records": rejects.count,
        "rejected_by_reason": rejects.by_reason,
        "reject_examples": rejects.examples,
        "empty_files": rejects.empty_files,
        "removed_stale_partitions": [p.name for p in stale],
    }
    assert sum(w.count for w in writers) == k and k + rejects.count == rejects.lines
    write_json(out / "_report.json", report)
    return report

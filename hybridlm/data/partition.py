"""Partitioning (`hybridlm data partition`): split a dataset into N JSONL (optionally zstd) files, losing nothing.

Records are dealt round-robin in input order (record k goes to partition k mod N), so partitions are balanced by
count and the result is deterministic. Records keep all their fields; records without a text field are kept too
(partitioning does not need the text). Malformed input lines go to `OUTPUT/_rejects.jsonl` with file and line, and
the report (`OUTPUT/_report.json`; underscore names are skipped when the directory is read back as input) checks
that input records = sum of partition records.
"""

from __future__ import annotations

import json
from pathlib import Path

from hybridlm.data.errors import DataError
from hybridlm.data.io import JsonlWriter, RejectLog, expand_inputs, iter_records


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
    writers = [JsonlWriter(out / n) for n in names]
    rejects = RejectLog(out / "_rejects.jsonl")  # "_" names are never picked up as inputs
    k = 0
    try:
        for f in files:
            for _, rec in iter_records(f, None, rejects):
                writers[k % num_partitions].write(rec)
                k += 1
                if progress is not None and k % 1000 == 0:
                    progress(1000)
    finally:
        rejects.close()
    for w in writers:
        w.close()
    report = {
        "input_records": k,
        "partitions": [{"file": n, "records": w.count} for n, w in zip(names, writers, strict=False)],
        "rejected_records": rejects.count,
        "rejected_by_reason": rejects.by_reason,
        "reject_examples": rejects.examples,
    }
    assert sum(w.count for w in writers) == k
    (out / "_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report

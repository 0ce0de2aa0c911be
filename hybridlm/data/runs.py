"""Sorted runs of `(key, value)` uint64 records on disk, merged back in key order with bounded memory.

The out-of-core dedup writes its LSH buckets (band key, document) and candidate pairs this way: a task sorts what
fits in its memory budget and writes it as a *run*; a later task merges any number of runs in one streaming pass,
holding one chunk per run. Files are raw little-endian records (16 bytes: key, value) in sections (one per band),
with a JSON sidecar giving each section's record count; reads use explicit file reads, not memory maps, so a task's
resident memory is its buffers whatever the size of the files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RECORD = np.dtype([("key", "<u8"), ("value", "<u8")])


def sort_records(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((values, keys))
    return keys[order], values[order]


def write_run(path: Path, sections: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Write sorted `(keys, values)` sections as one run file (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    counts = []
    with open(tmp, "wb") as fh:
        for keys, values in sections:
            rec = np.empty(len(keys), RECORD)
            rec["key"], rec["value"] = keys, values
            rec.tofile(fh)
            counts.append(len(keys))
    path.with_name(path.name + ".json").write_text(json.dumps({"sections": counts}))
    os.replace(tmp, path)


@dataclass
class RunSection:
    """One section of a run file; `add` is added to every value when read (e.g. a shard's first document)."""

    path: Path
    offset: int  # in records
    count: int
    add: int = 0


def run_counts(path: Path) -> list[int]:
    """Record count of each section of a run file."""
    return json.loads(path.with_name(path.name + ".json").read_text())["sections"]


def run_sections(path: Path, section: int, add: int = 0, counts: list[int] | None = None) -> RunSection:
    counts = counts if counts is not None else run_counts(path)
    return RunSection(path, int(sum(counts[:section])), int(counts[section]), add)


class _Cursor:
    """Reads one section chunk by chunk; the file is opened only while reading (thousands of runs stay within the
    open-file limit)."""

    def __init__(self, sec: RunSection, chunk: int):
        self.sec, self.chunk = sec, chunk
        self.pos = 0
        self.keys = self.values = np.empty(0, np.uint64)

    @property
    def exhausted(self) -> bool:  # nothing left in the file
        return self.pos >= self.sec.count

    def refill(self) -> None:
        if len(self.keys) or self.exhausted:
            return
        n = min(self.chunk, self.sec.count - self.pos)
        with open(self.sec.path, "rb") as fh:
            rec = np.fromfile(fh, RECORD, count=n, offset=(self.sec.offset + self.pos) * RECORD.itemsize)
        self.pos += n
        self.keys = rec["key"].copy()
        self.values = rec["value"] + np.uint64(self.sec.add)

    @property
    def done(self) -> bool:
        return self.exhausted and not len(self.keys)


def merge_runs(sections: list[RunSection], budget_records: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield blocks of records in `(key, value)` order from all sections; every key's records come in one block
    (a block is a set of whole buckets). About `budget_records` records are held at a time, split over the runs;
    a single key with more records than that is still held whole."""
    chunk = max(64, budget_records // max(1, 2 * len(sections)))
    cursors = [_Cursor(s, chunk) for s in sections if s.count]
    carry_k = carry_v = np.empty(0, np.uint64)
    while True:
        for c in cursors:
            c.refill()
        cursors = [c for c in cursors if not c.done]
        if not cursors:
            if len(carry_k):
                yield carry_k, carry_v
            return
        bound = min(c.keys[-1] for c in cursors)
        ks, vs = [carry_k], [carry_v]
        for c in cursors:
            cut = int(np.searchsorted(c.keys, bound, side="right"))
            ks.append(c.keys[:cut])
            vs.append(c.values[:cut])
            c.keys, c.values = c.keys[cut:], c.values[cut:]
        keys, values = sort_records(np.concatenate(ks), np.concatenate(vs))
        # records equal to `bound` may continue in a run's next chunk: hold them back unless every run is done
        if all(c.done for c in cursors):
            yield keys, values
            return
        cut = int(np.searchsorted(keys, bound, side="left"))
        if cut:
            yield keys[:cut], values[:cut]
        carry_k, carry_v = keys[cut:], values[cut:]

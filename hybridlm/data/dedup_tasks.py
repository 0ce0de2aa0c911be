"""The dedup stage as independent tasks over files on disk: out-of-core, resumable, and runnable by any executor.

A run is a `DedupPlan` (saved as `OUTPUT/.work/plan.json`) and five stages; task i of a stage reads only what
earlier stages wrote under `OUTPUT/.work/`, so hybridlm's process pool and datatrove's Local, Slurm and Ray
executors run the same tasks (`run_task(work, stage, i)`) and produce the same bytes.

1. `signatures` (one task per shard: an input file, or a range of its lines when there are fewer files than
   workers): MinHash signatures batch by batch; per band the (band key, document)
   records, sorted and spilled as runs whenever the buffer reaches the memory budget; the document line numbers;
   with `verify`, the shingle hashes. Signatures themselves are not kept.
2. `buckets` (one task per range of bands): merge every run's section of each band in key order, candidate pairs
   from each bucket (`clusters.bucket_pairs`), deduplicated, optionally verified by exact Jaccard, then reduced to
   a forest (each document of a component -> the component's first document).
3. `components` (one task): the union of the forests, the keep rule, per-file decisions and the cluster report.
4. `write` (one task per shard): kept and removed records (a split file's parts are joined by the report task).
5. `report` (one task): `report.json` and `cluster_sizes.png`.

Memory: every task holds fixed-size buffers (sorted runs, merge chunks, pair buffers, a cache of hash sets; see
SPILL_DOCS and below), shrunk to fit `memory` bytes when that is smaller, so its peak does not grow with the
input; only what scales with the *duplicates* is held whole: the components of the verified edges (about 40 bytes
per document that has a duplicate) and one LSH bucket at a time (16 bytes per member). A finished task leaves
`done/STAGE/INDEX.json` (its result) and is skipped when the run is resumed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from hybridlm.data.clusters import (
    apply_keep_rule,
    bucket_pairs,
    connected_components,
    jaccard_sorted,
    plot_histograms,
    size_histograms,
)
from hybridlm.data.engine import peak_rss_mb
from hybridlm.data.errors import DataError
from hybridlm.data.io import (  # _open_binary: the reader's own opener (plain, gzip, zstd)
    JSONL_SUFFIXES,
    InputFile,
    JsonlWriter,
    RejectLog,
    _open_binary,
    default_max_doc_bytes,
    iter_records,
)
from hybridlm.data.minhash import band_keys
from hybridlm.data.runs import merge_runs, run_counts, run_sections, sort_records, write_run

STAGES = ("signatures", "buckets", "components", "write", "report")
BATCH = 1024  # documents hashed together
# Buffer sizes: sorting and merging cost the same per record whatever the chunk, so chunks stay this size and
# `memory` is the cap they shrink to when it is smaller; a task's peak memory then does not grow with its input.
SPILL_DOCS = 1 << 16  # documents per sorted run of band records
MERGE_RECORDS = 1 << 18  # records held while merging one band's runs
PAIR_LIMIT = 1 << 20  # candidate pairs held before they are spilled as a sorted run
HASH_CACHE_BYTES = 16 << 20  # shingle-hash sets cached for verification
MAX_DOCUMENTS = 2**32  # a candidate pair is packed into one uint64


@dataclass
class DedupPlan:
    output_dir: str
    text_key: str
    config: dict
    files: list[dict]  # InputFile fields: path, source, relpath, key, out_relpath
    ranks: dict[str, int]
    band_ranges: list[list[int]]
    memory: int
    top_clusters: int = 10
    shards: list[dict] = field(default_factory=list)  # {"file": index, "lines": [lo, hi] or None}; one per file
    max_doc_bytes: int | None = None  # the reader's record size limit (None: the reader's default)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.shards:
            self.shards = [{"file": i, "lines": None} for i in range(len(self.files))]

    @property
    def work(self) -> Path:
        return Path(self.output_dir) / ".work"

    @cached_property
    def inputs(self) -> list[InputFile]:
        return [
            InputFile(Path(f["path"]), f["source"], f["relpath"], f.get("key", ""), f.get("out_relpath", ""))
            for f in self.files
        ]

    def shard_file(self, index: int) -> InputFile:
        return self.inputs[self.shards[index]["file"]]

    def split(self, file_index: int) -> bool:
        """Whether the file is read by more than one shard (its outputs are then written in parts, joined later)."""
        return sum(sh["file"] == file_index for sh in self.shards) > 1

    @cached_property
    def dedup_config(self):
        from hybridlm.data.dedup import DedupConfig

        return DedupConfig(**self.config)

    def num_tasks(self, stage: str) -> int:
        return {"signatures": len(self.shards), "buckets": len(self.band_ranges), "write": len(self.shards)}.get(
            stage, 1
        )

    def save(self) -> None:
        _write_json(self.work / "plan.json", asdict(self))

    @classmethod
    def load(cls, work: str | Path) -> DedupPlan:
        return cls(**json.loads((Path(work) / "plan.json").read_text()))


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def marker(work: Path, stage: str, index: int) -> Path:
    return Path(work) / "done" / stage / f"{index:05d}.json"


def stage_results(plan: DedupPlan, stage: str) -> list[dict]:
    out = []
    for i in range(plan.num_tasks(stage)):
        m = marker(plan.work, stage, i)
        if not m.exists():
            raise DataError(f"dedup stage '{stage}' task {i} has not finished ({m} missing); rerun the command")
        out.append(json.loads(m.read_text()))
    return out


def missing_tasks(plan: DedupPlan, stage: str) -> list[int]:
    return [i for i in range(plan.num_tasks(stage)) if not marker(plan.work, stage, i).exists()]


def clear_after(plan: DedupPlan, stage: str) -> None:
    """Forget the results of the stages after `stage` (they are recomputed from its new results)."""
    for later in STAGES[STAGES.index(stage) + 1 :]:
        shutil.rmtree(plan.work / "done" / later, ignore_errors=True)


def run_task(work: str | Path, stage: str, index: int) -> dict:
    """Run task `index` of `stage` unless it has finished before; returns its result (also kept in its marker)."""
    m = marker(Path(work), stage, index)
    if m.exists():
        return json.loads(m.read_text())
    plan = DedupPlan.load(work)
    t0 = time.perf_counter()
    result = _TASKS[stage](plan, index)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    _write_json(m, result)
    return result


def run_task_payload(payload: tuple[str, str, int]) -> dict:
    """`run_task` with one argument (for process pools)."""
    return run_task(*payload)


# --- locations ----------------------------------------------------------------------------------------------------


def _shard_dir(plan: DedupPlan, index: int) -> Path:
    return plan.work / "shards" / f"{index:05d}"


def _shard_starts(plan: DedupPlan) -> np.ndarray:
    """Global index of each shard's first document (documents are numbered in input order), and the total."""
    counts = [r["documents"] for r in stage_results(plan, "signatures")]
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])


class _DocIndex:
    """Maps global document numbers to (shard, local index), source rank, input file, line and id, reading line
    numbers from disk (memory-mapped, only the entries asked for)."""

    def __init__(self, plan: DedupPlan):
        self.plan = plan
        self.starts = _shard_starts(plan)
        n = len(plan.shards)
        self.rank_of_shard = np.array([plan.ranks[plan.shard_file(i).source] for i in range(n)] or [0], np.int64)
        self.file_of_shard = np.array([sh["file"] for sh in plan.shards] or [0], np.int64)

    def shard_of(self, docs: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, docs, side="right") - 1

    def file_of(self, docs: np.ndarray) -> np.ndarray:
        return self.file_of_shard[self.shard_of(docs)]

    def ranks(self, docs: np.ndarray) -> np.ndarray:
        return self.rank_of_shard[self.shard_of(docs)]

    def lines(self, docs: np.ndarray) -> np.ndarray:
        docs = np.asarray(docs, np.int64)
        out = np.empty(len(docs), np.int64)
        shards = self.shard_of(docs)
        for si in np.unique(shards).tolist():
            sel = np.flatnonzero(shards == si)
            local = docs[sel] - self.starts[si]
            mm = np.memmap(_shard_dir(self.plan, si) / "lines.bin", dtype="<i8", mode="r")
            out[sel] = mm[local]
            del mm
        return out

    def ids(self, docs: np.ndarray) -> list[str]:
        files, lines = self.file_of(np.asarray(docs, np.int64)), self.lines(docs)
        fs = self.plan.inputs
        return [f"{fs[f].source}/{fs[f].relpath}:{ln}" for f, ln in zip(files.tolist(), lines.tolist(), strict=True)]


# --- 1. signatures ------------------------------------------------------------------------------------------------


def _signatures(plan: DedupPlan, index: int) -> dict:
    cfg = plan.dedup_config
    f = plan.shard_file(index)
    line_range = plan.shards[index]["lines"]
    hasher = cfg.hasher()
    bands, rows = cfg.bands_rows()
    d = _shard_dir(plan, index)
    if d.exists():  # a crashed attempt: start the file over
        for p in d.iterdir():
            p.unlink()
    d.mkdir(parents=True, exist_ok=True)
    rejects = RejectLog(Path(plan.output_dir) / "rejects" / f"{f.key}{_part_name(plan, index)}.jsonl")
    # band records are buffered up to SPILL_DOCS documents, or fewer if that would take more than half the budget
    # (per document 8 bytes per band, twice while being concatenated, plus about 48 bytes of sorting temporaries)
    spill_docs = max(64, min(SPILL_DOCS, plan.memory // (2 * (16 * bands + 48))))
    buf_keys: list[np.ndarray] = []
    buf_docs: list[np.ndarray] = []
    state = {"buffered": 0, "runs": 0, "n": 0, "too_short": 0, "hashes": 0}
    lines_fh = open(d / "lines.bin", "wb")
    hashes_fh = open(d / "hashes.bin", "wb") if cfg.verify else None
    offsets_fh = open(d / "hash_offsets.bin", "wb") if cfg.verify else None
    if offsets_fh:
        np.zeros(1, "<i8").tofile(offsets_fh)

    def spill():
        keys = np.concatenate(buf_keys) if buf_keys else np.empty((0, bands), np.uint64)
        docs = np.concatenate(buf_docs) if buf_docs else np.empty(0, np.uint64)
        write_run(d / f"buckets-{state['runs']:04d}.bin", [sort_records(keys[:, j], docs) for j in range(bands)])
        state["runs"] += 1
        buf_keys.clear()
        buf_docs.clear()
        state["buffered"] = 0

    texts: list[str] = []
    lines: list[int] = []
    batch = min(BATCH, spill_docs)

    def flush():
        flat, counts = hasher.batch_hashes(texts)
        sig = hasher.signatures_from_flat(flat, counts)
        valid = np.flatnonzero(counts > 0)
        buf_keys.append(band_keys(sig[valid], bands, rows, seed=cfg.seed))
        buf_docs.append((valid + state["n"]).astype(np.uint64))
        np.asarray(lines, "<i8").tofile(lines_fh)
        if hashes_fh is not None:
            flat.astype("<u8").tofile(hashes_fh)
            (np.cumsum(counts) + state["hashes"]).astype("<i8").tofile(offsets_fh)
            state["hashes"] += len(flat)
        state["n"] += len(texts)
        state["too_short"] += int((counts == 0).sum())
        state["buffered"] += len(valid)
        texts.clear()
        lines.clear()
        if state["buffered"] >= spill_docs:
            spill()

    try:
        for line, rec in iter_records(f, plan.text_key, rejects, plan.max_doc_bytes, line_range):
            texts.append(rec[plan.text_key])
            lines.append(line)
            if len(texts) >= batch:
                flush()
        if texts:
            flush()
        if state["buffered"] or not state["runs"]:
            spill()
    finally:
        rejects.close()
        for fh in (lines_fh, hashes_fh, offsets_fh):
            if fh is not None:
                fh.close()
    st = f.path.stat()
    return {
        "file": str(f.path),
        "documents": state["n"],
        "too_short": state["too_short"],
        "runs": state["runs"],
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "rejects": rejects.summary(),
    }


# --- 2. buckets -> pairs -> (verify) -> forest ----------------------------------------------------------------------


class _HashSets:
    """Sorted unique shingle hashes of documents, read from the signature stage's files, with a bounded cache."""

    def __init__(self, plan: DedupPlan, index: _DocIndex, budget: int):
        self.plan, self.index, self.budget = plan, index, budget
        self.cache: dict[int, np.ndarray] = {}
        self.cached_bytes = 0
        self.files: dict[int, tuple] = {}

    def _handles(self, fi: int):
        if fi not in self.files:
            d = _shard_dir(self.plan, fi)
            self.files[fi] = (open(d / "hash_offsets.bin", "rb"), open(d / "hashes.bin", "rb"))
        return self.files[fi]

    def get(self, doc: int) -> np.ndarray:
        hit = self.cache.get(doc)
        if hit is not None:
            return hit
        fi = int(self.index.shard_of(np.array([doc]))[0])
        local = doc - int(self.index.starts[fi])
        off_fh, h_fh = self._handles(fi)
        off_fh.seek(8 * local)
        lo, hi = np.fromfile(off_fh, "<i8", count=2).tolist()
        h_fh.seek(8 * lo)
        s = np.unique(np.fromfile(h_fh, "<u8", count=hi - lo))
        if self.cached_bytes + s.nbytes > self.budget:
            self.cache.clear()
            self.cached_bytes = 0
        self.cache[doc] = s
        self.cached_bytes += s.nbytes
        return s

    def close(self) -> None:
        for handles in self.files.values():
            for fh in handles:
                fh.close()


def _pack(pairs: np.ndarray) -> np.ndarray:
    return (pairs[:, 0].astype(np.uint64) << np.uint64(32)) | pairs[:, 1].astype(np.uint64)


def _unpack(packed: np.ndarray) -> np.ndarray:
    return np.stack([(packed >> np.uint64(32)).astype(np.int64), (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)], 1)


def _buckets(plan: DedupPlan, index: int) -> dict:
    cfg = plan.dedup_config
    b0, b1 = plan.band_ranges[index]
    idx = _DocIndex(plan)
    out = plan.work / "bands" / f"{index:05d}"
    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob("pairs-*"):
        p.unlink()
    runs = [
        (fi, p, run_counts(p))
        for fi in range(len(plan.shards))
        for p in sorted(_shard_dir(plan, fi).glob("buckets-*.bin"))
    ]
    merge_records = max(256, min(MERGE_RECORDS, plan.memory // (4 * 16)))
    pair_limit = max(256, min(PAIR_LIMIT, plan.memory // (4 * 8 * 3)))
    pending: list[np.ndarray] = []
    held = 0
    spilled = 0
    for band in range(b0, b1):
        sections = [run_sections(p, band, int(idx.starts[fi]), counts) for fi, p, counts in runs]
        for keys, docs in merge_runs(sections, merge_records):
            src = idx.ranks(docs.astype(np.int64)) if cfg.cross_only else None
            pairs = bucket_pairs(keys, docs.astype(np.int64), src, cfg.max_all_pairs)
            if not len(pairs):
                continue
            pending.append(_pack(pairs))
            held += len(pairs)
            if held >= pair_limit:
                merged = np.unique(np.concatenate(pending))
                pending, held = [merged], len(merged)
                if held >= pair_limit // 2:  # still large after deduplication: spill a sorted run
                    write_run(out / f"pairs-{spilled:04d}.bin", [(merged, np.zeros(len(merged), np.uint64))])
                    spilled += 1
                    pending, held = [], 0
    final = np.unique(np.concatenate(pending)) if pending else np.empty(0, np.uint64)
    if spilled:
        write_run(out / f"pairs-{spilled:04d}.bin", [(final, np.zeros(len(final), np.uint64))])
        chunks = (
            np.unique(k)
            for k, _ in merge_runs([run_sections(p, 0) for p in sorted(out.glob("pairs-*.bin"))], merge_records)
        )
    else:
        chunks = iter([final])
    hash_sets = _HashSets(plan, idx, min(HASH_CACHE_BYTES, plan.memory // 4)) if cfg.verify else None
    edges: list[np.ndarray] = []
    n_candidates = 0
    try:
        for packed in chunks:
            pairs = _unpack(packed)
            n_candidates += len(pairs)
            if hash_sets is not None and len(pairs):
                ok = np.fromiter(
                    (jaccard_sorted(hash_sets.get(a), hash_sets.get(b)) >= cfg.threshold for a, b in pairs.tolist()),
                    dtype=bool,
                    count=len(pairs),
                )
                pairs = pairs[ok]
            edges.append(pairs)
    finally:
        if hash_sets is not None:
            hash_sets.close()
    edges_a = np.concatenate(edges) if edges else np.empty((0, 2), np.int64)
    forest = _forest(edges_a)
    np.save(out / "forest.npy", forest)
    for p in out.glob("pairs-*"):
        p.unlink()
    return {"bands": [b0, b1], "candidate_pairs": int(n_candidates), "accepted_pairs": int(len(edges_a))}


def _forest(edges: np.ndarray) -> np.ndarray:
    """`(m, 2)` rows (document, first document of its component) for every non-first document touched by `edges`:
    the same components with at most one row per document."""
    if not len(edges):
        return np.empty((0, 2), np.int64)
    nodes, inv = np.unique(edges, return_inverse=True)
    labels = connected_components(len(nodes), inv.reshape(-1, 2))
    child = np.flatnonzero(labels != np.arange(len(nodes)))
    return np.stack([nodes[child], nodes[labels[child]]], axis=1)


# --- 3. components --------------------------------------------------------------------------------------------------


def _components(plan: DedupPlan, index: int) -> dict:
    cfg = plan.dedup_config
    idx = _DocIndex(plan)
    forests = [np.load(plan.work / "bands" / f"{i:05d}" / "forest.npy") for i in range(len(plan.band_ranges))]
    edges = np.concatenate(forests) if forests else np.empty((0, 2), np.int64)
    nodes, inv = np.unique(edges, return_inverse=True)
    del forests, edges
    labels = connected_components(len(nodes), inv.reshape(-1, 2))  # compact index of each cluster's first member
    ranks = idx.ranks(nodes)
    keep, kept_for = apply_keep_rule(labels, ranks, cfg.cross_only)
    removed = np.flatnonzero(~keep)  # ascending, so grouped by shard
    kept_docs = nodes[kept_for[removed]]
    kept_files, kept_lines = idx.file_of(kept_docs), idx.lines(kept_docs)
    bounds = np.searchsorted(idx.shard_of(nodes[removed]), np.arange(len(plan.shards) + 1))
    dec = plan.work / "decisions"
    dec.mkdir(parents=True, exist_ok=True)
    for fi in range(len(plan.shards)):
        part = slice(bounds[fi], bounds[fi + 1])
        sel = removed[part]
        np.savez(
            dec / f"{fi:05d}.npz",
            local=nodes[sel] - idx.starts[fi],
            cluster=nodes[labels[sel]],
            kept_file=kept_files[part],
            kept_line=kept_lines[part],
        )
    # the cluster report: sizes per source, the largest clusters with up to 3 example members
    names = sorted(plan.ranks, key=plan.ranks.get)
    hist = size_histograms(labels, ranks, names)
    uniq, counts = np.unique(labels, return_counts=True)
    top = uniq[np.argsort(-counts, kind="stable")][: plan.top_clusters]
    largest = []
    for c in top.tolist():
        members = np.flatnonzero(labels == c)
        first3 = nodes[members[:3]]
        keeper = nodes[kept_for[c]]
        largest.append(
            {
                "cluster_id": int(nodes[c]),
                "size": int(len(members)),
                "kept_id": idx.ids(np.array([keeper]))[0],
                "sources": {s: int(k) for s in names if (k := (ranks[members] == plan.ranks[s]).sum())},
                "examples": [
                    {"doc": int(g), "id": i, "kept": bool(keep[np.searchsorted(nodes, g)])}
                    for g, i in zip(first3.tolist(), idx.ids(first3), strict=True)
                ],
            }
        )
    result = {
        "clusters": int(len(uniq)),
        "documents_in_clusters": int(len(nodes)),
        "removed_documents": int(len(removed)),
        "histogram": {k: {str(s): c for s, c in v.items()} for k, v in hist.items()},
        "largest_clusters": largest,
        "removed_per_source": {s: int((ranks[removed] == plan.ranks[s]).sum()) for s in names},
    }
    return result


# --- 4. write -------------------------------------------------------------------------------------------------------


def _write(plan: DedupPlan, index: int) -> dict:
    f = plan.shard_file(index)
    out = Path(plan.output_dir)
    if plan.split(plan.shards[index]["file"]):  # written in parts, joined by the report task
        kept_path, removed_path = (plan.work / "parts" / f"{index:05d}" / _part_file(f, k) for k in ("kept", "removed"))
    else:
        kept_path, removed_path = out / "kept" / f.out_relpath, out / "removed" / f.out_relpath
    d = np.load(plan.work / "decisions" / f"{index:05d}.npz")
    fs = plan.inputs
    removed_local, cluster, kept_file, kept_line = d["local"], d["cluster"], d["kept_file"], d["kept_line"]
    start = int(_shard_starts(plan)[index])
    wanted = {
        e["doc"] - start
        for c in stage_results(plan, "components")[0]["largest_clusters"]
        for e in c["examples"]
        if 0 <= e["doc"] - start
    }
    examples: dict[str, str] = {}
    documents = stage_results(plan, "signatures")[index]["documents"]
    nxt = 0  # next entry of removed_local (ascending) to meet
    total = 0
    with JsonlWriter(kept_path) as kept_w, JsonlWriter(removed_path) as rem_w:
        for k, raw, rec in _shard_records(plan, index):
            if k in wanted or (nxt < len(removed_local) and removed_local[nxt] == k):
                rec = rec if rec is not None else json.loads(raw)
            if k in wanted:
                examples[str(start + k)] = rec[plan.text_key][:400]
            if nxt < len(removed_local) and removed_local[nxt] == k:
                kf = int(kept_file[nxt])
                rec["dedup_cluster_id"] = int(cluster[nxt])
                rec["dedup_kept_id"] = f"{fs[kf].source}/{fs[kf].relpath}:{int(kept_line[nxt])}"
                rem_w.write(rec)
                nxt += 1
            elif raw is not None:
                kept_w.write_raw(raw)  # a JSONL record stays byte for byte as it was
            else:
                kept_w.write(rec)
            total = k + 1
    if total != documents:
        raise _changed(f)
    return {
        "file": str(f.path),
        "input": total,
        "kept": total - len(removed_local),
        "removed": len(removed_local),
        "examples": examples,
    }


def _changed(f: InputFile) -> DataError:
    return DataError(f"{f.path} changed since its signatures were computed; rerun the command to start over")


def _shard_records(plan: DedupPlan, index: int):
    """`(k, raw line or None, record or None)` for the k-th good record of a shard, the records the signature task
    read (their line numbers are in `lines.bin`). A JSONL input is read line by line without decoding: the
    signature task validated exactly these lines. Other formats are read again with `iter_records`."""
    f = plan.shard_file(index)
    sig = stage_results(plan, "signatures")[index]
    st = f.path.stat()
    if (st.st_size, st.st_mtime_ns) != (sig["size"], sig["mtime_ns"]):
        raise _changed(f)
    expected = _read_lines(_shard_dir(plan, index) / "lines.bin")
    if not f.path.name.endswith(JSONL_SUFFIXES):
        for k, (line, rec) in enumerate(iter_records(f, plan.text_key, RejectLog(), plan.max_doc_bytes)):
            if next(expected, None) != line:
                raise _changed(f)
            yield k, None, rec
        return
    limit = default_max_doc_bytes() if plan.max_doc_bytes is None else plan.max_doc_bytes
    want = next(expected, None)
    i = k = 0
    with _open_binary(f.path) as fh:
        while want is not None:
            raw = fh.readline(limit + 1) if limit else fh.readline()
            if not raw:
                raise _changed(f)
            i += 1
            if limit and len(raw) > limit and not (len(raw) == limit + 1 and raw.endswith(b"\n")):
                while not raw.endswith(b"\n"):  # an over-long line (rejected before): skip it unread
                    raw = fh.readline(1 << 20)
                    if not raw:
                        break
                if i == want:
                    raise _changed(f)
                continue
            if i < want:
                continue
            yield k, raw, None
            k += 1
            want = next(expected, None)


def _read_lines(path: Path):
    with open(path, "rb") as fh:
        while len(chunk := np.fromfile(fh, "<i8", count=65536)):
            yield from chunk.tolist()


def _part_file(f: InputFile, kind: str) -> str:
    """A part of a split file's output, compressed like the final output (gzip members and zstd frames concatenate
    into one valid stream)."""
    return kind + ".jsonl" + next((s for s in (".gz", ".zst") if f.out_relpath.endswith(s)), "")


# --- 5. report ------------------------------------------------------------------------------------------------------


def _report(plan: DedupPlan, index: int) -> dict:
    cfg = plan.dedup_config
    out = Path(plan.output_dir)
    sig = stage_results(plan, "signatures")
    bands = stage_results(plan, "buckets")
    comp = stage_results(plan, "components")[0]
    wr = stage_results(plan, "write")
    names = sorted(plan.ranks, key=plan.ranks.get)
    per_source = {s: {"input": 0, "kept": 0, "removed": 0} for s in names}
    for i, r in enumerate(wr):
        for k in ("input", "kept", "removed"):
            per_source[plan.shard_file(i).source][k] += r[k]
    _join_parts(plan)
    texts = {int(g): t for r in wr for g, t in r["examples"].items()}
    largest = [
        {**c, "examples": [{"id": e["id"], "kept": e["kept"], "text": texts.get(e["doc"], "")} for e in c["examples"]]}
        for c in comp["largest_clusters"]
    ]
    hist = {k: {int(s): c for s, c in v.items()} for k, v in comp["histogram"].items()}
    png = plot_histograms(hist, out / "cluster_sizes.png")
    rejects = [r["rejects"] for r in sig]
    b, r = cfg.bands_rows()
    n_in = sum(x["input"] for x in wr)
    n_removed = sum(x["removed"] for x in wr)
    report = {
        "input_documents": n_in,
        "kept_documents": n_in - n_removed,
        "removed_documents": n_removed,
        "clusters": comp["clusters"],
        "documents_in_clusters": comp["documents_in_clusters"],
        "too_short_documents": sum(x["too_short"] for x in sig),
        "rejected_records": sum(x["rejected"] for x in rejects),
        "reject_examples": [e for x in rejects for e in x["examples"]][:20],
        "empty_files": [e for x in rejects for e in x.get("empty_files", [])],
        "per_source": per_source,
        "cluster_size_histogram": comp["histogram"],
        "cluster_size_plot": png.name if png else None,
        "largest_clusters": largest,
        "params": {**cfg.as_dict(), "bands": b, "rows": r, "rank": names},
        "execution": {
            "memory_budget_mb": round(plan.memory / 2**20, 1),
            "band_tasks": len(plan.band_ranges),
            # summed over band tasks: a pair that two band ranges both find counts twice
            "candidate_pairs": sum(x["candidate_pairs"] for x in bands),
            "accepted_pairs": sum(x["accepted_pairs"] for x in bands),
            "seconds": {
                s: round(sum(x["seconds"] for x in r), 3)
                for s, r in (("signatures", sig), ("buckets", bands), ("components", [comp]), ("write", wr))
            },
            "peak_rss_mb": {
                "signatures": max((x["peak_rss_mb"] for x in sig), default=0.0),
                "buckets": max((x["peak_rss_mb"] for x in bands), default=0.0),
                "components": comp["peak_rss_mb"],
                "write": max((x["peak_rss_mb"] for x in wr), default=0.0),
            },
            **plan.extra,
        },
    }
    if report["kept_documents"] + report["removed_documents"] != report["input_documents"]:
        raise AssertionError("dedup report does not add up")
    tmp = out / ".report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, out / "report.json")
    return {"report": str(out / "report.json")}


def _part_name(plan: DedupPlan, shard: int) -> str:
    lines = plan.shards[shard]["lines"]
    return f".lines-{lines[0]}-{lines[1]}" if lines else ""


def _join_parts(plan: DedupPlan) -> None:
    """Concatenate, in order, the kept/removed parts of every file that was read by several shards."""
    out = Path(plan.output_dir)
    for fi, f in enumerate(plan.inputs):
        parts = [i for i, sh in enumerate(plan.shards) if sh["file"] == fi]
        if len(parts) < 2:
            continue
        pieces = [out / "rejects" / f"{f.key}{_part_name(plan, i)}.jsonl" for i in parts]
        if any(p.exists() for p in pieces):  # one rejects file per input, as for an unsplit file
            dest = out / "rejects" / f"{f.key}.jsonl"
            tmp = dest.with_name(dest.name + ".tmp")
            with open(tmp, "wb") as fo:
                for p in pieces:
                    if p.exists():
                        with open(p, "rb") as fp:
                            shutil.copyfileobj(fp, fo)
            os.replace(tmp, dest)
            for p in pieces:
                p.unlink(missing_ok=True)
        for kind in ("kept", "removed"):
            dest = out / kind / f.out_relpath
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            with open(tmp, "wb") as fo:
                for i in parts:
                    with open(plan.work / "parts" / f"{i:05d}" / _part_file(f, kind), "rb") as fi_:
                        shutil.copyfileobj(fi_, fo, 16 << 20)
            os.replace(tmp, dest)


_TASKS = {
    "signatures": _signatures,
    "buckets": _buckets,
    "components": _components,
    "write": _write,
    "report": _report,
}

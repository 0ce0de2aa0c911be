"""MinHash-LSH near-deduplication within and across datasets (the `dedup` stage).

Stages (each restartable; 1 and 3 run one shard per input file over all cores):
1. signatures: per file, MinHash signatures (and, with `verify`, the sorted shingle-hash sets) -> `.work/sig/`.
2. clusters: band keys -> candidate pairs -> optional exact-Jaccard check -> connected components -> keep rule.
3. write: per file, kept records to `OUTPUT/kept/`, removed ones (with `dedup_cluster_id`, `dedup_kept_id`) to
   `OUTPUT/removed/`; then `OUTPUT/report.json` and `OUTPUT/cluster_sizes.png`.

A document is identified as `SOURCE/RELPATH:LINE`; a source is one input argument (file or directory). The keep
rule is in `hybridlm.data.clusters.apply_keep_rule`: the highest-ranked source wins (`rank`, default the order of
the inputs), ties go to the earliest document in input order.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hybridlm.data.clusters import (
    apply_keep_rule,
    candidate_pairs,
    connected_components,
    jaccard_sorted,
    plot_histograms,
    size_histograms,
)
from hybridlm.data.engine import run_shards
from hybridlm.data.errors import DataError
from hybridlm.data.io import InputFile, JsonlWriter, RejectLog, check_text_field, expand_inputs, iter_records
from hybridlm.data.minhash import MinHasher, band_keys, choose_bands_rows
from hybridlm.data.outputs import DEDUP_OUTPUTS, data_stage


@dataclass
class DedupConfig:
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 13
    shingle: str = "word"
    bands: int | None = None
    rows: int | None = None
    verify: bool = False
    cross_only: bool = False
    seed: int = 0
    max_all_pairs: int = 32

    def __post_init__(self):
        if self.shingle not in ("word", "char"):
            raise DataError(f"--shingle must be 'word' or 'char', not {self.shingle!r}")
        if not 0.0 < self.threshold < 1.0:
            raise DataError(f"--threshold must be in (0, 1), got {self.threshold}")
        if self.ngram < 1 or self.num_perm < 1:
            raise DataError("--ngram and --num-perm must be >= 1")
        b, r = self.bands_rows()
        if b * r > self.num_perm:
            raise DataError(f"--bands x --rows = {b}x{r} = {b * r} exceeds --num-perm {self.num_perm}")

    def hasher(self) -> MinHasher:
        return MinHasher(self.num_perm, self.ngram, self.shingle, self.seed)

    def bands_rows(self) -> tuple[int, int]:
        """Explicit bands/rows, or the pair that best separates `threshold`. With `verify`, false positives only
        cost a check, so the choice leans to recall (false negatives weigh 19x more)."""
        if self.bands and self.rows:
            return self.bands, self.rows
        if self.bands:
            return self.bands, max(1, self.num_perm // self.bands)
        if self.rows:
            return max(1, self.num_perm // self.rows), self.rows
        weights = (0.05, 0.95) if self.verify else (0.5, 0.5)
        return choose_bands_rows(self.threshold, self.num_perm, *weights)

    def signature_params(self) -> dict:
        return {
            "num_perm": self.num_perm,
            "ngram": self.ngram,
            "shingle": self.shingle,
            "seed": self.seed,
            "verify": self.verify,
        }


@dataclass
class ClusterResult:
    labels: np.ndarray  # smallest member index of each document's cluster (itself when alone)
    keep: np.ndarray
    kept_for: np.ndarray
    candidate_pairs: int
    accepted_pairs: int
    bands: int
    rows: int
    edges: np.ndarray


def find_clusters(
    sig: np.ndarray,
    n_shingles: np.ndarray,
    source_rank: np.ndarray,
    config: DedupConfig,
    hashes: list[np.ndarray] | None = None,
) -> ClusterResult:
    """Cluster documents from their signatures (the in-memory core shared by the CLI, datatrove and benchmarks).

    `source_rank[i]` is the rank of document i's source (0 = highest). With `config.verify`, `hashes[i]` must be
    document i's sorted unique shingle hashes; a candidate pair is an edge only if its exact Jaccard reaches the
    threshold. Without it, every candidate pair is an edge.
    """
    b, r = config.bands_rows()
    keys = band_keys(sig, b, r, seed=config.seed)
    valid = n_shingles > 0  # documents without any shingle are never anyone's duplicate
    src = source_rank if config.cross_only else None
    pairs = candidate_pairs(keys, valid, src, config.max_all_pairs)
    if config.verify:
        if hashes is None:
            raise ValueError("verify needs the shingle hashes")
        ok = np.array(
            [jaccard_sorted(hashes[i], hashes[j]) >= config.threshold for i, j in pairs.tolist()], bool
        )
        edges = pairs[ok] if len(pairs) else pairs
    else:
        edges = pairs
    labels = connected_components(len(sig), edges)
    keep, kept_for = apply_keep_rule(labels, source_rank, config.cross_only)
    return ClusterResult(labels, keep, kept_for, len(pairs), len(edges), b, r, edges)


def dedup_texts(texts: list[str], source_rank=None, config: DedupConfig | None = None) -> ClusterResult:
    """Deduplicate an in-memory list of texts (all from one source unless `source_rank` says otherwise)."""
    config = config or DedupConfig()
    h = config.hasher()
    hashes = [h.shingle_hashes(t) for t in texts]
    sig = h.signatures_from_hashes(hashes)
    n_sh = np.array([len(x) for x in hashes], dtype=np.int64)
    ranks = np.zeros(len(texts), np.int64) if source_rank is None else np.asarray(source_rank, np.int64)
    sets = [np.unique(x) for x in hashes] if config.verify else None
    return find_clusters(sig, n_sh, ranks, config, sets)


# --- stage 1: signatures ------------------------------------------------------------------------------------------


def _signature_shard(payload: dict) -> dict:
    f: InputFile = payload["file"]
    work = Path(payload["work"])
    config: DedupConfig = payload["config"]
    hasher = config.hasher()
    rejects = RejectLog(Path(payload["output_dir"]) / "rejects" / f"{f.key}.jsonl")
    lines, sigs, nsh, flat, lens = [], [], [], [], []
    batch: list[str] = []

    def flush():
        hs = [hasher.shingle_hashes(t) for t in batch]
        sigs.append(hasher.signatures_from_hashes(hs))
        nsh.extend(len(x) for x in hs)
        if config.verify:
            for x in hs:
                u = np.unique(x)
                flat.append(u)
                lens.append(len(u))
        batch.clear()

    try:
        for line, rec in iter_records(f, payload["text_key"], rejects):
            lines.append(line)
            batch.append(rec[payload["text_key"]])
            if len(batch) >= 2048:
                flush()
        if batch:
            flush()
    finally:
        rejects.close()
    sig = np.concatenate(sigs) if sigs else np.empty((0, config.num_perm), np.uint32)
    arrays = {"sig": sig, "lines": np.array(lines, np.int64), "n_shingles": np.array(nsh, np.int64)}
    if config.verify:
        arrays["hashes"] = np.concatenate(flat) if flat else np.empty(0, np.uint64)
        arrays["hash_lens"] = np.array(lens, np.int64)
    path = work / "sig" / f"{f.key}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return {"file": str(f.path), "documents": len(lines), "rejects": rejects.summary()}


# --- stage 3: write -----------------------------------------------------------------------------------------------


def _write_shard(payload: dict) -> dict:
    f: InputFile = payload["file"]
    out = Path(payload["output_dir"])
    d = np.load(payload["decisions"])
    lo, hi = payload["range"]
    keep, labels = d["keep"][lo:hi], d["labels"][lo:hi]
    examples_wanted = payload["examples"]
    examples = {}
    text_key = payload["text_key"]
    n = 0
    with (
        JsonlWriter(out / "kept" / f.out_relpath) as kept_w,
        JsonlWriter(out / "removed" / f.out_relpath) as rem_w,
    ):
        for k, (_line, rec) in enumerate(iter_records(f, text_key, RejectLog())):
            if k >= hi - lo:
                raise DataError(
                    f"{f.path} changed since its signatures were computed; rerun with a fresh output"
                )
            g = lo + k
            if str(g) in examples_wanted:
                examples[str(g)] = rec[text_key][:400]
            if keep[k]:
                kept_w.write(rec)
            else:
                rec["dedup_cluster_id"] = int(labels[k])
                rec["dedup_kept_id"] = payload["kept_ids"][k]
                rem_w.write(rec)
            n += 1
    if n != hi - lo:
        raise DataError(f"{f.path} changed since its signatures were computed; rerun with a fresh output")
    return {
        "file": str(f.path),
        "input": n,
        "kept": int(keep.sum()),
        "removed": int((~keep).sum()),
        "examples": examples,
    }


# --- the stage ----------------------------------------------------------------------------------------------------


def resolve_ranks(files: list[InputFile], rank: list[str] | None) -> dict[str, int]:
    sources = list(dict.fromkeys(f.source for f in files))
    rank = [r for part in (rank or []) for r in part.split(",") if r]
    unknown = [r for r in rank if r not in sources]
    if unknown:
        raise DataError(f"--rank names unknown source(s) {unknown}; sources are {sources}")
    ordered = rank + [s for s in sources if s not in rank]
    return {s: i for i, s in enumerate(ordered)}


@data_stage("dedup", owned=DEDUP_OUTPUTS, mirror=("kept", "removed"), rejects="rejects")
def run_dedup(
    inputs: list[str | Path],
    output_dir: str | Path,
    text_key: str = "text",
    config: DedupConfig | None = None,
    rank: list[str] | None = None,
    workers: int | None = None,
    top_clusters: int = 10,
    quiet: bool = True,
) -> dict:
    """Deduplicate `inputs` into `OUTPUT/kept/`, `OUTPUT/removed/`, `OUTPUT/report.json`; returns the report."""
    config = config or DedupConfig()
    out = Path(output_dir)
    files = expand_inputs(inputs)
    check_text_field(files, text_key)
    ranks = resolve_ranks(files, rank)
    work = out / ".work"
    params = {**config.signature_params(), "text_key": text_key, "files": [str(f.path) for f in files]}
    params_path = work / "params.json"
    if params_path.exists() and json.loads(params_path.read_text()) != params:
        shutil.rmtree(work)  # state from other settings: signatures must be recomputed
    work.mkdir(parents=True, exist_ok=True)
    params_path.write_text(json.dumps(params))

    # 1. signatures
    shards = [
        (
            f.key,
            {"file": f, "work": str(work), "output_dir": str(out), "text_key": text_key, "config": config},
        )
        for f in files
    ]
    sig_res = run_shards(_signature_shard, shards, work / "state_sig", workers, "minhash", quiet)

    # 2. clusters
    sigs, nsh, src, lines, hashes, file_of = [], [], [], [], [], []
    for fi, f in enumerate(files):
        d = np.load(work / "sig" / f"{f.key}.npz")
        sigs.append(d["sig"])
        nsh.append(d["n_shingles"])
        lines.append(d["lines"])
        src.append(np.full(len(d["lines"]), ranks[f.source], np.int64))
        file_of.append(np.full(len(d["lines"]), fi, np.int64))
        if config.verify:
            hashes.extend(
                np.split(d["hashes"], np.cumsum(d["hash_lens"])[:-1]) if len(d["hash_lens"]) else []
            )
    sig = np.concatenate(sigs)
    n_sh, source_rank = np.concatenate(nsh), np.concatenate(src)
    line_no, file_idx = np.concatenate(lines), np.concatenate(file_of)
    res = find_clusters(sig, n_sh, source_rank, config, hashes if config.verify else None)
    np.savez(work / "decisions.npz", keep=res.keep, labels=res.labels, kept_for=res.kept_for)

    def doc_id(g: int) -> str:
        f = files[file_idx[g]]
        return f"{f.source}/{f.relpath}:{line_no[g]}"

    # largest clusters, for the report's examples
    uniq, counts = np.unique(res.labels, return_counts=True)
    big = uniq[np.argsort(-counts, kind="stable")][:top_clusters]
    big = [c for c in big.tolist() if counts[np.searchsorted(uniq, c)] >= 2]
    wanted: dict[int, list[int]] = {c: np.flatnonzero(res.labels == c)[:3].tolist() for c in big}
    want_set = {g for v in wanted.values() for g in v}

    # 3. write
    bounds = np.concatenate([[0], np.cumsum([len(x) for x in lines])])
    shards = []
    for fi, f in enumerate(files):
        lo, hi = int(bounds[fi]), int(bounds[fi + 1])
        removed_here = np.flatnonzero(~res.keep[lo:hi])
        kept_ids = {int(k): doc_id(int(res.kept_for[lo + k])) for k in removed_here}
        payload = {
            "file": f,
            "output_dir": str(out),
            "decisions": str(work / "decisions.npz"),
            "range": (lo, hi),
            "kept_ids": kept_ids,
            "text_key": text_key,
            "examples": {str(g): True for g in want_set if lo <= g < hi},
        }
        shards.append((f.key, payload))
    shutil.rmtree(work / "state_write", ignore_errors=True)  # decisions may have changed: always rewrite
    wr = run_shards(_write_shard, shards, work / "state_write", workers, "write", quiet)
    texts = {int(g): t for r in wr.values() for g, t in r["examples"].items()}

    # report
    names = sorted(ranks, key=ranks.get)
    sizes = dict(zip(uniq.tolist(), counts.tolist(), strict=False))
    hist = size_histograms(res.labels, source_rank, names)
    png = plot_histograms(hist, out / "cluster_sizes.png")
    per_source = {}
    for s in names:
        m = source_rank == ranks[s]
        per_source[s] = {
            "input": int(m.sum()),
            "kept": int((m & res.keep).sum()),
            "removed": int((m & ~res.keep).sum()),
        }
    rejects = [r["rejects"] for r in sig_res.values()]
    report = {
        "input_documents": int(len(sig)),
        "kept_documents": int(res.keep.sum()),
        "removed_documents": int((~res.keep).sum()),
        "clusters": int(sum(1 for c in sizes.values() if c >= 2)),
        "documents_in_clusters": int(sum(c for c in sizes.values() if c >= 2)),
        "too_short_documents": int((n_sh == 0).sum()),
        "candidate_pairs": res.candidate_pairs,
        "accepted_pairs": res.accepted_pairs,
        "rejected_records": sum(r["rejected"] for r in rejects),
        "reject_examples": [e for r in rejects for e in r["examples"]][:20],
        "per_source": per_source,
        "cluster_size_histogram": {k: {str(s): c for s, c in v.items()} for k, v in hist.items()},
        "cluster_size_plot": png.name if png else None,
        "largest_clusters": [
            {
                "cluster_id": c,
                "size": sizes[c],
                "kept_id": doc_id(int(res.kept_for[c])),
                "sources": {
                    s: int(((res.labels == c) & (source_rank == ranks[s])).sum())
                    for s in names
                    if ((res.labels == c) & (source_rank == ranks[s])).any()
                },
                "examples": [
                    {"id": doc_id(g), "kept": bool(res.keep[g]), "text": texts.get(g, "")} for g in wanted[c]
                ],
            }
            for c in big
        ],
        "params": {**asdict(config), "bands": res.bands, "rows": res.rows, "rank": names},
    }
    assert report["kept_documents"] + report["removed_documents"] == report["input_documents"]
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report

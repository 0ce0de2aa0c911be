"""MinHash-LSH near-deduplication within and across datasets (the `dedup` stage).

Two paths share one core (`hybridlm.data.minhash`, `hybridlm.data.clusters`):
- in memory: `dedup_texts` / `find_clusters` on lists of texts or signatures (the reference, and small jobs);
- on disk: `run_dedup` on files, as the tasks of `hybridlm.data.dedup_tasks` (signatures -> buckets by band range
  -> components -> write -> report), each task's memory bounded by `memory` bytes and resumable; they run on this
  machine's cores (a process pool) or on datatrove's Local, Slurm or Ray executors (`executor=`).
Both keep and remove the same documents.

A document is identified as `SOURCE/RELPATH:LINE`; a source is one input argument (file or directory). The keep
rule is in `hybridlm.data.clusters.apply_keep_rule`: the highest-ranked source wins (`rank`, default the order of
the inputs), ties go to the earliest document in input order.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from hybridlm.data.clusters import apply_keep_rule, candidate_pairs, connected_components, jaccard_sorted
from hybridlm.data.errors import DataError
from hybridlm.data.io import (
    JSONL_SUFFIXES,
    InputFile,
    check_text_field,
    count_lines,
    default_max_doc_bytes,
    expand_inputs,
)
from hybridlm.data.minhash import MinHasher, band_keys, choose_bands_rows
from hybridlm.data.outputs import DEDUP_OUTPUTS, data_stage

# Named settings. "default" is the verified default (word 13-grams, 128 permutations, bands chosen from the
# threshold). "zyda1": word 13-grams, 128 permutations, 32 bands of 4 rows, as Zyda-1 used (its S-curve is at
# Jaccard (1/32)^(1/4) = 0.42). "zyda2": character 25-grams, 8 bands of 16 rows (S-curve at 0.88), removal only
# across datasets with the best-ranked source kept, as Zyda-2 did.
DEDUP_PRESETS: dict[str, dict] = {
    "default": {},
    "zyda1": {"shingle": "word", "ngram": 13, "num_perm": 128, "bands": 32, "rows": 4, "threshold": 0.4},
    "zyda2": {
        "shingle": "char",
        "ngram": 25,
        "num_perm": 128,
        "bands": 8,
        "rows": 16,
        "threshold": 0.85,
        "cross_only": True,
    },
}

DEFAULT_MEMORY = 1 << 30  # bytes per task
MIN_SPLIT_LINES = 4096  # a file is cut into line ranges of at least this many lines


def parse_memory(text: str | int) -> int:
    """'512M', '2G', '1.5GB', '800MiB' or a number of bytes -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text).lower())
    if not m:
        raise DataError(f"--memory must be a size like 512M, 2G or 1.5GB, not {text!r}")
    value = float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " ")
    if value < 32 * 2**20:
        raise DataError(f"--memory {text!r} is too small: give at least 32M")
    return int(value)


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

    @classmethod
    def preset(cls, name: str, **overrides) -> DedupConfig:
        """A named preset (`DEDUP_PRESETS`) with any fields overridden (None means: keep the preset's value)."""
        if name not in DEDUP_PRESETS:
            raise DataError(f"--preset must be one of {', '.join(DEDUP_PRESETS)}, not {name!r}")
        known = {f.name for f in fields(cls)}
        values = {**DEDUP_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None and k in known}}
        return cls(**values)

    def as_dict(self) -> dict:
        return asdict(self)

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
    flat, counts = h.batch_hashes(texts)
    sig = h.signatures_from_flat(flat, counts)
    ranks = np.zeros(len(texts), np.int64) if source_rank is None else np.asarray(source_rank, np.int64)
    sets = [np.unique(x) for x in np.split(flat, np.cumsum(counts)[:-1])] if config.verify else None
    return find_clusters(sig, counts, ranks, config, sets)


def resolve_ranks(files: list[InputFile], rank: list[str] | None) -> dict[str, int]:
    sources = list(dict.fromkeys(f.source for f in files))
    rank = [r for part in (rank or []) for r in part.split(",") if r]
    unknown = [r for r in rank if r not in sources]
    if unknown:
        raise DataError(f"--rank names unknown source(s) {unknown}; sources are {sources}")
    ordered = rank + [s for s in sources if s not in rank]
    return {s: i for i, s in enumerate(ordered)}


def band_ranges(bands: int, tasks: int) -> list[list[int]]:
    """Split bands 0..bands-1 into `tasks` contiguous ranges (as even as possible)."""
    tasks = max(1, min(tasks, bands))
    edges = np.linspace(0, bands, tasks + 1).round().astype(int).tolist()
    return [[a, b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


def plan_shards(files: list[InputFile], parallel: int, min_lines: int | None = None) -> list[dict]:
    """One shard per file; when there are fewer files than `parallel` tasks, JSONL files are cut into contiguous
    line ranges (at least `min_lines` lines each) so that every core has work."""
    min_lines = min_lines or MIN_SPLIT_LINES
    shards = []
    per_file = -(-parallel // max(1, len(files)))
    for i, f in enumerate(files):
        parts = 1
        if per_file > 1 and f.path.name.endswith(JSONL_SUFFIXES):
            n = count_lines(f.path)
            parts = max(1, min(per_file, n // min_lines))
        if parts == 1:
            shards.append({"file": i, "lines": None})
            continue
        edges = np.linspace(1, n + 1, parts + 1).round().astype(int).tolist()
        shards += [{"file": i, "lines": [a, b]} for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return shards


def plan_dedup(
    inputs: list[str | Path],
    output_dir: str | Path,
    text_key: str = "text",
    config: DedupConfig | None = None,
    rank: list[str] | None = None,
    band_tasks: int | None = None,
    memory: str | int = DEFAULT_MEMORY,
    top_clusters: int = 10,
    parallel: int = 1,
):
    """Check the inputs and write the run's plan (`OUTPUT/.work/plan.json`); stored work from other inputs or
    settings is discarded. `parallel`: the tasks that will run at once (files are split to give each one work).
    Returns the `DedupPlan`."""
    from hybridlm.data.dedup_tasks import DedupPlan
    from hybridlm.data.engine import default_workers

    config = config or DedupConfig()
    out = Path(output_dir)
    files = expand_inputs(inputs)
    check_text_field(files, text_key)
    ranks = resolve_ranks(files, rank)
    bands, _ = config.bands_rows()
    plan = DedupPlan(
        output_dir=str(out),
        text_key=text_key,
        config=config.as_dict(),
        files=[
            {"path": str(f.path), "source": f.source, "relpath": f.relpath, "key": f.key, "out_relpath": f.out_relpath}
            for f in files
        ],
        ranks=ranks,
        band_ranges=band_ranges(bands, band_tasks or default_workers()),
        memory=parse_memory(memory),
        top_clusters=top_clusters,
        shards=plan_shards(files, parallel),
        max_doc_bytes=default_max_doc_bytes(),
    )
    work = plan.work
    stats = [[str(f.path), f.path.stat().st_size, f.path.stat().st_mtime_ns] for f in files]
    params = json.loads(json.dumps({k: v for k, v in plan.__dict__.items() if k != "extra"} | {"inputs": stats}))
    params_path = work / "params.json"
    if params_path.exists() and json.loads(params_path.read_text()) != params:
        shutil.rmtree(work)  # stored work from other inputs or settings: recompute everything
    work.mkdir(parents=True, exist_ok=True)
    params_path.write_text(json.dumps(params))
    plan.save()
    return plan


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
    memory: str | int = DEFAULT_MEMORY,
    band_tasks: int | None = None,
    executor: str | None = None,
    executor_options: dict | None = None,
) -> dict:
    """Deduplicate `inputs` into `OUTPUT/kept/`, `OUTPUT/removed/`, `OUTPUT/report.json`; returns the report.

    `executor`: None (this machine's cores, `workers` processes), or datatrove's "local", "slurm" or "ray" with
    `executor_options` (see `hybridlm.data.dt_steps.dedup_executors`). A Slurm run returns once its jobs are
    submitted (`{"submitted": ...}`); the report appears when the last job ends.
    """
    from hybridlm.data import dedup_tasks as T
    from hybridlm.data.engine import default_workers

    # files are split into line ranges only for executors on this machine, where the number of cores is known
    parallel = (workers or default_workers()) if executor in (None, "processes", "local") else 1
    plan = plan_dedup(
        inputs, output_dir, text_key, config, rank, band_tasks or workers, memory, top_clusters, parallel
    )
    if executor in (None, "processes"):
        from hybridlm.data.engine import run_shards

        plan.extra = {"executor": "processes", "workers": workers}
        plan.save()
        for stage in T.STAGES:
            if T.missing_tasks(plan, stage):
                T.clear_after(plan, stage)
            jobs = [(f"{stage}-{i}", (str(plan.work), stage, i)) for i in range(plan.num_tasks(stage))]
            run_shards(T.run_task_payload, jobs, None, workers, stage, quiet)
    else:
        from hybridlm.data.dt_steps import run_dedup_executor

        submitted = run_dedup_executor(plan, executor, workers=workers, **(executor_options or {}))
        if submitted is not None:
            return submitted
    return json.loads((Path(output_dir) / "report.json").read_text())

"""The data stages as datatrove pipeline steps, for running beyond one machine.

datatrove (Hugging Face) already has what a home-made engine would have to grow: Local, Slurm and Ray executors,
fsspec I/O (local, S3, HF hub), per-task completion markers and stats. So instead of a distributed engine of our own,
our pieces plug into it as steps:

- `HybridReader`: our reader (rejects with file and line, JSONL/Parquet/Arrow/JSON); files are split across ranks.
- `ZydaFilterStep`: the Zyda-1 filters as a datatrove `BaseFilter` (drop reason = filter name in the stats).
- `MinhashSignatureStep` -> `MinhashClusterStep` -> `MinhashRemoveStep`: the three dedup stages; signatures and
  decisions go through a datatrove `DataFolder` (any fsspec path).

`run_filter_datatrove` / `run_dedup_datatrove` run them with `LocalPipelineExecutor`; for Slurm or Ray, build the
same step lists with `filter_pipeline` / `dedup_pipelines` and hand them to `SlurmPipelineExecutor` /
`RayPipelineExecutor` with the same arguments.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.executor import LocalPipelineExecutor
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers import JsonlWriter

from hybridlm.data.dedup import DedupConfig, find_clusters, resolve_ranks
from hybridlm.data.filters import FilterConfig, ZydaFilters, summarize_filter
from hybridlm.data.io import RejectLog, check_text_field, expand_inputs, iter_records
from hybridlm.data.outputs import DEDUP_OUTPUTS, FILTER_OUTPUTS, data_stage


class HybridReader(PipelineStep):
    """Reads local inputs with hybridlm's reader; rank r takes files r, r + world_size, ...; every document keeps
    its other fields in `metadata` and its source in `metadata["_source"]`; ids are `SOURCE/RELPATH:LINE`."""

    type = "📖 - READER"
    name = "hybridlm reader"

    def __init__(self, inputs: list[str | Path], text_key: str = "text", rejects_folder: str | None = None):
        super().__init__()
        self.files = expand_inputs(inputs)
        self.text_key = text_key
        self.rejects_folder = rejects_folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        path = Path(self.rejects_folder) / f"{rank:05d}.jsonl" if self.rejects_folder else None
        rejects = RejectLog(path)
        try:
            for f in self.files[rank::world_size]:
                for line, rec in iter_records(f, self.text_key, rejects):
                    text = rec.pop(self.text_key)
                    self.stat_update("documents")
                    yield Document(
                        text=text, id=f"{f.source}/{f.relpath}:{line}", metadata={**rec, "_source": f.source}
                    )
        finally:
            rejects.close()
            self.stat_update("rejected", value=rejects.count)


def record_adapter(text_key: str):
    """datatrove writer adapter that writes the original record back (text under `text_key`, fields flat)."""

    def adapt(_writer, doc: Document) -> dict:
        meta = {k: v for k, v in doc.metadata.items() if k != "_source"}
        return {text_key: doc.text, **meta}

    return adapt


class ZydaFilterStep(BaseFilter):
    name = "Zyda-1 heuristics"

    def __init__(self, config: FilterConfig | None = None, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.filters = ZydaFilters(config)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reason = self.filters.check(doc.text)
        return True if reason is None else (False, reason)


def filter_pipeline(
    inputs, output_dir, text_key="text", config: FilterConfig | None = None
) -> list[PipelineStep]:
    out = str(output_dir)
    adapter = record_adapter(text_key)
    removed = JsonlWriter(f"{out}/removed", compression=None, adapter=adapter)
    return [
        HybridReader(inputs, text_key, f"{out}/rejects"),
        ZydaFilterStep(config, exclusion_writer=removed),
        JsonlWriter(f"{out}/kept", compression=None, adapter=adapter),
    ]


def _stats_counts(stats) -> dict[str, dict[str, int]]:
    out = {}
    for step in stats.stats:
        out[step.name] = {k: int(v.total) for k, v in step.stats.items()}
    return out


@data_stage("filter", engine="datatrove", owned=FILTER_OUTPUTS, reset_on_change=True)
def run_filter_datatrove(inputs, output_dir, text_key="text", config=None, tasks=None, workers=None) -> dict:
    """The filter stage on datatrove's `LocalPipelineExecutor` (finished tasks are skipped on rerun)."""
    config = config or FilterConfig()
    files = expand_inputs(inputs)
    check_text_field(files, text_key)
    tasks = tasks or len(files)
    ex = LocalPipelineExecutor(
        filter_pipeline(inputs, output_dir, text_key, config),
        tasks=tasks,
        workers=workers or -1,
        logging_dir=f"{output_dir}/.datatrove/filter",
    )
    ex.run()
    stats = json.loads(Path(f"{output_dir}/.datatrove/filter/stats.json").read_text())
    reader = next(s for s in stats if s["name"].endswith("hybridlm reader"))["stats"]
    filt = next(s for s in stats if "Zyda-1" in s["name"])["stats"]

    def total(d, k):
        v = d.get(k, 0)
        return int(v["total"]) if isinstance(v, dict) else int(v)

    by = {k[len("dropped_") :]: total(filt, k) for k in filt if k.startswith("dropped_")}
    n_in = total(reader, "documents")
    rejects = _collect_rejects(Path(output_dir) / "rejects")
    result = {
        "input": n_in,
        "kept": total(filt, "forwarded"),
        "removed": total(filt, "dropped"),
        "by_filter": by,
        "rejects": rejects,
        "file": str(output_dir),
        "source": "datatrove",
    }
    report = summarize_filter([result], config)
    report["engine"] = "datatrove"
    (Path(output_dir) / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def _collect_rejects(folder: Path) -> dict:
    entries = [json.loads(x) for p in sorted(folder.glob("*.jsonl")) for x in p.read_text().splitlines()]
    by: dict[str, int] = {}
    for e in entries:
        k = e["reason"].split(":")[0]
        by[k] = by.get(k, 0) + 1
    return {
        "rejected": len(entries),
        "by_reason": by,
        "examples": [{k: e[k] for k in ("file", "line", "reason")} for e in entries[:20]],
    }


# --- dedup --------------------------------------------------------------------------------------------------------


class MinhashSignatureStep(PipelineStep):
    """Stage 1: signatures of this rank's documents -> `WORK/sigs/RANK.npz` (ids, sources, signatures, hashes)."""

    type = "🫂 - DEDUP"
    name = "hybridlm minhash signatures"

    def __init__(self, work_folder, config: DedupConfig):
        super().__init__()
        self.work = get_datafolder(work_folder)
        self.config = config

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        h = self.config.hasher()
        ids, sources, hashes = [], [], []
        for doc in data or []:
            ids.append(doc.id)
            sources.append(doc.metadata.get("_source", ""))
            hashes.append(h.shingle_hashes(doc.text))
            self.stat_update("documents")
        sig = h.signatures_from_hashes(hashes) if hashes else np.empty((0, self.config.num_perm), np.uint32)
        uniq = [np.unique(x) for x in hashes]
        buf = io.BytesIO()
        np.savez(
            buf,
            sig=sig,
            ids=np.array(ids, dtype=object),
            sources=np.array(sources, dtype=object),
            n_shingles=np.array([len(x) for x in hashes], np.int64),
            hashes=np.concatenate(uniq) if uniq else np.empty(0, np.uint64),
            hash_lens=np.array([len(x) for x in uniq], np.int64),
        )
        with self.work.open(f"sigs/{rank:05d}.npz", "wb") as fh:
            fh.write(buf.getvalue())
        return
        yield  # a generator that yields nothing: this stage ends the pipeline


class MinhashClusterStep(PipelineStep):
    """Stage 2 (one task): LSH + verification + components + keep rule -> `WORK/removed.json`."""

    type = "🫂 - DEDUP"
    name = "hybridlm minhash clusters"

    def __init__(self, work_folder, config: DedupConfig, rank_of_source: dict[str, int]):
        super().__init__()
        self.work = get_datafolder(work_folder)
        self.config = config
        self.rank_of_source = rank_of_source

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        sig, ids, src, nsh, hashes = [], [], [], [], []
        for name in sorted(self.work.list_files("sigs")):
            with self.work.open(name, "rb") as fh:
                d = np.load(io.BytesIO(fh.read()), allow_pickle=True)
            sig.append(d["sig"])
            ids += d["ids"].tolist()
            src += d["sources"].tolist()
            nsh.append(d["n_shingles"])
            if len(d["hash_lens"]):
                hashes += np.split(d["hashes"], np.cumsum(d["hash_lens"])[:-1])
        # a canonical document order (by source rank, then id) makes the keep rule independent of task layout
        order = sorted(range(len(ids)), key=lambda i: (self.rank_of_source.get(src[i], 0), _id_key(ids[i])))
        sig_a = np.concatenate(sig)[order] if sig else np.empty((0, self.config.num_perm), np.uint32)
        nsh_a = np.concatenate(nsh)[order] if nsh else np.empty(0, np.int64)
        ranks = np.array([self.rank_of_source.get(src[i], 0) for i in order], np.int64)
        ids_o = [ids[i] for i in order]
        hs = [hashes[i] for i in order] if self.config.verify else None
        res = find_clusters(sig_a, nsh_a, ranks, self.config, hs)
        removed = {
            ids_o[i]: [ids_o[int(res.labels[i])], ids_o[int(res.kept_for[i])]]
            for i in np.flatnonzero(~res.keep).tolist()
        }
        with self.work.open("removed.json", "w") as fh:
            per_source: dict[str, int] = {}
            for s in src:
                per_source[s] = per_source.get(s, 0) + 1
            json.dump(
                {
                    "removed": removed,
                    "input_documents": len(ids_o),
                    "bands": res.bands,
                    "rows": res.rows,
                    "per_source_input": per_source,
                },
                fh,
            )
        self.stat_update("removed", value=len(removed))
        return
        yield


def _id_key(doc_id: str):
    head, _, line = doc_id.rpartition(":")
    return (head, int(line) if line.isdigit() else 0)


class MinhashRemoveStep(BaseFilter):
    """Stage 3: drop the documents stage 2 removed; they get `dedup_cluster_id` and `dedup_kept_id` metadata."""

    name = "hybridlm minhash remove"

    def __init__(self, work_folder, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.work = get_datafolder(work_folder)
        self._removed = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._removed is None:
            with self.work.open("removed.json", "r") as fh:
                self._removed = json.load(fh)["removed"]
        hit = self._removed.get(doc.id)
        if hit is None:
            return True
        doc.metadata["dedup_cluster_id"], doc.metadata["dedup_kept_id"] = hit
        return False, "duplicate"


def dedup_pipelines(inputs, output_dir, text_key="text", config: DedupConfig | None = None, rank=None):
    """The three step lists (signatures, clusters, remove); stage 2 must run as a single task."""
    config = config or DedupConfig()
    out = str(output_dir)
    work = f"{out}/.datatrove/work"
    ranks = resolve_ranks(expand_inputs(inputs), rank)
    adapter = record_adapter(text_key)
    return (
        [HybridReader(inputs, text_key, f"{out}/rejects"), MinhashSignatureStep(work, config)],
        [MinhashClusterStep(work, config, ranks)],
        [
            HybridReader(inputs, text_key),
            MinhashRemoveStep(work, JsonlWriter(f"{out}/removed", compression=None, adapter=adapter)),
            JsonlWriter(f"{out}/kept", compression=None, adapter=adapter),
        ],
    )


@data_stage("dedup", engine="datatrove", owned=DEDUP_OUTPUTS, reset_on_change=True)
def run_dedup_datatrove(
    inputs, output_dir, text_key="text", config=None, rank=None, tasks=None, workers=None
):
    """The dedup stage as three dependent datatrove `LocalPipelineExecutor` jobs."""
    config = config or DedupConfig()
    files = expand_inputs(inputs)
    check_text_field(files, text_key)
    tasks = tasks or len(files)
    s1, s2, s3 = dedup_pipelines(inputs, output_dir, text_key, config, rank)
    logs = f"{output_dir}/.datatrove"
    e1 = LocalPipelineExecutor(s1, tasks=tasks, workers=workers or -1, logging_dir=f"{logs}/sigs")
    e2 = LocalPipelineExecutor(s2, tasks=1, logging_dir=f"{logs}/clusters", depends=e1)
    e3 = LocalPipelineExecutor(
        s3, tasks=tasks, workers=workers or -1, logging_dir=f"{logs}/remove", depends=e2
    )
    e3.run()
    info = json.loads(Path(f"{logs}/work/removed.json").read_text())
    removed = info["removed"]
    names = sorted(resolve_ranks(files, rank), key=resolve_ranks(files, rank).get)
    per_source = {s: {"input": 0, "kept": 0, "removed": 0} for s in names}
    rej = _collect_rejects(Path(output_dir) / "rejects")
    n_in = info["input_documents"]
    for doc_id in removed:
        per_source[doc_id.split("/", 1)[0]]["removed"] += 1
    for s, v in per_source.items():
        v["input"] = info["per_source_input"].get(s, 0)
        v["kept"] = v["input"] - v["removed"]
    report = {
        "engine": "datatrove",
        "input_documents": n_in,
        "kept_documents": n_in - len(removed),
        "removed_documents": len(removed),
        "clusters": len({v[0] for v in removed.values()}),
        "per_source": per_source,
        "rejected_records": rej["rejected"],
        "reject_examples": rej["examples"],
        "params": {**config.__dict__, "bands": info["bands"], "rows": info["rows"], "rank": names},
    }
    (Path(output_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report

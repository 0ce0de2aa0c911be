"""The data stages as datatrove pipeline steps, for running beyond one machine.

datatrove (Hugging Face) already has what a home-made engine would have to grow: Local, Slurm and Ray executors,
fsspec I/O (local, S3, HF hub), per-task completion markers and stats. So instead of a distributed engine of our own,
our pieces plug into it as steps:

- `HybridReader`: our reader (rejects with file and line, JSONL/Parquet/Arrow/JSON); files are split across ranks.
- `ZydaFilterStep`: the Zyda-1 filters as a datatrove `BaseFilter` (drop reason = filter name in the stats).
- `DedupTaskStep`: one stage of the on-disk dedup (`hybridlm.data.dedup_tasks`); `dedup_executors` chains the five
  stages on datatrove's Local, Slurm or Ray executor, `run_dedup(..., executor=...)` runs them.

`run_filter_datatrove` runs the filter with `LocalPipelineExecutor`; for Slurm or Ray, hand `filter_pipeline(...)`
to `SlurmPipelineExecutor` / `RayPipelineExecutor` with the same arguments.
"""

from __future__ import annotations

import json
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers import JsonlWriter

from hybridlm.data.filters import FilterConfig, ZydaFilters, summarize_filter
from hybridlm.data.io import RejectLog, check_text_field, expand_inputs, iter_records
from hybridlm.data.outputs import FILTER_OUTPUTS, data_stage


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


# --- dedup ----------------------------------------------------------------------------------------------------------


class DedupTaskStep(PipelineStep):
    """One stage of the on-disk dedup (`hybridlm.data.dedup_tasks`) as a datatrove step: datatrove task `rank` runs
    task `rank` of the stage. It reads and writes only under the run's work folder (which must be on a file
    system every node sees), so any executor runs it; finished tasks are skipped on rerun."""

    type = "🫂 - DEDUP"

    def __init__(self, work: str | Path, stage: str):
        super().__init__()
        self.work = str(work)
        self.stage = stage
        self.name = f"hybridlm dedup {stage}"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from hybridlm.data.dedup_tasks import run_task

        if data:
            yield from data
        result = run_task(self.work, self.stage, rank)
        self.stat_update("tasks")
        if "documents" in result:
            self.stat_update("documents", value=result["documents"])


# options each executor takes (beside tasks and dependencies, which come from the plan)
EXECUTOR_OPTIONS = {
    "local": ("workers", "start_method"),
    "slurm": (
        "partition",
        "time",
        "cpus_per_task",
        "mem_per_cpu_gb",
        "job_name",
        "qos",
        "env_command",
        "condaenv",
        "venv_path",
        "sbatch_args",
        "max_array_size",
        "tasks_per_job",
    ),
    "ray": ("workers", "cpus_per_task", "mem_per_cpu_gb", "tasks_per_job"),
}


def dedup_executors(plan, executor: str = "local", **options) -> list:
    """One datatrove executor per dedup stage, each depending on the one before (run the last one).

    local: `workers` (processes, default all cores), `start_method`. slurm: `partition` and `time` (required),
    `cpus_per_task`, `mem_per_cpu_gb`, `job_name`, `qos`, `env_command` / `condaenv` / `venv_path` (how a job
    gets this Python), `sbatch_args` (dict), `max_array_size`, `tasks_per_job`. ray: `workers`, `cpus_per_task`,
    `mem_per_cpu_gb`, `tasks_per_job` (connect with `ray.init()` first, or a local Ray starts)."""
    from hybridlm.data.dedup_tasks import STAGES
    from hybridlm.data.errors import DataError

    if executor not in EXECUTOR_OPTIONS:
        raise DataError(f"--executor must be one of processes, {', '.join(EXECUTOR_OPTIONS)}, not {executor!r}")
    opts = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(opts) - set(EXECUTOR_OPTIONS[executor]))
    if unknown:
        raise DataError(f"--executor {executor} does not take {unknown}; it takes {list(EXECUTOR_OPTIONS[executor])}")
    if executor == "local":
        from datatrove.executor import LocalPipelineExecutor as Executor

        opts.setdefault("workers", -1)
    elif executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor as Executor

        missing = [k for k in ("partition", "time") if k not in opts]
        if missing:
            raise DataError(f"--executor slurm needs {' and '.join('--slurm-' + k for k in missing)}")
        job_name = opts.pop("job_name", "hybridlm-dedup")
    else:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise DataError("--executor ray needs Ray: pip install 'ray[default]'") from None
        from datatrove.executor import RayPipelineExecutor as Executor
    work = plan.work
    executors = []
    for stage in STAGES:
        kw = dict(opts)
        if executor == "slurm":
            kw["job_name"] = f"{job_name}-{stage}"
            if plan.num_tasks(stage) == 1:
                kw["cpus_per_task"] = 1
        ex = Executor(
            [DedupTaskStep(work, stage)],
            tasks=plan.num_tasks(stage),
            logging_dir=str(work / "datatrove" / stage),
            depends=executors[-1] if executors else None,
            **kw,
        )
        executors.append(ex)
    return executors


def run_dedup_executor(plan, executor: str, workers: int | None = None, **options) -> dict | None:
    """Run (local, ray) or submit (slurm) the dedup stages on datatrove; returns None when the run has finished,
    or a description of the submitted jobs."""
    import shutil

    from hybridlm.data.dedup_tasks import STAGES, clear_after, missing_tasks

    if executor in ("local", "ray") and workers is not None:
        options["workers"] = workers
    plan.extra = {"executor": executor, **{k: v for k, v in options.items() if isinstance(v, int | str)}}
    plan.save()
    # a stage with unfinished tasks invalidates the later ones, in our markers and in datatrove's
    for stage in STAGES:
        if missing_tasks(plan, stage):
            clear_after(plan, stage)
            for later in STAGES[STAGES.index(stage) + 1 :]:
                shutil.rmtree(plan.work / "datatrove" / later, ignore_errors=True)
            break
    chain = dedup_executors(plan, executor, **options)
    chain[-1].run()
    if executor == "slurm":
        return {
            "submitted": True,
            "executor": "slurm",
            "jobs": [getattr(e, "job_id", None) for e in chain],
            "report": str(Path(plan.output_dir) / "report.json"),
            "logs": str(plan.work / "datatrove"),
        }
    return None


def run_dedup_datatrove(inputs, output_dir, text_key="text", config=None, rank=None, tasks=None, workers=None):
    """The dedup stage on datatrove's `LocalPipelineExecutor` (kept for existing callers; see `run_dedup`)."""
    from hybridlm.data.dedup import run_dedup

    return run_dedup(
        inputs, output_dir, text_key, config, rank, workers=workers, band_tasks=tasks, executor="local"
    )

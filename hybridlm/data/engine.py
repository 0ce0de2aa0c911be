"""The single-machine executor: run one function per shard over all cores, restartable at shard level.

A shard is one unit of work (usually one input file). When it finishes, its result is written atomically as
`STATE_DIR/<key>.json`; a later run with the same state directory skips it and reuses the stored result, so a
crashed or interrupted run resumes where it stopped. Progress is a rich bar with ETA. For more than one machine the
same stages run as datatrove pipeline steps (see `hybridlm.data.dt_steps`).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: `VmHWM` on Linux (since the process image started, so not what
    its launcher held before `exec`, which `ru_maxrss` keeps), else `ru_maxrss`."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def progress_bar(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=disable,
        transient=False,
    )


def _call(args):
    fn, key, payload = args
    return key, fn(payload)


def run_shards(
    fn: Callable[[Any], dict],
    shards: Sequence[tuple[str, Any]],
    state_dir: Path | None,
    workers: int | None = None,
    desc: str = "shards",
    quiet: bool = False,
) -> dict[str, dict]:
    """Run `fn(payload)` for each `(key, payload)`; return `{key: result}` in the order of `shards`.

    `fn` must be a top-level function (it is pickled) returning a JSON-serialisable dict.
    """
    results: dict[str, dict] = {}
    todo = []
    for key, payload in shards:
        marker = state_dir / f"{key}.json" if state_dir else None
        if marker is not None and marker.exists():
            results[key] = json.loads(marker.read_text())
        else:
            todo.append((fn, key, payload))
    workers = min(workers or default_workers(), max(1, len(todo)))

    def done(key: str, res: dict) -> None:
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
            tmp = state_dir / f".{key}.json.tmp"
            tmp.write_text(json.dumps(res))
            os.replace(tmp, state_dir / f"{key}.json")
        results[key] = res

    with progress_bar(disable=quiet or not sys.stderr.isatty()) as bar:
        task = bar.add_task(desc, total=len(shards), completed=len(shards) - len(todo))
        if workers <= 1:
            for item in todo:
                done(*_call(item))
                bar.advance(task)
        else:
            ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with ctx.Pool(workers) as pool:
                for key, res in pool.imap_unordered(_call, todo):
                    done(key, res)
                    bar.advance(task)
    return {key: results[key] for key, _ in shards}

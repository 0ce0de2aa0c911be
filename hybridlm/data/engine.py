"""The single-machine executor: run one function per shard over all cores, restartable at shard level.

A shard is one unit of work (usually one input file). When it finishes, its result is written atomically as
`STATE_DIR/<key>.json` together with what it depends on (input path, size and mtime; a hash of the stage's
settings); a later run with the same state directory reuses the stored result only if those are unchanged, so a
crashed or interrupted run resumes where it stopped and a changed input or setting is redone. Worker processes die
with their parent. Progress is a rich bar with ETA. For more than one machine the
same stages run as datatrove pipeline steps (see `hybridlm.data.dt_steps`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
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


def describe(obj: Any) -> Any:
    """A JSON-able description of a shard's payload or a stage's settings: input files become their path, size and
    mtime (so a changed input changes the description), dataclasses their fields."""
    from hybridlm.data.io import InputFile, input_signature

    if isinstance(obj, InputFile):
        return input_signature(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: describe(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): describe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


def _inputs_of(payload: Any) -> list[dict]:
    from hybridlm.data.io import InputFile, input_signature

    if isinstance(payload, InputFile):
        return [input_signature(payload)]
    if isinstance(payload, dict):
        return [s for v in payload.values() for s in _inputs_of(v)]
    if isinstance(payload, (list, tuple)):
        return [s for v in payload for s in _inputs_of(v)]
    return []


def dependencies(payload: Any) -> dict:
    """What a shard's result depends on: its input files (path, size, mtime), a hash of every setting in its
    payload, and the reader's settings. A completion marker is reused only when this is unchanged."""
    from hybridlm.data.io import reader_settings

    text = json.dumps(describe(payload), sort_keys=True, default=str)
    return {
        "inputs": _inputs_of(payload),
        "settings": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "reader": reader_settings(),
    }


def _changed(old: dict, new: dict) -> str:
    if not isinstance(old, dict) or "depends_on" not in old:
        return "written by an older version"
    old = old["depends_on"]
    if old.get("inputs") != new["inputs"]:
        return "input changed"
    if old.get("reader") != new["reader"]:
        return "reader settings changed"
    return "settings changed"


def _worker_init(parent: int) -> None:
    """Worker processes die with their parent, however it dies (kill -9 included): Linux sends them SIGKILL when
    the parent exits (PR_SET_PDEATHSIG); a worker whose parent is already gone exits at once."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


def _call(args):
    fn, key, payload = args
    if os.environ.get("HYBRIDLM_FAULT") == "shard:hang":  # fault injection for tests: a worker stuck in a shard
        time.sleep(3600)
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

    `fn` must be a top-level function (it is pickled) returning a JSON-serialisable dict. A shard whose marker in
    `state_dir` records the same dependencies (`dependencies(payload)`) is not redone; one whose input or settings
    changed is redone (with a line saying so); markers of shards that are no longer part of the run are removed.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        from hybridlm.data.errors import DataError

        raise DataError(f"workers must be a whole number >= 1 (None: all cores), got {workers!r}")
    results: dict[str, dict] = {}
    todo, redo = [], []
    deps = {key: dependencies(payload) for key, payload in shards}
    for key, payload in shards:
        marker = state_dir / f"{key}.json" if state_dir else None
        if marker is not None and marker.exists():
            try:
                old = json.loads(marker.read_text())
            except ValueError:
                old = None
            if isinstance(old, dict) and old.get("depends_on") == deps[key]:
                results[key] = old["result"]
                continue
            redo.append(f"{key} ({_changed(old, deps[key])})")
        todo.append((fn, key, payload))
    if state_dir is not None and state_dir.is_dir():
        current = {f"{key}.json" for key, _ in shards}
        for stale in state_dir.glob("*.json"):
            if stale.name not in current:
                stale.unlink()
    if redo and not quiet:
        shown = ", ".join(redo[:3]) + (f" and {len(redo) - 3} more" if len(redo) > 3 else "")
        print(f"{desc}: redoing {len(redo)} finished shard(s) whose input or settings changed: {shown}",
              file=sys.stderr, flush=True)
    workers = min(workers or default_workers(), max(1, len(todo)))

    def done(key: str, res: dict) -> None:
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
            tmp = state_dir / f".{key}.json.tmp"
            tmp.write_text(json.dumps({"depends_on": deps[key], "result": res}))
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
            with ctx.Pool(workers, initializer=_worker_init, initargs=(os.getpid(),)) as pool:
                for key, res in pool.imap_unordered(_call, todo):
                    done(key, res)
                    bar.advance(task)
    return {key: results[key] for key, _ in shards}

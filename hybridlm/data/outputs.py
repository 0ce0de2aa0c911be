"""The output directory of a data stage: where it may be, who may write it, and what stale files it may hold.

`@data_stage(name)` wraps a stage function `fn(inputs, output_dir, ...)`:

1. refuses an output directory inside an input directory, or one holding an input (`check_output_location`);
2. locks the directory for the run (`hybridlm.locks.output_lock`; a second run gets one line naming the holder);
3. removes `.tmp` files left by a killed run (nothing else can be writing: the lock is held);
4. refuses a directory written by another stage (`OUTPUT/.stage.json` records the stage, its engine, its inputs
   with size and mtime, and its settings); when the engine changed, or for stages without per-shard markers
   (`reset_on_change`, the datatrove engine) when anything changed, it clears the stage's earlier outputs first;
5. after the run, `mirror` directories (kept/, removed/) keep only the files this run's inputs map to, and the
   rejects directory only this run's rejects, so nothing computed from other inputs is left behind.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from hybridlm.data.errors import DataError
from hybridlm.data.io import check_output_location, expand_inputs, input_signature, reader_settings
from hybridlm.locks import output_lock

STAGE_FILE = ".stage.json"
FILTER_OUTPUTS = ("kept", "removed", "rejects", ".state", ".datatrove", "report.json")
DEDUP_OUTPUTS = ("kept", "removed", "rejects", ".work", ".datatrove", "report.json", "cluster_sizes.png")
_NOT_SETTINGS = ("inputs", "output_dir", "workers", "quiet", "progress", "top_clusters")


def remove_stale_tmp(root: Path) -> list[Path]:
    """Delete temp files (`*.tmp`, `*.tmp.npz`) and temp directories (`.tmp-*`) under `root`: debris of a killed
    run. Call only while holding the directory's lock."""
    removed = []
    for dirpath, dirnames, filenames in os.walk(root):
        for d in list(dirnames):
            if d.startswith(".tmp-"):
                shutil.rmtree(Path(dirpath) / d, ignore_errors=True)
                dirnames.remove(d)
                removed.append(Path(dirpath) / d)
        for name in filenames:
            if name.endswith((".tmp", ".tmp.npz")):
                (Path(dirpath) / name).unlink(missing_ok=True)
                removed.append(Path(dirpath) / name)
    return removed


def prune(root: Path, expected: Iterable[str]) -> list[Path]:
    """Delete every file under `root` whose path relative to it is not in `expected` (then empty directories)."""
    if not root.is_dir():
        return []
    keep = set(expected)
    removed = []
    for p in sorted(root.rglob("*"), reverse=True):
        if p.is_file() and p.relative_to(root).as_posix() not in keep:
            p.unlink()
            removed.append(p)
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    return removed


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temp file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _settings(bound: inspect.BoundArguments) -> dict:
    from hybridlm.data.engine import describe

    return {k: describe(v) for k, v in bound.arguments.items() if k not in _NOT_SETTINGS}


def _clear(out: Path, owned: Iterable[str]) -> None:
    for name in owned:
        for p in out.glob(name):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)


def data_stage(
    name: str,
    engine: str = "local",
    owned: tuple[str, ...] = (),
    mirror: tuple[str, ...] = (),
    rejects: str | None = None,
    reset_on_change: bool = False,
):
    """Decorator for a stage function whose first two parameters are `inputs` and `output_dir` (see the module
    docstring). `owned` are the globs (relative to the output) the stage writes, cleared when the earlier run's
    engine differs (or anything differs, with `reset_on_change`); `mirror` directories hold one file per input at
    its `out_relpath` and `rejects` one `<key>.jsonl` per input."""

    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            if bound.arguments.get("output_dir") is None:
                return fn(*args, **kwargs)
            inputs, out = bound.arguments["inputs"], Path(bound.arguments["output_dir"])
            files = expand_inputs(inputs)
            check_output_location(inputs, out)
            current = {
                "stage": name,
                "engine": engine,
                "inputs": [input_signature(f) for f in files],
                "settings": _settings(bound),
                "reader": reader_settings(),
            }
            with output_lock(out, f"hybridlm data {name}"):
                remove_stale_tmp(out)
                previous = _read_stage(out)
                if previous is not None and previous.get("stage") != name:
                    raise DataError(
                        f"{out} holds the output of 'hybridlm data {previous.get('stage')}'; write '{name}' to "
                        "another directory (one stage per output directory)"
                    )
                if previous is not None and (
                    previous.get("engine") != engine or (reset_on_change and previous != current)
                ):
                    _clear(out, owned)
                write_json(out / STAGE_FILE, current)
                result = fn(*args, **kwargs)
                for sub in mirror:
                    prune(out / sub, (f.out_relpath for f in files))
                if rejects:
                    prune(out / rejects, (f"{f.key}.jsonl" for f in files))
                return result

        return run

    return deco


def _read_stage(out: Path) -> dict | None:
    try:
        return json.loads((out / STAGE_FILE).read_text())
    except (OSError, ValueError):
        return None

"""Output-directory locks: one writer per directory at a time.

A run that writes a directory holds an exclusive `flock` on `DIR/.lock` for its whole duration and writes who it is
(pid, host, command, start time) into that file. A second run into the same directory gets one line naming the
holder. The kernel drops the lock when the holder exits, however it exits (kill -9 included), so a lock never
outlives its run and there is nothing to clean up. The lock is re-entrant within a process (a stage that calls
another stage on the same directory does not lock itself out).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from hybridlm.errors import HybridLMError

LOCK_NAME = ".lock"

_held: dict[Path, list] = {}  # resolved directory -> [fd, depth]


class DirectoryLockedError(HybridLMError):
    """Another run is writing the directory."""


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode("utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process (it has not written its name yet)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} since {started} ({info.get('command', '?')})"


@contextmanager
def output_lock(directory: str | Path, what: str | None = None):
    """Hold the lock of `directory` (created if needed) for the `with` block; `DirectoryLockedError` if taken."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise HybridLMError(f"output directory {directory} is a file; give a directory (new or holding this kind of "
                            "output)")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HybridLMError(f"cannot create output directory {directory}: {err.strerror}") from None
    key = d.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise HybridLMError(f"cannot write in output directory {directory}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise DirectoryLockedError(
            f"{directory} is in use by {holder}; wait for that run to finish or stop it, or choose another output "
            "directory"
        ) from None
    command = what or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": command}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing releases the flock

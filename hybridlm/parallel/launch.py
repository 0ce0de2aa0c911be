"""`--nproc N`: running a function on N local ranks (torchrun --standalone) and getting rank 0's answer.

The parent writes the request as JSON and starts `python -m MODULE --request REQ --out OUT` on N ranks;
each rank joins the default process group (gloo on CPU, NCCL with one GPU per rank) and runs the
module's function; rank 0 writes its JSON answer (to a temporary name, then renames). A user mistake the
ranks find (the same on every rank, before any collective) comes back as that one error, not N
tracebacks. Rank 0's lines that start with PROGRESS_MARK feed a progress callback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from hybridlm.errors import HybridLMError

PROGRESS_MARK = "@@hybridlm-progress "
BACKENDS = ("auto", "gloo", "nccl")


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise HybridLMError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise HybridLMError("backend nccl needs CUDA, which is not available here; use gloo or auto")
    return backend


def join_group(backend: str = "auto") -> torch.device:
    """Join the default process group (if not joined yet); the device this rank computes on."""
    backend = resolve_backend(backend)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=600))
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def progress(*what) -> None:
    """From a rank's function: report progress (rank 0's reports reach the parent's callback)."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(PROGRESS_MARK + json.dumps(list(what)), flush=True)


def run_ranks(module: str, nproc: int, request: dict, on_progress: Callable | None = None,
              timeout_s: float = 3600) -> dict:
    """Run `module`'s worker on `nproc` local ranks with `request`; return rank 0's answer."""
    if not 1 <= nproc <= 64:
        raise HybridLMError(f"--nproc must be between 1 and 64 local processes, got {nproc}")
    with tempfile.TemporaryDirectory(prefix="hybridlm-ranks-") as tmp:
        req, out = Path(tmp, "request.json"), Path(tmp, "answer.json")
        req.write_text(json.dumps(request))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", module, "--request", str(req), "--out", str(out)]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        root = str(Path(__file__).resolve().parents[2])  # the ranks import this very copy of hybridlm
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err_tail = pump(proc, on_progress, timeout_s)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"{module} ranks failed (exit {proc.returncode}):\n{err_tail}")
        answer = json.loads(out.read_text())
    if "error" in answer:
        raise HybridLMError(answer["error"])
    return answer


def worker_main(fn: Callable[[dict], dict], argv: list[str] | None = None) -> None:
    """The `__main__` of a worker module: run fn(request) on this rank; rank 0 writes the answer."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--request", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    request = json.loads(Path(args.request).read_text())
    try:
        answer = fn(request)
    except HybridLMError as err:
        answer = {"error": str(err)}
    rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))
    if dist.is_initialized():
        dist.destroy_process_group()
    if rank == 0:
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(answer))
        tmp.replace(args.out)


def pump(proc: subprocess.Popen, on_progress: Callable | None, timeout_s: float) -> str:
    """Feed rank 0's progress lines to `on_progress` until the ranks exit; return the tail of stderr."""
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    reader.start()
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith(PROGRESS_MARK):
                if on_progress is not None:
                    on_progress(*json.loads(line[len(PROGRESS_MARK):]))
            else:
                sys.stderr.write(line)
        proc.wait()
    finally:
        timer.cancel()
    reader.join(timeout=5)
    return "".join(err_lines[-40:])

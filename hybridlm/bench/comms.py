"""`bench comms`: what to run (a validated config) and how to start the ranks (torchrun).

The per-rank loop lives in `comms_worker`; this module only checks the request and either runs
that loop in this process (already under torchrun) or launches `nproc` local ranks and collects
rank 0's records.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hybridlm.bench.comms_math import OPS, check_op, valid_bytes
from hybridlm.bench.report import Record, read_json
from hybridlm.errors import HybridLMError
from hybridlm.parallel.launch import PROGRESS_MARK, pump  # noqa: F401  (PROGRESS_MARK: the worker's)

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
ProgressFn = Callable[[int, int, str, int], None]  # (done, total, op, bytes)


def parse_size(text: str | int) -> int:
    """'4096', '64K', '4M', '1G' (1024-based, as nccl-tests) -> bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise HybridLMError(f"cannot read size {text!r}; use bytes with an optional K/M/G suffix, e.g. 4M")
    return int(match.group(1)) * 1024 ** " KMG".index((match.group(2) or " ").upper())


def size_scan(min_bytes: int, max_bytes: int, factor: int) -> list[int]:
    """min, min*factor, ... up to max (nccl-tests -b/-e/-f)."""
    if min_bytes <= 0 or max_bytes <= 0:
        raise HybridLMError(f"sizes must be positive, got min {min_bytes} and max {max_bytes} bytes")
    if max_bytes < min_bytes:
        raise HybridLMError(f"max size {max_bytes} is below min size {min_bytes}; give min <= max")
    if factor < 2:
        raise HybridLMError(f"size factor must be an integer >= 2, got {factor}")
    sizes = [min_bytes]
    while sizes[-1] * factor <= max_bytes:
        sizes.append(sizes[-1] * factor)
    return sizes


def resolve_backend(backend: str) -> str:
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise HybridLMError(f"unknown backend {backend!r}; allowed: auto, gloo, nccl")
    if backend == "nccl" and not torch.cuda.is_available():
        raise HybridLMError("backend nccl needs CUDA, which is not available here; use gloo or auto")
    return backend


@dataclass
class CommsConfig:
    """Everything a rank needs to know. `exact` marks a single size the user asked for exactly;
    a scan instead rounds each size down to what the op can move (as nccl-tests does)."""

    ops: list[str] = field(default_factory=lambda: list(OPS))
    sizes: list[int] = field(default_factory=lambda: size_scan(1024, 1024**2, 4))
    dtype: str = "float32"
    warmup: int = 5
    trials: int = 20
    backend: str = "auto"
    exact: bool = False
    corrupt_rank: int | None = None  # test hook: this rank perturbs its input (see comms_ops)

    def validate(self, world_size: int) -> CommsConfig:
        if world_size < 2:
            raise HybridLMError(f"comms needs at least 2 processes, got {world_size}; pass --nproc 2..8")
        if not self.ops:
            raise HybridLMError(f"no op given; allowed: {', '.join(OPS)} (or 'all')")
        for op in self.ops:
            check_op(op)
        if self.dtype not in DTYPES:
            raise HybridLMError(f"unknown dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.trials < 1 or self.warmup < 0:
            raise HybridLMError(f"need --trials >= 1 and --warmup >= 0, got {self.trials} and {self.warmup}")
        if not self.sizes:
            raise HybridLMError("no message size given")
        itemsize = DTYPES[self.dtype].itemsize
        for op in self.ops:
            for size in self.sizes:
                valid_bytes(op, size, world_size, itemsize, strict=self.exact)
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CommsConfig:
        return cls(**json.loads(text))


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def run_comms(
    config: CommsConfig, nproc: int, progress: ProgressFn | None = None, timeout_s: float = 600
) -> list[Record]:
    """Run the benchmark; return rank 0's records ([] on other ranks when already under torchrun)."""
    if under_torchrun():
        from hybridlm.bench.comms_worker import run_rank

        config.validate(int(os.environ["WORLD_SIZE"]))
        return run_rank(config, progress)
    if not 2 <= nproc <= 64:
        raise HybridLMError(f"--nproc must be between 2 and 64 local processes, got {nproc}")
    config.validate(nproc)
    return launch(config, nproc, progress, timeout_s)


def launch(config: CommsConfig, nproc: int, progress: ProgressFn | None, timeout_s: float) -> list[Record]:
    """Start `nproc` ranks with torchrun; --standalone picks a free port, so parallel runs never clash."""
    with tempfile.TemporaryDirectory(prefix="hybridlm-comms-") as tmp:
        cfg_path, out_path = Path(tmp, "config.json"), Path(tmp, "records.json")
        cfg_path.write_text(config.to_json())
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "hybridlm.bench.comms_worker", "--config", str(cfg_path), "--out", str(out_path),
        ]  # fmt: skip
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too, but set so it does not warn
        # The ranks must import this very copy of hybridlm, installed or not.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stderr_tail = pump(proc, progress, timeout_s)
        if proc.returncode != 0 or not out_path.exists():
            raise RuntimeError(f"comms ranks failed (exit {proc.returncode}):\n{stderr_tail}")
        return read_json(out_path)



"""Scale-out, applied to the plain model from outside: data parallelism by DDP, ZeRO-1 (DDP +
ZeroRedundancyOptimizer) or FSDP2 (`distributed.mode`), combined on one device mesh with tensor parallelism
(`distributed.tp`, optionally `distributed.sequence_parallel`) and expert parallelism (`distributed.ep`);
see `hybridlm.parallel`.

Processes come from torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment) or `hybridlm train
--nproc N`; without them a run is a single process whatever the mode, so a checkpoint written by N ranks
resumes in one.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from hybridlm.errors import ConfigError
from hybridlm.parallel.mesh import ParallelDims, ParallelMesh
from hybridlm.train.config import DistributedConfig


@dataclass
class DistContext:
    mode: str = "none"  # the data-parallel mode in effect
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    pmesh: ParallelMesh = field(default_factory=ParallelMesh.single)

    @property
    def enabled(self) -> bool:
        """Launched on several processes."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def data_world(self) -> int:
        """Ranks that see different tokens (tensor-parallel ranks share theirs)."""
        return self.pmesh.dims.data

    @property
    def data_rank(self) -> int:
        return self.pmesh.data_rank


def init_distributed(cfg: DistributedConfig, device: torch.device) -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or "WORLD_SIZE" not in os.environ:
        if cfg.mode != "none" and "WORLD_SIZE" not in os.environ and not dist.is_initialized():
            raise ConfigError(
                f"distributed.mode {cfg.mode} runs several processes, and this is one: launch it with torchrun or "
                "`hybridlm train ... --nproc N`, or set distributed.mode none"
            )
        if cfg.tp > 1 or cfg.ep > 1:
            raise ConfigError(f"distributed.tp={cfg.tp} / ep={cfg.ep} need as many processes: launch with "
                              "torchrun or `hybridlm train ... --nproc N`")
        return DistContext(device=device)
    dims = ParallelDims(world, cfg.tp, cfg.ep, cfg.sequence_parallel)
    if dims.data > 1 and cfg.mode == "none":
        raise ConfigError(
            f"distributed.mode: launched on {world} processes ({dims.data} data-parallel ranks) but the mode is "
            "none; choose ddp, zero1 or fsdp2"
        )
    if cfg.mode == "zero1" and dims.sharded:
        raise ConfigError("distributed.mode zero1 runs with tp = ep = 1; with tensor or expert parallelism "
                          "choose fsdp2 or ddp")
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    pmesh = ParallelMesh.build(dims, device.type)
    return DistContext(cfg.mode, world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), device, pmesh)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()  # no rank may tear down the (sub)groups while another still uses them
        dist.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and not isinstance(model, torch.nn.ModuleList) else model


def no_sync(model: nn.Module, skip: bool):
    """Skip DDP's gradient all-reduce on micro-steps before the last one."""
    if skip and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def all_reduce_sum(values: list[float], ctx: DistContext, group=None) -> list[float]:
    """Sum over the ranks of `group` (default: every rank). The tensor is built on the training device:
    NCCL only reduces device tensors."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, group=group)
    return t.tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def grad_norm_(model: nn.Module, max_norm: float) -> float:
    """Clip gradients to `max_norm` (0: no clipping) and return the total norm before clipping (one process)."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return float(norm)

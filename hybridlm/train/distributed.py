"""Scale-out, applied to the plain model from outside: DDP, ZeRO-1 (DDP + ZeroRedundancyOptimizer) or FSDP2
(`fully_shard` on every layer, shared block and the root), chosen by `distributed.mode`.

Processes come from torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment); without them a run is a
single process whatever the mode, so a checkpoint written by N ranks resumes in one.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from hybridlm.train.config import DistributedConfig


@dataclass
class DistContext:
    mode: str = "none"  # the effective mode ("none" when not launched by torchrun)
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    mesh: object = None

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(cfg: DistributedConfig, device: torch.device) -> DistContext:
    if cfg.mode == "none" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from hybridlm.errors import ConfigError

        raise ConfigError(
            f"distributed.mode: launched on {os.environ['WORLD_SIZE']} processes but the mode is "
            "none; choose ddp, zero1 or fsdp2"
        )
    if cfg.mode != "none" and "WORLD_SIZE" not in os.environ and not dist.is_initialized():
        from hybridlm.errors import ConfigError

        raise ConfigError(
            f"distributed.mode {cfg.mode} runs several processes, and this is one: launch it with torchrun (e.g. "
            "torchrun --standalone --nproc_per_node 2 -m hybridlm train ...), or set distributed.mode none"
        )
    if cfg.mode == "none" or "WORLD_SIZE" not in os.environ:
        return DistContext()
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    ctx = DistContext(cfg.mode, dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)))
    if cfg.mode == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh

        ctx.mesh = init_device_mesh(device.type, (ctx.world,))
    return ctx


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """The model the loop calls forward/backward on (the plain model stays reachable as `unwrap(wrapped)`)."""
    if ctx.mode in ("ddp", "zero1"):
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if ctx.mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        # Each layer and shared block is its own FSDP unit; the per-call LoRA/projection modules are used
        # inside
        # the shared block's forward (not through their own), so they stay with the root unit.
        for group in (model.layers, model.shared or []):
            for sub in group:
                fully_shard(sub, mesh=ctx.mesh)
        fully_shard(model, mesh=ctx.mesh)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and not isinstance(model, torch.nn.ModuleList) else model


def no_sync(model: nn.Module, skip: bool):
    """Skip DDP's gradient all-reduce on micro-steps before the last one."""
    if skip and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def grad_norm_(model: nn.Module, max_norm: float) -> float:
    """Clip gradients to `max_norm` (0: no clipping) and return the total norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # DTensor under FSDP2
        norm = norm.full_tensor()
    return float(norm)

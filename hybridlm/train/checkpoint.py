"""Training checkpoints: atomic, complete, pruned to the last K.

    OUTPUT/checkpoints/step_00000100/
        meta.json     step, tokens, phase, run config, world size, format, bad-step streak
        rng.pt        torch (CPU and CUDA), numpy and python RNG states
        model.pt      plain state dict of the unwrapped model   | format "torch" (one process; ddp and zero1
        optim.pt      optimizer state (ZeRO-1: consolidated)     |   without tensor / expert parallelism)
        dcp/          torch.distributed.checkpoint of the weights and Adam state by single-process name and
                      shape (format "dcp": fsdp2, tensor or expert parallelism; `hybridlm.parallel.checkpoint`)

A checkpoint is written into `checkpoints/.tmp-step_N` and renamed into place with `os.replace` only when
every file is on disk, so a kill during a save leaves the previous checkpoints intact (and `.tmp-*` debris,
removed by the next save). The data position is the step itself (see `hybridlm.train.data`). Checkpoints
reshard: a DCP checkpoint written in any layout (N ranks, tp, ep, FSDP2) loads in any other, including one
process without a process group, and a "torch" checkpoint loads into a split model too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hybridlm.errors import CheckpointError
from hybridlm.parallel import checkpoint as pc
from hybridlm.parallel.model import ParallelModel
from hybridlm.train.distributed import DistContext, barrier, unwrap
from hybridlm.train.faults import maybe_fault

PREFIX = "step_"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save_file(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_format(ctx: DistContext) -> str:
    return "dcp" if ctx.enabled and (ctx.mode == "fsdp2" or ctx.pmesh.dims.sharded) else "torch"


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    model: nn.Module | ParallelModel,
    optimizer: torch.optim.Optimizer,
    meta: dict,
    ctx: DistContext,
    keep_last: int,
) -> Path:
    """Write checkpoint `step` (all ranks call this); returns its final path."""
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / f"{PREFIX}{step:08d}"
    tmp = ckpt_dir / f".tmp-{PREFIX}{step:08d}"
    if ctx.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for old in ckpt_dir.glob(".tmp-*"):
            shutil.rmtree(old, ignore_errors=True)
        tmp.mkdir()
    barrier(ctx)
    fmt = checkpoint_format(ctx)
    if fmt == "dcp":
        pc.save(tmp / "dcp", pc.state_view(model.model, model.layouts, optimizer, owned=model.owned_boxes))
    else:
        if ctx.mode == "zero1":
            optimizer.consolidate_state_dict(to=0)
        if ctx.is_main:
            target = model.model if isinstance(model, ParallelModel) else unwrap(model)
            _save_file(target.state_dict(), tmp / "model.pt")
            maybe_fault("save", step)
            _save_file(optimizer.state_dict(), tmp / "optim.pt")
    barrier(ctx)
    if ctx.is_main:
        _save_file(rng_state(), tmp / "rng.pt")
        dims = ctx.pmesh.dims
        meta = {**meta, "step": step, "format": fmt, "world": ctx.world, "mode": ctx.mode, "tp": dims.tp,
                "ep": dims.ep}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_dir)
        for old in list_checkpoints(ckpt_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(ctx)
    return final


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.glob(f"{PREFIX}*") if (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint, a `checkpoints/` folder or a run's output directory."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    for where in (path / "checkpoints", path):
        latest = latest_checkpoint(where)
        if latest is not None:
            return latest
    raise CheckpointError(
        f"no checkpoint found at {path} (expected a step_* directory or a run output directory)"
    )


def read_meta(path: Path) -> dict:
    return json.loads((Path(path) / "meta.json").read_text())


def load_checkpoint(
    path: Path, model: nn.Module | ParallelModel, optimizer: torch.optim.Optimizer | None, restore_rng: bool = True,
    no_dist: bool = False,
) -> dict:
    """Load weights (and optimizer state and RNG states) into a model wrapped for the current run, or a split
    `ParallelModel`, whatever layout wrote the checkpoint; returns meta. With `optimizer=None` only the weights
    are loaded (e.g. to start annealing from a phase-1 checkpoint). `no_dist`: load in this process alone
    (while a process group is up)."""
    path = Path(path)
    meta = read_meta(path)
    split = isinstance(model, ParallelModel)
    target = model.model if split else unwrap(model)
    layouts = model.layouts if split else pc.plain_layouts(target)
    if meta["format"] == "dcp":
        import torch.distributed as dist

        pc.load(path / "dcp", pc.state_view(target, layouts, optimizer),
                no_dist=no_dist or not (dist.is_available() and dist.is_initialized()))
    else:
        weights = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        if split:
            pc.load_full_state(target, layouts, weights)
        else:
            target.load_state_dict(weights)
        if optimizer is not None:
            state = torch.load(path / "optim.pt", map_location="cpu", weights_only=False)
            if split:
                _load_full_adam(target, layouts, optimizer, state, path)
            else:
                optimizer.load_state_dict(state)
    if restore_rng and optimizer is not None:
        set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return meta


@torch.no_grad()
def _load_full_adam(model: nn.Module, layouts, optimizer: torch.optim.Optimizer, state: dict, path: Path) -> None:
    """A one-process Adam state dict (states by parameter position, over the groups in order) into the shards
    of the same parameters, which this optimizer's groups list in the same order."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    saved = state["state"]
    if len(order) != sum(len(g["params"]) for g in state["param_groups"]):
        raise CheckpointError(f"{path}: its optimizer groups do not match this run's (different optim settings?)")
    pc.ensure_adam_state(optimizer)
    params = dict(model.named_parameters())
    for i, name in enumerate(order):
        if i not in saved:
            continue
        st = optimizer.state[params[name]]
        st["step"].copy_(saved[i]["step"])
        for k in pc.ADAM_STATE:
            local = pc.local_tensor(st[k])
            for offsets, sizes, where, _ in layouts[name].boxes():
                local[where] = saved[i][k][tuple(slice(o, o + s) for o, s in zip(offsets, sizes, strict=True))]

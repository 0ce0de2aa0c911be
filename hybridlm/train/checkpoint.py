"""Training checkpoints: atomic, complete, pruned to the last K.

    OUTPUT/checkpoints/step_00000100/
        meta.json     step, tokens, phase, run config, world size, format, bad-step streak
        rng.pt        torch (CPU and CUDA), numpy and python RNG states
        model.pt      plain state dict of the unwrapped model   | format "torch" (none, ddp, zero1)
        optim.pt      optimizer state (ZeRO-1: consolidated)     |
        dcp/          torch.distributed.checkpoint of {model, optim}  (format "dcp", fsdp2)

A checkpoint is written into `checkpoints/.tmp-step_N` and renamed into place with `os.replace` only when
every file is on disk, so a kill during a save leaves the previous checkpoints intact (and `.tmp-*` debris,
removed by the next save). The data position is the step itself (see `hybridlm.train.data`). A DCP checkpoint
written by N ranks loads in any number of processes, including one without a process group.
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


def _dcp_state(model: nn.Module, optimizer: torch.optim.Optimizer):
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    return {"model": msd, "optim": osd}


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    model: nn.Module,
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
    fmt = "dcp" if ctx.mode == "fsdp2" else "torch"
    if fmt == "dcp":
        import torch.distributed.checkpoint as dcp

        dcp.save(_dcp_state(model, optimizer), checkpoint_id=str(tmp / "dcp"))
    else:
        if ctx.mode == "zero1":
            optimizer.consolidate_state_dict(to=0)
        if ctx.is_main:
            _save_file(unwrap(model).state_dict(), tmp / "model.pt")
            maybe_fault("save", step)
            _save_file(optimizer.state_dict(), tmp / "optim.pt")
    barrier(ctx)
    if ctx.is_main:
        _save_file(rng_state(), tmp / "rng.pt")
        meta = {**meta, "step": step, "format": fmt, "world": ctx.world, "mode": ctx.mode}
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
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, restore_rng: bool = True
) -> dict:
    """Load weights (and optimizer state and RNG states) into a model wrapped for the current run; returns
    meta.
    With `optimizer=None` only the weights are loaded (e.g. to start annealing from a phase-1 checkpoint)."""
    path = Path(path)
    meta = read_meta(path)
    if meta["format"] == "dcp":
        import warnings

        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            get_model_state_dict,
            set_model_state_dict,
            set_state_dict,
        )

        with warnings.catch_warnings():  # loading in one process (no process group) is intended
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            if optimizer is None:
                state = {"model": get_model_state_dict(model)}
                dcp.load(state, checkpoint_id=str(path / "dcp"))
                set_model_state_dict(model, state["model"])
            else:
                state = _dcp_state(model, optimizer)
                dcp.load(state, checkpoint_id=str(path / "dcp"))
                set_state_dict(
                    model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
                )
    else:
        target = unwrap(model)
        if hasattr(target, "_fsdp_state") or _is_fsdp(target):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            sd = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
            set_model_state_dict(target, sd, options=StateDictOptions(full_state_dict=True))
            if optimizer is not None:
                raise CheckpointError(
                    f"{path}: a {meta['mode']} checkpoint resumes in mode none/ddp/zero1, not fsdp2"
                )
        else:
            target.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
            if optimizer is not None:
                optimizer.load_state_dict(
                    torch.load(path / "optim.pt", map_location="cpu", weights_only=False)
                )
    if restore_rng and optimizer is not None:
        set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return meta


def _is_fsdp(model: nn.Module) -> bool:
    return any(type(m).__name__.startswith("FSDP") for m in model.modules())

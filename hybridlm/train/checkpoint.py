"""Training checkpoints: atomic, complete, verified, pruned to the last K.

    OUTPUT/checkpoints/step_00000100/
        meta.json     step, tokens, phase, run config, world size, format, bad-step streak, and `files`: the size
                      and xxh3-128 digest of every other file; `checksum` covers meta.json's own content
        rng.pt        torch (CPU and CUDA), numpy and python RNG states
        model.pt      plain state dict of the unwrapped model   | format "torch" (one process; ddp and zero1
        optim.pt      optimizer state (ZeRO-1: consolidated)     |   without tensor / expert parallelism)
        dcp/          torch.distributed.checkpoint of the weights and Adam state by single-process name and
                      shape (format "dcp": fsdp2, tensor or expert parallelism; `hybridlm.parallel.checkpoint`)

A checkpoint is written into `checkpoints/.tmp-step_N` and renamed into place with `os.replace` only when
every file is on disk, so a kill during a save leaves the previous checkpoints intact (and `.tmp-*` debris,
removed by the next save). Before a checkpoint is used (`--resume`, `anneal --from`, `train.init_from`) every file is
checked against meta.json (`verify_checkpoint`): a truncated, empty, missing or flipped file, or a damaged
meta.json, makes it invalid, and resuming falls back to the newest valid checkpoint with a line saying which and
why (`newest_valid`). The data position is the step itself (see `hybridlm.train.data`). Checkpoints reshard: a DCP
checkpoint written in any layout (N ranks, tp, ep, FSDP2) loads in any other, including one process without a
process group, and a "torch" checkpoint loads into a split model too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
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
DIGEST = "xxh3_128"


def notice(message: str) -> None:
    """One line on stderr about a decision the run made on the user's behalf."""
    print(f"[hybridlm] {message}", file=sys.stderr, flush=True)


def file_digest(path: Path) -> str:
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _meta_checksum(meta: dict) -> str:
    import xxhash

    body = json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True)
    return xxhash.xxh3_128(body.encode("utf-8")).hexdigest()


def _manifest(directory: Path) -> dict:
    """Size and digest of every file of a checkpoint directory except meta.json (DCP shards included)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != "meta.json")
    return {
        p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, DIGEST: file_digest(p)} for p in files
    }


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
                "ep": dims.ep, "files": _manifest(tmp)}
        meta["checksum"] = _meta_checksum(meta)
        with open(tmp / "meta.json", "w") as fh:
            fh.write(json.dumps(meta, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_dir)
        # keep the last K up to this step; never the one just written, never a later step (not this run's)
        older = [p for p in list_checkpoints(ckpt_dir) if step_of(p) <= step]
        for old in older[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(ctx)
    return final


def step_of(path: Path) -> int:
    return int(Path(path).name[len(PREFIX) :])


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints (renamed into place, with a meta.json), oldest first; not yet verified."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [
        p
        for p in ckpt_dir.glob(f"{PREFIX}*")
        if p.name[len(PREFIX) :].isdigit() and (p / "meta.json").is_file()
    ]
    return sorted(found, key=step_of)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def verify_checkpoint(path: Path) -> str | None:
    """None if the checkpoint is complete and intact, else why not (one phrase naming the file). Checkpoints
    written before checksums existed (no `files` in meta.json) are checked for their files only."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        return "meta.json is missing"
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"meta.json is not valid JSON ({str(err).splitlines()[0][:80]})"
    if not isinstance(meta, dict) or not {"step", "format", "config"} <= set(meta):
        return "meta.json lacks step/format/config"
    if "checksum" in meta and meta["checksum"] != _meta_checksum(meta):
        return "meta.json does not match its checksum (damaged)"
    if "files" not in meta:  # older checkpoints: presence only
        needed = ["model.pt", "optim.pt", "rng.pt"] if meta["format"] == "torch" else ["rng.pt", "dcp"]
        missing = [n for n in needed if not (path / n).exists()]
        return f"{missing[0]} is missing" if missing else None
    for name, want in meta["files"].items():
        p = path / name
        if not p.is_file():
            return f"{name} is missing"
        size = p.stat().st_size
        if size != want["bytes"]:
            return f"{name} has {size:,} bytes, {want['bytes']:,} were written (truncated or replaced)"
        if file_digest(p) != want[DIGEST]:
            return f"{name} does not match its checksum (damaged)"
    return None


def newest_valid(ckpt_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies, and the newer ones skipped with their reasons. Step directories without
    a meta.json count as skipped too (a damaged or hand-edited directory, not an interrupted save: those are
    `.tmp-*`)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None, []
    dirs = [p for p in ckpt_dir.glob(f"{PREFIX}*") if p.is_dir() and p.name[len(PREFIX) :].isdigit()]
    skipped = []
    for p in sorted(dirs, key=step_of, reverse=True):
        why = verify_checkpoint(p)
        if why is None:
            return p, skipped
        skipped.append((p, why))
    return None, skipped


def find_checkpoint(path: str | Path) -> Path:
    """A verified checkpoint directory from a checkpoint, a `checkpoints/` folder or a run's output directory (its
    newest valid checkpoint; skipped ones are named in a line on stderr)."""
    path = Path(path)
    if (path / "meta.json").is_file() or path.name.startswith(PREFIX):
        why = verify_checkpoint(path)
        if why is not None:
            raise CheckpointError(f"checkpoint {path} is not usable: {why}")
        return path
    for where in (path / "checkpoints", path):
        found, skipped = newest_valid(where)
        if found is not None or skipped:
            if found is None:
                raise CheckpointError(
                    f"no valid checkpoint in {where}: "
                    + "; ".join(f"{p.name}: {why}" for p, why in skipped)
                )
            for p, why in skipped:
                notice(f"checkpoint {p.name} is not usable ({why}); using {found.name}")
            return found
    raise CheckpointError(
        f"no checkpoint found at {path} (expected a step_* directory or a run output directory)"
    )


def read_meta(path: Path) -> dict:
    try:
        return json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read meta.json ({str(err).splitlines()[0][:100]})") from None


def _load(path: Path, weights_only: bool = True):
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # truncated / damaged file: one line naming it
        raise CheckpointError(f"cannot load {path}: {type(err).__name__}: {str(err).splitlines()[0][:120]}") from None


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
        weights = _load(path / "model.pt")
        if split:
            pc.load_full_state(target, layouts, weights)
        else:
            try:
                target.load_state_dict(weights)
            except RuntimeError as err:  # another model's weights
                first = str(err).splitlines()[1:2] or [str(err)]
                raise CheckpointError(f"{path}: the weights do not fit this model ({first[0].strip()[:160]})") from None
        if optimizer is not None:
            state = _load(path / "optim.pt", weights_only=False)
            if split:
                _load_full_adam(target, layouts, optimizer, state, path)
            else:
                optimizer.load_state_dict(state)
    if restore_rng and optimizer is not None:
        set_rng_state(_load(path / "rng.pt", weights_only=False))
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

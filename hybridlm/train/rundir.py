"""A training run's output directory: who may write it, and what a new run may do with what it already holds.

- The directory is locked while the run writes it (`hybridlm.locks`): a second run gets one line naming the holder.
- Without `--resume`, a directory holding another run (checkpoints, summary.json, final/) is refused: its higher
  checkpoints would outlive the new run's under `keep_last`, and `--resume` or `anneal --from` would later pick
  them. `--overwrite` deletes that run's files first (only those: checkpoints/, metrics.jsonl, summary.json,
  final/, plots/, tensorboard/, config.yaml).
- With `--resume`, the newest checkpoint that verifies is used (`checkpoint.newest_valid`); newer invalid ones are
  set aside as `checkpoints/invalid-step_N` with a line saying why. The saved run config is compared with the new
  one before anything is written: a different model is refused; other changes (data, optimizer, schedule, batch,
  seed, ...) are listed and need `--allow-changes`; bookkeeping fields (steps, checkpoint/eval/log intervals, plots,
  export, threads, eval data, parallelism) may change freely. It prints "resuming from step N" or "no checkpoint:
  starting at step 0".
- Debris of a killed run (`checkpoints/.tmp-*`, `.final.*` from an interrupted export) is removed at the start.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridlm.errors import CheckpointError, ConfigError
from hybridlm.locks import output_lock
from hybridlm.train import checkpoint as ckpt
from hybridlm.train.config import RunConfig

RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "summary.json", "final", "plots", "tensorboard", "config.yaml")

# Fields that may differ on --resume without --allow-changes: they change when and what is recorded, not what
# is trained (the data order is a function of seed, phase and step; resume across world sizes is supported).
FREE_ON_RESUME = {
    "train.steps",
    "train.checkpoint_every",
    "train.keep_last",
    "train.eval_every",
    "train.log_every",
    "train.progress",
    "train.plots",
    "train.export",
    "train.threads",
    "train.peak_flops",
    "train.max_bad_steps",
    "train.init_from",
    "data.eval_path",
    "data.eval_batches",
    "distributed.mode",
    "distributed.backend",
    "distributed.tp",  # checkpoints reshard between layouts (hybridlm.parallel.checkpoint)
    "distributed.ep",
    "distributed.sequence_parallel",
}


@dataclass
class RunStart:
    """Where a run starts: the checkpoint to load (None: fresh) and its step; `config` replaces the run config when
    the resume keeps the original LR schedule's length (`schedule_note` says so)."""

    checkpoint: Path | None = None
    step: int = 0
    changes: list[str] = field(default_factory=list)
    set_aside: list[tuple[Path, str]] = field(default_factory=list)
    config: RunConfig | None = None
    schedule_note: str | None = None


def keep_schedule(old: RunConfig, new: RunConfig, step: int, replan: bool) -> tuple[RunConfig, str | None]:
    """A resume with another train.steps: by default the LR schedule keeps the length the run was planned with (the
    LR of every step already taken stays what it was, and after the old end it stays at the schedule's end); with
    `replan` it spans the new train.steps, and the LR at the resume step changes. Returns the config to run and a
    line saying which (None when nothing changed)."""
    from hybridlm.train.schedules import lr_at

    planned = old.schedule.total_steps or old.train.steps
    if replan and new.schedule.total_steps is not None:
        new = new.replace(**{"schedule.total_steps": None})
    elif not replan and new.schedule.total_steps is None and new.train.steps != planned:
        new = new.replace(**{"schedule.total_steps": planned})
    spans, steps, name = new.schedule.total_steps or new.train.steps, new.train.steps, new.schedule.name
    was, now = lr_at(step, old.schedule, old.train.steps), lr_at(step, new.schedule, steps)
    if spans == planned == steps:
        return new, None
    if spans != planned:
        return new, (f"train.steps {planned} -> {steps}: the {name} LR schedule is re-planned over {spans} steps "
                     f"(--replan-schedule); the LR at step {step} goes from {was:.3g} to {now:.3g}")
    end = lr_at(planned, new.schedule, steps)
    stretched = lr_at(step, new.replace(**{"schedule.total_steps": None}).schedule, steps)
    where = (f"LR {now:.3g} at step {step} as planned, {end:.3g} from step {planned} on" if step < planned
             else f"the LR stays at its end, {end:.3g}")
    return new, (f"train.steps {planned} -> {steps}: the {name} LR schedule keeps its {planned} steps ({where}); "
                 f"--replan-schedule spans it over {steps} steps instead (LR {stretched:.3g} at step {step})")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    a, b = _flatten(old, prefix), _flatten(new, prefix)
    return [f"{k} {_short(a.get(k))} -> {_short(b.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def config_changes(saved: dict, new: RunConfig) -> tuple[list[str], list[str]]:
    """(model changes, other changes that need --allow-changes) between a checkpoint's run config and a new one."""
    try:
        old = RunConfig.from_dict(saved)
        old_model = old.model_config_obj().to_dict()
        old_rest = old.to_dict()
    except (ConfigError, TypeError, ValueError):  # a config from another version: compare what is there
        old_model, old_rest = saved.get("model", {}), dict(saved)
    model = _diff(old_model, new.model_config_obj().to_dict(), "model.")
    rest = {k: v for k, v in old_rest.items() if k != "model"}
    new_rest = {k: v for k, v in new.to_dict().items() if k != "model"}
    other = [c for c in _diff(rest, new_rest) if c.split()[0] not in FREE_ON_RESUME]
    return model, other


def _holds_a_run(out: Path) -> list[str]:
    found = []
    steps = sorted((out / "checkpoints").glob(f"{ckpt.PREFIX}*")) if (out / "checkpoints").is_dir() else []
    if steps:
        found.append(f"checkpoints {steps[0].name}..{steps[-1].name}" if len(steps) > 1 else steps[0].name)
    found += [name for name in ("summary.json", "final") if (out / name).exists()]
    return found


def plan_start(
    out: Path, cfg: RunConfig, resume: bool, overwrite: bool, allow_changes: bool, replan_schedule: bool = False
) -> RunStart:
    """Decide where the run starts, or refuse with one line; reads the directory, writes nothing."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in OUTPUT and --overwrite deletes it: give one of them")
    if overwrite:
        return RunStart()
    if not resume:
        held = _holds_a_run(out)
        if held:
            raise ConfigError(
                f"{out} holds another run ({', '.join(held)}); pass --resume to continue it, or --overwrite to "
                "delete it and start over, or choose another output directory"
            )
        return RunStart()
    found, skipped = ckpt.newest_valid(out / "checkpoints")
    if found is None:
        if skipped:
            raise CheckpointError(
                f"--resume: no valid checkpoint in {out / 'checkpoints'} ("
                + "; ".join(f"{p.name}: {why}" for p, why in skipped)
                + "); --overwrite starts over"
            )
        return RunStart()
    meta = ckpt.read_meta(found)
    try:
        saved = RunConfig.from_dict(meta.get("config", {}))
    except (ConfigError, TypeError, ValueError):  # a config from another version: compared field by field below
        saved = None
    run_cfg, note = keep_schedule(saved, cfg, int(meta["step"]), replan_schedule) if saved else (cfg, None)
    model, other = config_changes(meta.get("config", {}), run_cfg)
    other = [c for c in other if not c.startswith("schedule.total_steps ")]  # kept or re-planned above
    if model:
        raise ConfigError(
            f"--resume: the model differs from the checkpoint {found.name}'s ({'; '.join(model)}); a checkpoint "
            "resumes only the model it was trained with (train.init_from starts a new run from its weights)"
        )
    if other and not allow_changes:
        raise ConfigError(
            f"--resume: the run config differs from the checkpoint {found.name}'s ({'; '.join(other)}); pass "
            "--allow-changes to resume with these changes"
        )
    if cfg.train.steps < meta["step"]:
        raise ConfigError(
            f"--resume: train.steps={cfg.train.steps} is below the checkpoint's step {meta['step']}; set "
            f"train.steps >= {meta['step']} to continue the run"
        )
    return RunStart(found, int(meta["step"]), other, skipped, run_cfg, note)


def _set_aside(path: Path) -> Path:
    target = path.with_name(f"invalid-{path.name}")
    n = 1
    while target.exists():
        target, n = path.with_name(f"invalid-{path.name}.{n}"), n + 1
    path.rename(target)
    return target


def _remove_debris(out: Path) -> None:
    for p in list((out / "checkpoints").glob(".tmp-*")) + list(out.glob(".final.*")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def open_run(out: Path, cfg: RunConfig, resume: bool, overwrite: bool, allow_changes: bool, ctx,
             replan_schedule: bool = False):
    """Lock `out` (rank 0), decide the start (`plan_start`, on every rank), clean up, print the start line, and
    yield the `RunStart`; the lock is held until the block ends."""
    from hybridlm.train.distributed import barrier

    out = Path(out)
    lock = output_lock(out, "hybridlm train") if ctx.is_main else contextlib.nullcontext()
    with lock:
        start = plan_start(out, cfg, resume, overwrite, allow_changes, replan_schedule)
        barrier(ctx)  # every rank has read the directory before rank 0 changes it
        if ctx.is_main:
            _remove_debris(out)
            if overwrite:
                removed = [n for n in RUN_OUTPUTS if (out / n).exists()]
                for name in removed:
                    if (out / name).is_dir():
                        shutil.rmtree(out / name)
                    else:
                        (out / name).unlink()
                if removed:
                    ckpt.notice(f"--overwrite: deleted the earlier run's {', '.join(removed)}")
            for p, why in start.set_aside:
                ckpt.notice(f"checkpoint {p.name} is not usable ({why}); set aside as {_set_aside(p).name}")
            if resume:
                if start.checkpoint is None:
                    ckpt.notice("no checkpoint: starting at step 0")
                else:
                    ckpt.notice(
                        f"resuming from step {start.step} ({start.checkpoint.name})"
                        + (f" with changes: {'; '.join(start.changes)}" if start.changes else "")
                    )
                    if start.schedule_note:
                        ckpt.notice(start.schedule_note)
        barrier(ctx)
        yield start


def last_loss(out: Path, step: int) -> float:
    """The loss logged at `step` by the run being resumed (NaN if none), so a resumed run that has no steps left
    still reports its final loss."""
    from hybridlm.train.metrics import read_metrics

    for r in reversed(read_metrics(Path(out) / "metrics.jsonl")):
        if r.get("step") == step and not r.get("skipped"):
            return float(r["loss"])
    return math.nan

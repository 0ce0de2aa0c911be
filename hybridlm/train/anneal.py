"""Annealing (phase 2): continue a phase-1 checkpoint on high-quality data mixed with replay of the phase-1
sources, with the LR re-warmed to a fraction of the phase-1 maximum and decayed to zero.

Defaults follow the cookbook (see the architecture notes, "Annealing recipe"): 60% replay / 40% annealing
data, peak LR 0.75 x the phase-1 maximum, linear warmup then cosine decay to 0, annealing-phase tokens about
10% of the phase-1 tokens. The default annealing data (synth://hq) is used only when phase 1 trained on the
synthetic corpus (its tokenizer); otherwise `--data` is required, and every source must share phase 1's tokenizer.
It warns when the annealing sources would be read more than `max_epochs` (2) times, or when the annealing phase's
tokens exceed `max_token_fraction` (15%) of the phase-1 tokens. The blend counts from the start of the phase
(`train.phase = 1` seeds its own data order), and every field of the produced run config can be overridden like
any run (`--train.batch_size 32`).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from hybridlm.errors import ConfigError
from hybridlm.locate import locate
from hybridlm.train.config import RunConfig, apply_overrides

REPLAY_FRACTION = 0.6
LR_FRACTION = 0.75
STEPS_FRACTION = 0.1
MAX_EPOCHS = 2.0
MAX_TOKEN_FRACTION = 0.15


class AnnealWarning(UserWarning):
    """The annealing plan departs from the cookbook's recommendations."""


def anneal_config(
    from_checkpoint: str | Path,
    data: list[str | dict] | None = None,
    replay_fraction: float = REPLAY_FRACTION,
    lr_fraction: float = LR_FRACTION,
    steps: int | None = None,
    warmup_steps: int | None = None,
    decay_shape: str = "cosine",
    overrides: dict[str, Any] | None = None,
) -> tuple[RunConfig, dict]:
    """The phase-2 run config built from a phase-1 training run (a checkpoint, a run directory or its final/ export:
    `hybridlm.locate`), and facts about the plan (phase-1 tokens, annealing tokens, epochs of the annealing data)
    with the cookbook warnings it triggers."""
    if not 0 <= replay_fraction < 1:
        raise ConfigError(f"replay_fraction must be in [0, 1), got {replay_fraction}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"steps must be a whole number >= 1 (None: {STEPS_FRACTION:.0%} of phase 1's), got {steps!r}")
    if warmup_steps is not None and (not isinstance(warmup_steps, int) or warmup_steps < 0):
        raise ConfigError(f"warmup_steps must be a whole number >= 0, got {warmup_steps!r}")
    phase1 = locate(from_checkpoint).phase_one()
    p1 = RunConfig.from_dict(phase1.config)
    if not data:
        if not all(s.path.startswith("synth://") for s in p1.data.sources):
            raise ConfigError(
                "anneal: give --data (high-quality shards packed with the phase-1 tokenizer); the default, "
                f"synth://hq, has the synthetic corpus's tokenizer, and phase 1 trained on "
                f"{', '.join(s.path for s in p1.data.sources)}"
            )
        data = ["synth://hq"]
    sources = [s if isinstance(s, dict) else {"path": str(s), "weight": 1.0} for s in data]
    new_total = sum(float(s.get("weight", 1.0)) for s in sources)
    p1_weights = p1.data.curriculum[-1].weights if p1.data.curriculum else [s.weight for s in p1.data.sources]
    p1_total = sum(p1_weights)
    blend = [
        {"path": s.path, "weight": replay_fraction * w / p1_total}
        for s, w in zip(p1.data.sources, p1_weights, strict=True)
        if w > 0 and replay_fraction > 0
    ]
    blend += [
        {"path": s["path"], "weight": (1 - replay_fraction) * float(s.get("weight", 1.0)) / new_total}
        for s in sources
    ]
    n_steps = steps or max(1, math.ceil(STEPS_FRACTION * phase1.step))
    cfg = p1.to_dict()
    cfg["data"] = {**cfg["data"], "sources": blend, "curriculum": []}
    cfg["schedule"] = {
        **cfg["schedule"],
        "name": "anneal",
        "lr": phase1.lr_max or p1.schedule.lr,
        "peak_fraction": lr_fraction,
        "decay_shape": decay_shape,
        "min_lr": 0.0,
        "warmup_steps": warmup_steps if warmup_steps is not None else max(1, n_steps // 10),
    }
    cfg["train"] = {
        **cfg["train"],
        "steps": n_steps,
        "phase": p1.train.phase + 1,
        "init_from": str(phase1.weights),
        "checkpoint_every": min(p1.train.checkpoint_every, n_steps),
        "eval_every": min(p1.train.eval_every, n_steps),
    }
    run = RunConfig.from_dict(apply_overrides(cfg, overrides or {}))
    return run, check_plan(run, phase1.tokens, n_new=len(sources))


def check_plan(
    run: RunConfig,
    phase1_tokens: int,
    n_new: int,
    max_epochs: float = MAX_EPOCHS,
    max_token_fraction: float = MAX_TOKEN_FRACTION,
) -> dict:
    """Epochs of each annealing source (the last `n_new` sources) and the annealing/phase-1 token ratio;
    issues an `AnnealWarning` for each recommendation exceeded."""
    from hybridlm.train.data import BatchStream

    stream = BatchStream(run.data, run.train)
    drawn = stream.source_tokens(run.train.steps)
    total = run.train.steps * run.train.batch_size * run.data.seq_len
    info = {
        "phase1_tokens": phase1_tokens,
        "anneal_tokens": total,
        "token_fraction": total / phase1_tokens if phase1_tokens else math.inf,
        "epochs": {},
        "warnings": [],
    }
    first_new = len(run.data.sources) - n_new
    for k in range(first_new, len(run.data.sources)):
        epochs = float(drawn[k]) / max(1, stream.datasets[k].total_tokens)
        info["epochs"][run.data.sources[k].path] = epochs
        if epochs > max_epochs:
            info["warnings"].append(
                f"annealing data {run.data.sources[k].path} would be repeated {epochs:.1f} "
                f"epochs (> {max_epochs:g}; more than 2 epochs help little)"
            )
    if info["token_fraction"] > max_token_fraction:
        info["warnings"].append(
            f"the annealing phase has {total:,} tokens, {info['token_fraction']:.0%} of the "
            f"phase-1 {phase1_tokens:,} (> {max_token_fraction:.0%} recommended)"
        )
    for w in info["warnings"]:
        warnings.warn(w, AnnealWarning, stacklevel=3)
    return info


def run_anneal(
    from_checkpoint: str | Path,
    output_dir: str | Path,
    data: list[str | dict] | None = None,
    replay_fraction: float = REPLAY_FRACTION,
    lr_fraction: float = LR_FRACTION,
    steps: int | None = None,
    warmup_steps: int | None = None,
    decay_shape: str = "cosine",
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool | None = None,
    overwrite: bool = False,
    allow_changes: bool = False,
    replan_schedule: bool = False,
) -> dict:
    """Run phase 2 (see `anneal_config`); returns `run_training`'s summary plus `plan` (tokens, epochs,
    warnings). `resume`, `overwrite`, `allow_changes` and `replan_schedule` act as for `run_training`."""
    from hybridlm.train.loop import run_training

    if resume and (Path(output_dir) / "config.yaml").is_file() and data is None and not overrides:
        run = RunConfig.from_yaml(Path(output_dir) / "config.yaml")
        plan = {"resumed": True, "warnings": []}
    else:
        run, plan = anneal_config(
            from_checkpoint, data, replay_fraction, lr_fraction, steps, warmup_steps, decay_shape, overrides
        )
    result = run_training(
        run, output_dir, resume=resume, progress=progress, overwrite=overwrite, allow_changes=allow_changes,
        replan_schedule=replan_schedule,
    )
    result["plan"] = plan
    return result

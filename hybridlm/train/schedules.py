"""Learning-rate schedules: the LR of optimizer step `step` (0-based) as one pure function of the step.

All schedules share one form: a linear warmup over `warmup_steps` (step s gets peak * (s + 1) / warmup), then
lr = min_lr + (peak - min_lr) * f(q), where f falls from 1 to 0 as the decay progress q goes from 0 to 1:

    constant   f = 1
    linear     q = (s - W) / (T - W),  f = 1 - q
    cosine     q = (s - W) / (T - W),  f = (1 + cos(pi q)) / 2
    wsd        stable (f = 1) until the last `decay_fraction` of the T steps, then that decay in `decay_shape`
    anneal     peak = lr * peak_fraction (phase-1 max LR times ~0.75), decay in `decay_shape` to min_lr (0)

Decay shapes: linear 1 - q; cosine (1 + cos(pi q)) / 2; 1-sqrt 1 - sqrt(q); exponential (exp(-k q) - exp(-k))
/ (1 - exp(-k)) with k = 5 (falls to ~1/e of the way by q = 0.2 and exactly to 0 at q = 1).
"""

from __future__ import annotations

import math

from hybridlm.train.config import ScheduleConfig

EXP_RATE = 5.0


def decay_shape(shape: str, q: float) -> float:
    """The fraction of (peak - min_lr) left at decay progress q in [0, 1]."""
    q = min(max(q, 0.0), 1.0)
    if shape == "linear":
        return 1.0 - q
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * q))
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(q)
    if shape == "exponential":
        return (math.exp(-EXP_RATE * q) - math.exp(-EXP_RATE)) / (1.0 - math.exp(-EXP_RATE))
    raise ValueError(f"unknown decay shape {shape!r}")


def lr_at(step: int, cfg: ScheduleConfig, total_steps: int) -> float:
    """The LR of optimizer step `step` of a `total_steps` run; a schedule planned for another length
    (`cfg.total_steps`, kept when a run is resumed for more steps) spans that length, then stays at its end."""
    peak = cfg.lr * (cfg.peak_fraction if cfg.name == "anneal" else 1.0)
    w, t = cfg.warmup_steps, cfg.total_steps or total_steps
    if step < w:
        return peak * (step + 1) / w
    if cfg.name == "constant":
        return peak
    if cfg.name in ("linear", "cosine"):
        q, shape = (step - w) / max(1, t - w), cfg.name
    elif cfg.name == "wsd":
        start = max(w, t - round(cfg.decay_fraction * t))
        if step < start:
            return peak
        q, shape = (step - start) / max(1, t - start), cfg.decay_shape
    elif cfg.name == "anneal":
        q, shape = (step - w) / max(1, t - w), cfg.decay_shape
    else:
        raise ValueError(f"unknown schedule {cfg.name!r}")
    return cfg.min_lr + (peak - cfg.min_lr) * decay_shape(shape, q)

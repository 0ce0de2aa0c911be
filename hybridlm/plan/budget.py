"""Compute budgets: FLOPs from accelerators x count x days, tokens a model can afford, and
Chinchilla-style (size, tokens) pairs.

Assumptions, stated once:
- A budget is peak dense throughput x GPUs x seconds x MFU (model FLOPs utilization, default 0.4).
- Tokens affordable for a given model use its exact `flops(...).train_per_token_with_recompute`.
- The Chinchilla-style pairs use C = 6 N D (training FLOPs ~ 6 x parameters per token, ignoring the
  sequence-mixing cores) and the compute-optimal ratio D = 20 N (Hoffmann et al., 2022); for MoE, N is
  the active parameter count.
"""

from __future__ import annotations

import math

from hybridlm.config import ModelConfig
from hybridlm.errors import ConfigError
from hybridlm.plan.flops import flops
from hybridlm.plan.params import params

SECONDS_PER_DAY = 86400
TOKENS_PER_PARAM = 20.0
ACCELERATORS = {  # dense bf16 peak FLOP/s per GPU (vendor datasheets, without sparsity)
    "a100": 312e12,
    "h100": 989e12,
    "h200": 989e12,
    "b200": 2250e12,
    "mi300x": 1307e12,
}


def peak_flops(accelerator: str | float) -> float:
    if isinstance(accelerator, (int, float)):
        value = float(accelerator)
    elif accelerator.lower() in ACCELERATORS:
        value = ACCELERATORS[accelerator.lower()]
    else:
        try:
            value = float(accelerator)
        except ValueError:
            raise ConfigError(
                f"unknown accelerator {accelerator!r}; known: {', '.join(ACCELERATORS)} "
                "(or give peak FLOP/s as a number)"
            ) from None
    if value <= 0:
        raise ConfigError(f"peak FLOP/s must be > 0, got {value}")
    return value


def flop_budget(accelerator: str | float, gpus: int, days: float, mfu: float = 0.4) -> float:
    """FLOPs delivered: peak x gpus x days x 86400 x mfu."""
    if gpus < 1:
        raise ConfigError(f"gpus must be >= 1, got {gpus}")
    if days <= 0:
        raise ConfigError(f"days must be > 0, got {days}")
    if not 0 < mfu <= 1:
        raise ConfigError(f"mfu must be in (0, 1], got {mfu}")
    return peak_flops(accelerator) * gpus * days * SECONDS_PER_DAY * mfu


def tokens_affordable(cfg: ModelConfig, budget: float, seq_len: int, recompute: str = "none") -> float:
    """Training tokens that `budget` FLOPs buy for this model at this sequence length."""
    if budget <= 0:
        raise ConfigError(f"budget must be > 0 FLOPs, got {budget}")
    return budget / flops(cfg, seq_len, recompute=recompute).train_per_token_with_recompute


def training_days(
    cfg: ModelConfig,
    tokens: float,
    seq_len: int,
    accelerator: str | float,
    gpus: int,
    mfu: float = 0.4,
    recompute: str = "none",
) -> float:
    """Wall-clock days to train on `tokens` tokens."""
    total = flops(cfg, seq_len, recompute=recompute).per_run(tokens)["train_with_recompute"]
    return total / flop_budget(accelerator, gpus, 1.0, mfu)


def chinchilla_optimal(budget: float, tokens_per_param: float = TOKENS_PER_PARAM) -> dict[str, float]:
    """Compute-optimal (N, D) with C = 6 N D and D = tokens_per_param x N."""
    if budget <= 0:
        raise ConfigError(f"budget must be > 0 FLOPs, got {budget}")
    n = math.sqrt(budget / (6 * tokens_per_param))
    return {"params": n, "tokens": tokens_per_param * n, "flops": budget}


def size_token_pairs(budget: float, sizes: list[float] | None = None) -> list[dict[str, float]]:
    """(N, D = C / 6N) pairs that exhaust `budget`, for a range of sizes around the optimum."""
    opt = chinchilla_optimal(budget)["params"]
    sizes = sizes or [opt * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)]
    out = []
    for n in sizes:
        d = budget / (6 * n)
        out.append({"params": n, "tokens": d, "tokens_per_param": d / n})
    return out


def model_budget(cfg: ModelConfig, budget: float, seq_len: int, recompute: str = "none") -> dict[str, float]:
    """What `budget` buys this model: tokens, tokens per (active) parameter, and the Chinchilla optimum."""
    tokens = tokens_affordable(cfg, budget, seq_len, recompute)
    active = params(cfg).active
    return {
        "flops": budget,
        "tokens": tokens,
        "tokens_per_param": tokens / active,
        "chinchilla_tokens": TOKENS_PER_PARAM * active,
        "chinchilla_optimal_params": chinchilla_optimal(budget)["params"],
    }

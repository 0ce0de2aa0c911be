"""Tokens/s and model FLOPs utilization (MFU).

FLOPs per token come from the planner (`hybridlm.plan.flops(cfg, seq_len=S).train_per_token`), called here and
nowhere else; without the planner MFU is reported as null. The peak is `train.peak_flops` when set, else a
table entry for known GPUs, else (CPU) measured once per process by a small fp32 matmul probe.
"""

from __future__ import annotations

import time
from functools import cache

import torch

from hybridlm.config import ModelConfig

_GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def train_flops_per_token(cfg: ModelConfig, seq_len: int, device_type: str = "cuda") -> float:
    from hybridlm.plan import flops

    return float(flops(cfg, seq_len=seq_len, device=device_type).train_per_token)


@cache
def probe_cpu_flops(n: int = 512, repeats: int = 8, threads: int = 0) -> float:
    """Achievable fp32 matmul FLOP/s on this CPU with the current thread count (best of a few timings)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def peak_flops(device: torch.device, setting: float | None) -> float:
    if setting:
        return float(setting)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in _GPU_PEAK_BF16.items():
            if key in name:
                return value
    return probe_cpu_flops(threads=torch.get_num_threads())


class Throughput:
    """Tokens/s over the steps after the first one (the first step, with its warm-up, is excluded)."""

    def __init__(self, flops_per_token: float | None, peak: float | None):
        self.flops_per_token, self.peak = flops_per_token, peak
        self._t0: float | None = None
        self._tokens = 0

    def update(self, tokens: int) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()
            return
        self._tokens += tokens

    @property
    def tokens_per_s(self) -> float | None:
        if self._t0 is None or not self._tokens:
            return None
        return self._tokens / max(time.perf_counter() - self._t0, 1e-9)

    @property
    def mfu(self) -> float | None:
        tps = self.tokens_per_s
        if tps is None or self.flops_per_token is None or not self.peak:
            return None
        return tps * self.flops_per_token / self.peak

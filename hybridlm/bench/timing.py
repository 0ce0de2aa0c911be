"""How every benchmark measures time: warmup, then repeated trials, each timed on its own.

On CUDA a trial is bracketed by CUDA events (the host only enqueues kernels, so wall-clock time would
measure the launch); on CPU by `perf_counter`, after synchronising so no earlier work leaks in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for all queued work on `device` (a no-op on CPU, where torch ops are synchronous)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class StopWatch:
    """Times one region: `start()`, run the work, `stop()` returns seconds."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        if self._cuda:
            self._begin = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        synchronize(self.device)
        if self._cuda:
            self._begin.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self._cuda:
            self._end.record()
            self._end.synchronize()
            return self._begin.elapsed_time(self._end) / 1e3
        synchronize(self.device)
        return time.perf_counter() - self._t0


def time_trials(
    fn: Callable[[], object],
    *,
    warmup: int,
    trials: int,
    device: torch.device | str = "cpu",
    setup: Callable[[], object] | None = None,
    after: Callable[[], object] | None = None,
) -> list[float]:
    """Run `fn` `warmup` times untimed, then `trials` times timed; return the per-trial seconds.

    `setup` runs before every call and `after` after every timed call, both outside the timed
    region (refilling buffers and a barrier before; checking the result after).
    """
    if trials < 1 or warmup < 0:
        raise ValueError(f"need trials >= 1 and warmup >= 0, got trials={trials}, warmup={warmup}")
    watch = StopWatch(device)
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    samples = []
    for _ in range(trials):
        if setup is not None:
            setup()
        watch.start()
        fn()
        samples.append(watch.stop())
        if after is not None:
            after()
    return samples


def warm_up(device: torch.device | str = "cpu", seconds: float = 0.3) -> None:
    """Busy the device with matmuls for `seconds` before measuring anything: a fresh process is
    slow for a while (thread pools start, pages fault in, clocks ramp up, CUDA initialises)."""
    a = torch.randn(512, 512, device=device)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)
        synchronize(device)


@dataclass(frozen=True)
class Stats:
    """Summary of timing samples in seconds."""

    median: float
    min: float
    max: float
    p99: float
    n: int

    @classmethod
    def of(cls, samples: list[float] | np.ndarray) -> Stats:
        a = np.asarray(samples, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no timing samples")
        return cls(
            median=float(np.median(a)),
            min=float(a.min()),
            max=float(a.max()),
            p99=float(np.percentile(a, 99)),
            n=int(a.size),
        )

"""Deterministic weighted blending of data sources (the rule of Megatron's BlendedDataset).

Sample i goes to the source furthest below its target: with w_k(j) the normalized weight of source k at sample
j (constant, or a curriculum that changes with the step), the target of source k after i + 1 samples is T_k(i)
= sum_{j <= i} w_k(j), and sample i goes to argmax_k T_k(i) - n_k (ties to the lower k), where n_k counts the
samples source k already got. So the realized counts stay within about one sample of the targets at every
point, and the assignment is a pure function of the sample index (no RNG, nothing to save for resume).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def curriculum_weights(points: Sequence[tuple[int, Sequence[float]]]) -> Callable[[int], np.ndarray]:
    """Weights at an optimizer step: linear interpolation between (step, weights) points, constant outside."""
    steps = np.array([p[0] for p in points], dtype=np.float64)
    table = np.array([list(p[1]) for p in points], dtype=np.float64)

    def at(step: int) -> np.ndarray:
        if step <= steps[0]:
            return table[0]
        if step >= steps[-1]:
            return table[-1]
        j = int(np.searchsorted(steps, step, side="right")) - 1
        t = (step - steps[j]) / (steps[j + 1] - steps[j])
        return (1 - t) * table[j] + t * table[j + 1]

    return at


class Blend:
    """`assign(i)` -> (source, index within that source) of global sample i.

    `weights` is a fixed list, or a function of the optimizer step (samples_per_step samples per step).
    Assignments are computed once in order and cached, so any index costs amortized O(1)."""

    def __init__(self, weights: Sequence[float] | Callable[[int], np.ndarray], samples_per_step: int = 1):
        if callable(weights):
            self._weights_at = weights
            self.n_sources = len(weights(0))
        else:
            fixed = np.asarray(weights, dtype=np.float64)
            self._weights_at = lambda step: fixed
            self.n_sources = len(fixed)
        self.samples_per_step = samples_per_step
        self._source = np.zeros(0, dtype=np.int64)
        self._local = np.zeros(0, dtype=np.int64)
        self._target = np.zeros(self.n_sources)
        self._count = np.zeros(self.n_sources, dtype=np.int64)

    def _extend(self, n: int) -> None:
        start = len(self._source)
        if n <= start:
            return
        n = max(n, 2 * start, 1024)
        src = np.empty(n - start, dtype=np.int64)
        loc = np.empty(n - start, dtype=np.int64)
        target, count = self._target, self._count
        w_step, w = -1, None
        for i in range(start, n):
            step = i // self.samples_per_step
            if step != w_step:
                raw = np.asarray(self._weights_at(step), dtype=np.float64)
                w, w_step = raw / raw.sum(), step
            target += w
            k = int(np.argmax(target - count))
            src[i - start] = k
            loc[i - start] = count[k]
            count[k] += 1
        self._source = np.concatenate([self._source, src])
        self._local = np.concatenate([self._local, loc])

    def assign(self, i: int) -> tuple[int, int]:
        self._extend(i + 1)
        return int(self._source[i]), int(self._local[i])

    def sources(self, n: int) -> np.ndarray:
        """The source of each of the first n samples."""
        self._extend(n)
        return self._source[:n].copy()

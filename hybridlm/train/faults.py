"""Fault injection for tests. `HYBRIDLM_FAULT=point[@step][:action]` makes the run die (action `kill`, the
default: exit code 9 with no cleanup) or hang (`hang`) when it reaches `point` (`save`: in the middle of
writing a checkpoint, after the model file), optionally only at checkpoint/step `step`.
(`HYBRIDLM_FAULT=shard:hang` makes a data-stage worker hang in its shard: see `hybridlm.data.engine`.)
`HYBRIDLM_FAULT_NAN=3,4` makes the loss of those steps (1-based) non-finite. Unset in normal use: each check
is one environment look-up."""

from __future__ import annotations

import os
import time


def maybe_fault(point: str, step: int | None = None) -> None:
    spec = os.environ.get("HYBRIDLM_FAULT")
    if not spec:
        return
    where, _, action = spec.partition(":")
    name, _, at = where.partition("@")
    if name != point or (at and step is not None and int(at) != step):
        return
    if action == "hang":
        time.sleep(3600)
    os._exit(9)


def nan_step(step: int) -> bool:
    spec = os.environ.get("HYBRIDLM_FAULT_NAN")
    return bool(spec) and str(step) in spec.split(",")

"""Fault injection for tests: `HYBRIDLM_FAULT=point[:action]` makes the run die (action `kill`, the default) or
hang (`hang`) when it reaches `point` (e.g. `save` = in the middle of writing a checkpoint), and
`HYBRIDLM_FAULT_NAN=3,4` makes the loss of those steps non-finite. Unset in normal use: each check is one
dictionary look-up."""

from __future__ import annotations

import os
import time


def maybe_fault(point: str) -> None:
    spec = os.environ.get("HYBRIDLM_FAULT")
    if not spec:
        return
    name, _, action = spec.partition(":")
    if name != point:
        return
    if action == "hang":
        time.sleep(3600)
    os._exit(9)


def nan_step(step: int) -> bool:
    spec = os.environ.get("HYBRIDLM_FAULT_NAN")
    return bool(spec) and str(step) in spec.split(",")

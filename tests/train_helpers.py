"""Shared bits of the training tests: a tiny, fast run config on the synthetic corpus."""

from __future__ import annotations

import json
from pathlib import Path


def tiny_config(**overrides) -> dict:
    cfg = {
        "model": {"preset": "zamba2-tiny"},
        "data": {"sources": [{"path": "synth://web", "weight": 1.0}], "seq_len": 32, "eval_path": None},
        "schedule": {"name": "cosine", "lr": 3e-3, "warmup_steps": 2},
        "train": {
            "steps": 6,
            "batch_size": 4,
            "checkpoint_every": 3,
            "eval_every": 1000,
            "threads": 1,
            "progress": False,
            "plots": False,
            "export": False,
        },
    }
    from hybridlm.train.config import apply_overrides

    return apply_overrides(cfg, overrides)


def losses(out_dir) -> dict[int, float]:
    path = Path(out_dir) / "metrics.jsonl"
    return {r["step"]: r["loss"] for r in map(json.loads, path.read_text().splitlines())}

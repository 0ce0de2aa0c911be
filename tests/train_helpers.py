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


def every_kind_config(ngroups: int = 1, **overrides) -> dict:
    """A tiny run whose model has every layer kind (Mamba2, Mamba1 with Jamba's inner norms, a Zamba shared
    block with LoRA on q/k/v and the MLP, MoE top-2, attention with GQA, a gated MLP, sliding-window
    attention), sized so tensor parallelism 2 and expert parallelism 2 split all of it."""
    model = {
        "name": "every-kind", "d_model": 32, "layers": "m r g m e a f m w", "vocab_size": 512,
        "mamba2": {"d_state": 16, "headdim": 8, "ngroups": ngroups, "chunk_size": 8},
        "mamba1": {"d_state": 8, "inner_norms": True},
        "attention": {"n_heads": 4, "n_kv_heads": 2, "window": 8},
        "mlp": {"gated": True, "activation": "silu"},
        "moe": {"n_experts": 4, "top_k": 2, "ffn_dim": 32},
        "shared": {"n_heads": 4, "lora_rank": 4, "lora_qkv": True, "lora_mlp": True, "ffn_dim": 64},
    }
    cfg = tiny_config(**{"data.seq_len": 16, "train.steps": 10, "train.checkpoint_every": 5,
                         "schedule.name": "constant", **overrides})
    cfg["model"] = model
    return cfg

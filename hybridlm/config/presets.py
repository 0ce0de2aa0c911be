"""Published architectures and tiny models for tests and demos.

Each published preset's parameter count equals that of its checkpoint (tests compare with
transformers' own models on the meta device where transformers implements the family).
"""

from __future__ import annotations

import math
from typing import Any

from hybridlm.config.model import ModelConfig
from hybridlm.errors import ConfigError

_ZAMBA2_COMMON: dict[str, Any] = {
    "vocab_size": 32000,
    "tie_embeddings": True,
    "max_seq_len": 4096,
    "mamba2": {"d_conv": 4, "expand": 2, "headdim": 64, "chunk_size": 256, "dt_limit": (0.001, math.inf),
               "dt_clamp_in_step": False},
    "shared": {"n_heads": 32, "activation": "gelu", "gated": True, "lora_rank": 128, "lora_mlp": True},
}

_MAMBA1_SIZES = {"130m": (768, 24), "370m": (1024, 48), "790m": (1536, 48), "1.4b": (2048, 48), "2.8b": (2560, 64)}

_PRESETS: dict[str, dict[str, Any]] = {
    # --- Zamba2 (Mamba2 backbone + shared attention blocks with LoRA) ---
    "zamba2-1.2b": {
        **_ZAMBA2_COMMON,
        "d_model": 2048,
        "layers": "m*5 (g m m*5)*5 g m m*2",  # hybrid layers 5, 11, 17, 23, 29, 35 of 38
        "mamba2": {**_ZAMBA2_COMMON["mamba2"], "d_state": 128, "ngroups": 1},
        "shared": {**_ZAMBA2_COMMON["shared"], "n_blocks": 1, "ffn_dim": 8192, "lora_qkv": True, "rope": True},
    },
    "zamba2-2.7b": {
        **_ZAMBA2_COMMON,
        "d_model": 2560,
        "layers": "m*6 (g m m*5)*6 g m m*4 g m m*3 g m m*2",  # 6, 12, ..., 42, 47, 51 of 54
        "mamba2": {**_ZAMBA2_COMMON["mamba2"], "d_state": 64, "ngroups": 1},
        "shared": {**_ZAMBA2_COMMON["shared"], "n_blocks": 2, "ffn_dim": 10240, "rope": False},
    },
    "zamba2-7b": {
        **_ZAMBA2_COMMON,
        "d_model": 3584,
        "layers": "m*6 g m m*4 (g m m*5)*11 g m m*3",  # 6, 11, 17, 23, ..., 71, 77 of 81
        "mamba2": {**_ZAMBA2_COMMON["mamba2"], "d_state": 64, "ngroups": 2},
        "shared": {**_ZAMBA2_COMMON["shared"], "n_blocks": 2, "ffn_dim": 14336, "rope": True},
    },
    # --- Zamba1 (Mamba1 backbone, one shared block, no LoRA) ---
    "zamba-7b": {
        "d_model": 3712,
        "layers": "r*2 g r r*4 (g r r*5)*11 g r r*2",  # hybrid layers 2, 7, 13, ..., 73 of 76
        "vocab_size": 32000,
        "tie_embeddings": True,
        "mamba1": {"d_state": 16, "expand": 2, "n_heads": 2, "dt_rank": 232},
        "shared": {"n_blocks": 1, "n_heads": 16, "ffn_dim": 14848, "activation": "gelu", "gated": True},
    },
    # --- Mamba2 ---
    "mamba2-2.7b": {
        "d_model": 2560,
        "layers": "m*64",
        "vocab_size": 50277,
        "pad_vocab_multiple": 16,
        "tie_embeddings": True,
        "mamba2": {"d_state": 128, "headdim": 64, "ngroups": 1, "chunk_size": 256},
    },
    # --- BlackMamba (Mamba1 + MoE, alternating; Zyphra's release: RMSNorm blocks but a final LayerNorm with
    # bias, a router with bias, top-1 expert scaled by its sigmoid score) ---
    "blackmamba-2.8b": {
        "d_model": 1472,
        "layers": "(r e)*18",
        "vocab_size": 50304,
        "tie_embeddings": True,
        "final_norm": "layernorm",
        "mamba1": {"d_state": 16, "expand": 2},
        "moe": {"n_experts": 8, "top_k": 1, "ffn_dim": 3872, "activation": "silu", "gated": True,
                "router_bias": True, "router_activation": "sigmoid"},
    },
    # --- Jamba-v0.1: attention every 8th layer (offset 4), MoE every 2nd (offset 1) ---
    "jamba-v0.1": {
        "d_model": 4096,
        "layers": "(r f r e r f r e a f r e r f r e)*4",
        "vocab_size": 65536,
        "tie_embeddings": False,
        "norm_eps": 1e-6,
        "max_seq_len": 262144,
        "mamba1": {"d_state": 16, "expand": 2, "dt_rank": 256, "inner_norms": True},
        "attention": {"n_heads": 32, "n_kv_heads": 8, "rope": False},
        "mlp": {"ffn_dim": 14336, "activation": "silu", "gated": True},
        "moe": {"n_experts": 16, "top_k": 2, "ffn_dim": 14336, "activation": "silu", "gated": True},
    },
    # --- Dense transformer ---
    "llama-2-7b": {
        "d_model": 4096,
        "layers": "(a f)*32",
        "vocab_size": 32000,
        "tie_embeddings": False,
        "attention": {"n_heads": 32, "rope": True, "rope_theta": 10000.0},
        "mlp": {"ffn_dim": 11008, "activation": "silu", "gated": True},
    },
    # --- tiny models for tests, demos and the quickstart ---
    "zamba2-tiny": {
        "d_model": 64,
        "layers": "m m g m m g m m g m",
        "vocab_size": 512,
        "max_seq_len": 1024,
        "mamba2": {"d_state": 16, "headdim": 16, "ngroups": 1, "chunk_size": 16, "dt_limit": (0.001, math.inf)},
        "shared": {"n_blocks": 2, "n_heads": 4, "ffn_dim": 128, "lora_rank": 8, "lora_qkv": True,
                   "lora_mlp": True, "rope": True},
    },
    "zamba2-20m": {
        "d_model": 384,
        "layers": "m*3 (g m m*3)*3",
        "vocab_size": 8192,
        "max_seq_len": 2048,
        "mamba2": {"d_state": 64, "headdim": 64, "ngroups": 1, "chunk_size": 64, "dt_limit": (0.001, math.inf)},
        "shared": {"n_blocks": 1, "n_heads": 8, "ffn_dim": 1536, "lora_rank": 16, "lora_qkv": True,
                   "lora_mlp": True, "rope": True},
    },
    "zamba-tiny": {
        "d_model": 64,
        "layers": "r r g r r g r",
        "vocab_size": 512,
        "mamba1": {"d_state": 8, "n_heads": 2, "dt_rank": 8},
        "shared": {"n_blocks": 1, "n_heads": 4, "ffn_dim": 128},
    },
    "mamba-tiny": {"d_model": 64, "layers": "r*4", "vocab_size": 500, "pad_vocab_multiple": 8,
                   "mamba1": {"d_state": 8}},
    "mamba2-tiny": {"d_model": 64, "layers": "m*4", "vocab_size": 500, "pad_vocab_multiple": 16,
                    "mamba2": {"d_state": 16, "headdim": 16, "ngroups": 2, "chunk_size": 16}},
    "transformer-tiny": {"d_model": 64, "layers": "(a f)*4", "vocab_size": 512, "tie_embeddings": False,
                         "attention": {"n_heads": 4, "n_kv_heads": 2},
                         "mlp": {"ffn_dim": 176, "activation": "silu", "gated": True}},
    "moe-tiny": {"d_model": 64, "layers": "(a e)*3", "vocab_size": 512,
                 "attention": {"n_heads": 4}, "moe": {"n_experts": 4, "top_k": 2, "ffn_dim": 96,
                                                     "normalize_topk": True}},
    "blackmamba-tiny": {"d_model": 64, "layers": "(r e)*3", "vocab_size": 512, "final_norm": "layernorm",
                        "mamba1": {"d_state": 8}, "moe": {"n_experts": 4, "top_k": 1, "ffn_dim": 96,
                                                          "router_bias": True, "router_activation": "sigmoid"}},
    "jamba-tiny": {"d_model": 64, "layers": "r f r e a f r e", "vocab_size": 512, "tie_embeddings": False,
                   "mamba1": {"d_state": 8, "inner_norms": True},
                   "attention": {"n_heads": 4, "n_kv_heads": 2, "rope": False},
                   "mlp": {"ffn_dim": 128, "activation": "silu", "gated": True},
                   "moe": {"n_experts": 4, "top_k": 2, "ffn_dim": 128}},
}
for _size, (_d, _n) in _MAMBA1_SIZES.items():
    _PRESETS[f"mamba-{_size}"] = {
        "d_model": _d,
        "layers": f"r*{_n}",
        "vocab_size": 50277,
        "pad_vocab_multiple": 8,
        "tie_embeddings": True,
        "mamba1": {"d_state": 16, "expand": 2},
    }


def presets() -> list[str]:
    """Names of all presets."""
    return sorted(_PRESETS)


def tiny_presets() -> list[str]:
    """The tiny presets (one per architecture family), for tests and demos."""
    return [name for name in presets() if name.endswith("-tiny")]


def get_preset(name: str) -> ModelConfig:
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(presets())}")
    return ModelConfig(name=name, **_PRESETS[name])

"""Shared by the planner tests: random valid configs; FlopCounterMode set up to count what the model runs."""

from __future__ import annotations

import random

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from hybridlm import ModelConfig
from hybridlm.errors import ConfigError

aten = torch.ops.aten


def _sdpa_cpu(q, k, v, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(q, k, v)


def _sdpa_cpu_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs):
    return 2 * sdpa_flop_count(q, k, v)  # dQ, dK, dV and dP: four products of the forward's two sizes


# torch 2.13's FlopCounterMode has no formula for the CPU flash-attention ops SDPA dispatches to on CPU
# (it would count attention as zero); these use its own sdpa_flop_count for them.
FLOP_MAPPING = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
}


def count_flops(fn) -> tuple[int, dict[str, int]]:
    with FlopCounterMode(display=False, custom_mapping=FLOP_MAPPING) as counter:
        fn()
    return counter.get_total_flops(), {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}


def random_config(seed: int, small: bool = False) -> ModelConfig | None:
    """A random config over all sub-layer kinds and options; None when the draw is invalid."""
    rng = random.Random(seed)
    d = rng.choice([16, 24, 32, 48] if small else [16, 32, 48, 64, 96, 128, 160])
    kinds = "rmafe"
    n = rng.randint(1, 6)
    tokens: list[str] = []
    for _ in range(n):
        if rng.random() < 0.3:
            tokens += ["g", rng.choice("rm")]
        else:
            tokens.append(rng.choice(kinds))
    heads = rng.choice([1, 2, 4])
    data = {
        "name": f"random-{seed}",
        "d_model": d,
        "layers": " ".join(tokens),
        "vocab_size": rng.randint(8, 300),
        "pad_vocab_multiple": rng.choice([1, 8, 16]),
        "tie_embeddings": rng.random() < 0.5,
        "norm": rng.choice(["rmsnorm", "layernorm"]),
        "final_norm": rng.choice([None, "rmsnorm", "layernorm"]),
        "mamba1": {
            "d_state": rng.choice([4, 8]),
            "expand": rng.choice([1, 2]),
            "n_heads": rng.choice([1, 2]),
            "dt_rank": rng.choice(["auto", 3]),
            "conv_bias": rng.random() < 0.7,
            "proj_bias": rng.random() < 0.3,
            "inner_norms": rng.random() < 0.3,
            "d_conv": rng.choice([2, 4]),
        },
        "mamba2": {
            "d_state": rng.choice([4, 8, 16]),
            "headdim": rng.choice([4, 8, 16]),
            "ngroups": rng.choice([1, 2]),
            "chunk_size": rng.choice([4, 8, 16]),
            "expand": rng.choice([1, 2]),
            "conv_bias": rng.random() < 0.7,
            "proj_bias": rng.random() < 0.3,
        },
        "attention": {
            "n_heads": heads * 2,
            "n_kv_heads": rng.choice([heads, heads * 2]),
            "rope": rng.random() < 0.5,
            "qkv_bias": rng.random() < 0.3,
            "out_bias": rng.random() < 0.3,
        },
        "mlp": {
            "ffn_dim": rng.choice([None, 40]),
            "gated": rng.random() < 0.5,
            "bias": rng.random() < 0.3,
            "activation": rng.choice(["gelu", "silu"]),
        },
        "moe": {
            "n_experts": rng.choice([2, 4]),
            "top_k": rng.choice([1, 2]),
            "ffn_dim": rng.choice([None, 24]),
            "gated": rng.random() < 0.5,
            "bias": rng.random() < 0.3,
            "router_bias": rng.random() < 0.3,
            "router_activation": rng.choice(["softmax", "sigmoid"]),
        },
        "shared": {
            "n_blocks": rng.choice([1, 2]),
            "n_heads": rng.choice([2, 4]),
            "n_kv_heads": rng.choice([None, 1, 2]),
            "ffn_dim": rng.choice([None, 40]),
            "gated": rng.random() < 0.5,
            "concat_embeddings": rng.random() < 0.8,
            "lora_rank": rng.choice([0, 2, 4]),
            "rope": rng.random() < 0.3,
        },
    }
    if data["shared"]["lora_rank"]:
        data["shared"]["lora_qkv"] = rng.random() < 0.5
        data["shared"]["lora_mlp"] = rng.random() < 0.5
    try:
        return ModelConfig(**data)
    except ConfigError:
        return None

"""transformers' ZambaForCausalLM (Zamba1) and Zamba2ForCausalLM <-> HybridLM.

Layout in transformers: layer i is either `layers.i.{input_layernorm, mamba}` or a hybrid layer
`layers.i.{shared_transformer|shared_transf, linear, mamba_decoder.{input_layernorm, mamba}}`.
The shared block is stored under the first hybrid layer that uses it (tied copies may also be
present; any copy is accepted on load). Zamba2 keeps the LoRA adapters of call j inside the block's
`*_adapter_list.j`. Zamba1's in_proj interleaves x and z rows (x = rows 0, 2, 4, ...).
"""

from __future__ import annotations

import math

import torch

from hybridlm.config import ModelConfig
from hybridlm.errors import CheckpointError, ConfigError
from hybridlm.hf.io import take
from hybridlm.kinds import MAMBA1, MAMBA2, SHARED

_ACT_FROM_HF = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "silu": "silu",
                "relu": "relu"}
_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu", "relu": "relu"}
_M2_NAMES = ("A_log", "D", "conv1d.weight", "conv1d.bias", "dt_bias", "in_proj.weight", "norm.weight",
             "out_proj.weight")
_M1_NAMES = ("A_log", "D", "conv1d.weight", "conv1d.bias", "dt_proj_bias", "in_proj.weight", "out_proj.weight")


def _hybrid_flags(d: dict, n: int) -> list[bool]:
    types = d.get("layers_block_type")
    if not types or len(types) != n:
        raise ConfigError("config.json: layers_block_type must list one entry per layer")
    return [t == "hybrid" for t in types]


def _mixer(v2: bool) -> str:
    return (MAMBA2 if v2 else MAMBA1).token


def _pattern(flags: list[bool], mixer: str) -> str:
    return " ".join(f"{SHARED.token} {mixer}" if h else mixer for h in flags)


def config_from_hf(d: dict, v2: bool) -> ModelConfig:
    n = d["num_hidden_layers"]
    flags = _hybrid_flags(d, n)
    act = d.get("hidden_act", "gelu")
    if act not in _ACT_FROM_HF:
        raise ConfigError(f"hidden_act {act!r} is not supported; allowed: {sorted(_ACT_FROM_HF)}")
    if d.get("attention_hidden_size", 2 * d["hidden_size"]) != 2 * d["hidden_size"]:
        raise ConfigError("attention_hidden_size must be 2 * hidden_size (concat of hidden and embeddings)")
    common = {
        "d_model": d["hidden_size"], "vocab_size": d["vocab_size"], "norm_eps": d.get("rms_norm_eps", 1e-5),
        "tie_embeddings": d.get("tie_word_embeddings", True), "max_seq_len": d.get("max_position_embeddings", 4096),
        "layers": _pattern(flags, _mixer(v2)),
    }
    shared = {"n_heads": d.get("num_attention_heads", 32), "n_kv_heads": d.get("num_key_value_heads"),
              "ffn_dim": d.get("intermediate_size"), "activation": _ACT_FROM_HF[act], "gated": True}
    if v2:
        if d.get("add_bias_linear"):
            raise ConfigError("Zamba2 add_bias_linear=True is not supported (published models use False)")
        if d.get("use_long_context"):
            raise ConfigError("Zamba2 use_long_context=True is not supported")
        rope = d.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default":
            raise ConfigError(f"rope_type {rope['rope_type']!r} is not supported (only 'default')")
        expand, hidden = d.get("mamba_expand", 2), d["hidden_size"]
        headdim = d.get("mamba_headdim") or expand * hidden // d.get("n_mamba_heads", 8)
        return ModelConfig(name="zamba2", **common, mamba2={
            "d_state": d.get("mamba_d_state", 64), "d_conv": d.get("mamba_d_conv", 4), "expand": expand,
            "headdim": headdim, "ngroups": d.get("mamba_ngroups", 1), "chunk_size": d.get("chunk_size", 256),
            "conv_bias": True, "proj_bias": False, "norm_eps": 1e-5,
            "dt_limit": (d.get("time_step_min", 1e-3), math.inf), "dt_clamp_in_step": False,
            "dt_min": d.get("time_step_min", 1e-3), "dt_max": d.get("time_step_max", 0.1),
            "dt_init_floor": d.get("time_step_floor", 1e-4)},
            shared={**shared, "n_blocks": d.get("num_mem_blocks", 1), "rope": bool(d.get("use_mem_rope")),
                    "rope_theta": rope.get("rope_theta", 10000.0), "lora_rank": d.get("adapter_rank", 128),
                    "lora_mlp": True, "lora_qkv": bool(d.get("use_shared_attention_adapter"))})
    rank = d.get("mamba_dt_rank", "auto")
    return ModelConfig(name="zamba", **common, mamba1={
        "d_state": d.get("mamba_d_state", 16), "d_conv": d.get("mamba_d_conv", 4), "expand": d.get("mamba_expand", 2),
        "dt_rank": rank if rank == "auto" else int(rank), "n_heads": d.get("n_mamba_heads", 2),
        "conv_bias": d.get("mamba_conv_bias", True), "proj_bias": d.get("mamba_proj_bias", False),
        "dt_min": d.get("time_step_min", 1e-3), "dt_max": d.get("time_step_max", 0.1),
        "dt_init_floor": d.get("time_step_floor", 1e-4)},
        shared={**shared, "n_blocks": 1, "rope": False})


def check_exportable(cfg: ModelConfig, v2: bool) -> None:
    mixer, call = _mixer(v2), SHARED.token
    tokens, s = cfg.tokens, cfg.shared
    if set(tokens) - {mixer, call} or call not in tokens:
        raise ConfigError(f"only '{mixer}' layers with '{call}' shared-block calls export to "
                          f"{'Zamba2' if v2 else 'Zamba'}")
    problems = []
    if cfg.norm != "rmsnorm":
        problems.append("norm must be rmsnorm")
    if not (s.concat_embeddings and s.gated and s.attn_scale == "half_head_dim"):
        problems.append("shared block must concat embeddings, be gated and use the half-head-dim scale")
    if s.activation not in _ACT_TO_HF:
        problems.append(f"activation {s.activation} has no transformers name")
    if v2:
        m = cfg.mamba2
        if not s.lora_mlp:
            problems.append("transformers' Zamba2 always has MLP adapters (shared.lora_mlp must be true)")
        if s.lora_qkv and cfg.shared_kv_heads != s.n_heads:
            problems.append("transformers' Zamba2 q/k/v adapters need n_kv_heads == n_heads")
        if m.proj_bias or not m.conv_bias or m.norm_eps != 1e-5 or m.dt_limit[1] != math.inf:
            problems.append("Zamba2's Mamba2 has no projection bias, a conv bias, norm eps 1e-5, no dt upper limit")
        if m.dt_limit[0] <= 0:
            problems.append("transformers' Zamba2 always clamps dt at time_step_min > 0 (set mamba2.dt_limit[0])")
    else:
        if s.n_blocks != 1 or s.lora_rank or s.rope:
            problems.append("Zamba1 has one shared block, no LoRA and no RoPE")
        if cfg.mamba1.inner_norms:
            problems.append("Zamba1's Mamba has no inner norms")
    if problems:
        raise ConfigError("cannot export to transformers' Zamba" + ("2" if v2 else "") + ": " + "; ".join(problems))


def config_to_hf(cfg: ModelConfig, v2: bool) -> dict:
    flags = [t == SHARED.token for t in cfg.tokens]
    types = ["hybrid" if i > 0 and flags[i - 1] else "mamba" for i, f in enumerate(flags) if not f]
    s = cfg.shared
    d = {
        "hidden_size": cfg.d_model, "vocab_size": cfg.padded_vocab_size, "num_hidden_layers": cfg.n_layers,
        "layers_block_type": types, "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_seq_len, "num_attention_heads": s.n_heads,
        "num_key_value_heads": cfg.shared_kv_heads, "intermediate_size": cfg.shared_ffn_dim,
        "hidden_act": _ACT_TO_HF[s.activation], "attention_hidden_size": 2 * cfg.d_model,
    }
    if v2:
        m = cfg.mamba2
        return {"architectures": ["Zamba2ForCausalLM"], "model_type": "zamba2", **d,
                "mamba_d_state": m.d_state, "mamba_d_conv": m.d_conv, "mamba_expand": m.expand,
                "mamba_ngroups": m.ngroups, "n_mamba_heads": cfg.mamba2_n_heads, "chunk_size": m.chunk_size,
                "time_step_min": m.dt_limit[0],  # transformers clamps dt at this in the parallel path
                "time_step_max": m.dt_max,
                "time_step_floor": m.dt_init_floor, "num_mem_blocks": s.n_blocks,
                "use_shared_attention_adapter": s.lora_qkv, "adapter_rank": s.lora_rank,
                "use_mem_rope": s.rope, "rope_parameters": {"rope_type": "default", "rope_theta": s.rope_theta},
                "add_bias_linear": False, "use_long_context": False}
    m1 = cfg.mamba1
    return {"architectures": ["ZambaForCausalLM"], "model_type": "zamba", **d,
            "attention_head_dim": cfg.shared_head_dim, "mamba_d_state": m1.d_state, "mamba_d_conv": m1.d_conv,
            "mamba_expand": m1.expand, "mamba_dt_rank": cfg.mamba1_dt_rank, "n_mamba_heads": m1.n_heads,
            "mamba_conv_bias": m1.conv_bias, "mamba_proj_bias": m1.proj_bias, "time_step_min": m1.dt_min,
            "time_step_max": m1.dt_max, "time_step_floor": m1.dt_init_floor, "hidden_mamba_act": "silu"}


def _hybrid_layers(cfg: ModelConfig) -> list[int]:
    """HF layer index of each shared-block call j."""
    out, i = [], 0
    for t in cfg.tokens:
        if t == SHARED.token:
            out.append(i)
        else:
            i += 1
    return out


def _block_names(v2: bool) -> dict[str, str]:
    """our shared-block name -> transformers' name under `layers.i.shared_transformer.`"""
    names = {"attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "pre_ff_layernorm.weight",
             "mlp.down.weight": "feed_forward.down_proj.weight"}
    for p in "qkvo":
        names[f"attn.{p}_proj.weight"] = f"self_attn.{p}_proj.weight"
    if v2:
        names["mlp.up.weight"] = "feed_forward.gate_up_proj.weight"
    return names


def _interleave(x_rows: torch.Tensor, z_rows: torch.Tensor) -> torch.Tensor:
    return torch.stack([x_rows, z_rows], dim=1).flatten(0, 1)


def state_from_hf(sd: dict, cfg: ModelConfig, v2: bool) -> dict:
    prefix_shared = "shared_transformer" if v2 else "shared_transf"
    out = {"embed.weight": take(sd, "model.embed_tokens.weight"),
           "norm_f.weight": take(sd, "model.final_layernorm.weight")}
    hybrid = _hybrid_layers(cfg)
    for i in range(cfg.n_layers):
        base = f"model.layers.{i}." + ("mamba_decoder." if i in hybrid else "")
        out[f"layers.{i}.norm.weight"] = take(sd, base + "input_layernorm.weight")
        for name in (_M2_NAMES if v2 else _M1_NAMES + ("x_proj_weight", "dt_proj_weight")):
            ours = {"x_proj_weight": "x_proj", "dt_proj_weight": "dt_proj"}.get(name, name)
            key = base + "mamba." + name
            if name == "conv1d.bias" and key not in sd:
                continue
            out[f"layers.{i}.mixer.{ours}"] = take(sd, key)
        if not v2:
            w = out[f"layers.{i}.mixer.in_proj.weight"]
            out[f"layers.{i}.mixer.in_proj.weight"] = torch.cat([w[0::2], w[1::2]])
    n_blocks = cfg.shared.n_blocks

    def find(b: int, name: str) -> torch.Tensor:
        for j, layer in enumerate(hybrid):
            key = f"model.layers.{layer}.{prefix_shared}.{name}"
            if j % n_blocks == b and key in sd:
                return sd[key]
        raise CheckpointError(f"checkpoint is missing shared block {b} weight {name!r}")

    for b in range(n_blocks):
        for ours, theirs in _block_names(v2).items():
            out[f"shared.{b}.{ours}"] = find(b, theirs)
        if not v2:
            out[f"shared.{b}.mlp.up.weight"] = torch.cat([find(b, "feed_forward.gate_proj.weight"),
                                                          find(b, "feed_forward.up_proj.weight")])
    for j, layer in enumerate(hybrid):
        out[f"calls.{j}.proj.weight"] = take(sd, f"model.layers.{layer}.linear.weight")
        if v2:
            b = j % n_blocks
            out[f"calls.{j}.lora_mlp.a.weight"] = find(b, f"feed_forward.gate_up_proj_adapter_list.{j}.0.weight")
            out[f"calls.{j}.lora_mlp.b.weight"] = find(b, f"feed_forward.gate_up_proj_adapter_list.{j}.1.weight")
            if cfg.shared.lora_qkv:
                for p in "qkv":
                    out[f"calls.{j}.lora_{p}.a.weight"] = find(b, f"self_attn.linear_{p}_adapter_list.{j}.0.weight")
                    out[f"calls.{j}.lora_{p}.b.weight"] = find(b, f"self_attn.linear_{p}_adapter_list.{j}.1.weight")
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = take(sd, "lm_head.weight")
    return out


def state_to_hf(sd: dict, cfg: ModelConfig, v2: bool) -> dict:
    prefix_shared = "shared_transformer" if v2 else "shared_transf"
    out = {"model.embed_tokens.weight": sd["embed.weight"], "model.final_layernorm.weight": sd["norm_f.weight"]}
    hybrid = _hybrid_layers(cfg)
    for i in range(cfg.n_layers):
        base = f"model.layers.{i}." + ("mamba_decoder." if i in hybrid else "")
        out[base + "input_layernorm.weight"] = sd[f"layers.{i}.norm.weight"]
        for name in (_M2_NAMES if v2 else _M1_NAMES + ("x_proj_weight", "dt_proj_weight")):
            ours = {"x_proj_weight": "x_proj", "dt_proj_weight": "dt_proj"}.get(name, name)
            if f"layers.{i}.mixer.{ours}" in sd:
                out[base + "mamba." + name] = sd[f"layers.{i}.mixer.{ours}"]
        if not v2:
            w = sd[f"layers.{i}.mixer.in_proj.weight"]
            half = w.shape[0] // 2
            out[base + "mamba.in_proj.weight"] = _interleave(w[:half], w[half:])
    n_blocks = cfg.shared.n_blocks
    for j, layer in enumerate(hybrid):
        out[f"model.layers.{layer}.linear.weight"] = sd[f"calls.{j}.proj.weight"]
        b = j % n_blocks
        home = f"model.layers.{hybrid[b]}.{prefix_shared}."  # first call of block b holds its weights
        if j < n_blocks:
            for ours, theirs in _block_names(v2).items():
                out[home + theirs] = sd[f"shared.{b}.{ours}"]
            if not v2:
                gate, up = sd[f"shared.{b}.mlp.up.weight"].chunk(2)
                out[home + "feed_forward.gate_proj.weight"] = gate
                out[home + "feed_forward.up_proj.weight"] = up
        if v2:
            out[home + f"feed_forward.gate_up_proj_adapter_list.{j}.0.weight"] = sd[f"calls.{j}.lora_mlp.a.weight"]
            out[home + f"feed_forward.gate_up_proj_adapter_list.{j}.1.weight"] = sd[f"calls.{j}.lora_mlp.b.weight"]
            if cfg.shared.lora_qkv:
                for p in "qkv":
                    out[home + f"self_attn.linear_{p}_adapter_list.{j}.0.weight"] = sd[f"calls.{j}.lora_{p}.a.weight"]
                    out[home + f"self_attn.linear_{p}_adapter_list.{j}.1.weight"] = sd[f"calls.{j}.lora_{p}.b.weight"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out

"""transformers' MambaForCausalLM (Mamba1) and Mamba2ForCausalLM <-> HybridLM.

Mamba1: our x_proj / dt_proj / A_log / D carry a leading head axis of size 1. The Mamba1 mixer's names are
mamba_ssm's, which transformers' Mamba and Jamba, mamba_ssm checkpoints and BlackMamba all use, so
`mamba1_mixer_from` / `mamba1_mixer_to` serve them all."""

from __future__ import annotations

import math

from hybridlm.config import ModelConfig
from hybridlm.errors import ConfigError
from hybridlm.hf.io import take
from hybridlm.kinds import MAMBA1, MAMBA2

_M1_SAME = ("in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias", "out_proj.weight", "out_proj.bias")
_M1_INNER_NORMS = {"inner_norms.dt.weight": "dt_layernorm.weight", "inner_norms.B.weight": "b_layernorm.weight",
                   "inner_norms.C.weight": "c_layernorm.weight"}  # Jamba
_M2_SAME = ("in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D",
            "norm.weight", "out_proj.weight", "out_proj.bias")


def _mixer(mamba2: bool):
    return MAMBA2 if mamba2 else MAMBA1


def config_from_hf(d: dict, mamba2: bool) -> ModelConfig:
    common = {
        "d_model": d["hidden_size"],
        "vocab_size": d["vocab_size"],
        "tie_embeddings": d.get("tie_word_embeddings", not mamba2),
        "norm_eps": d.get("layer_norm_epsilon", 1e-5),
        "layers": f"{_mixer(mamba2).token}*{d['num_hidden_layers']}",
    }
    if d.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"hidden_act {d['hidden_act']!r} is not supported for Mamba (only 'silu')")
    if mamba2:
        limit = d.get("time_step_limit", (0.0, math.inf))
        limit = tuple(float("inf") if isinstance(v, dict) else float(v) for v in limit)
        head_dim = d.get("head_dim", 64)
        expand = d.get("expand", 2)
        if d.get("num_heads") not in (None, expand * d["hidden_size"] // head_dim):
            raise ConfigError("num_heads must equal expand * hidden_size / head_dim for Mamba2")
        return ModelConfig(name="mamba2", **common, mamba2={
            "d_state": d.get("state_size", 128), "d_conv": d.get("conv_kernel", 4), "expand": expand,
            "headdim": head_dim, "ngroups": d.get("n_groups", 1), "chunk_size": d.get("chunk_size", 256),
            "conv_bias": d.get("use_conv_bias", True), "proj_bias": d.get("use_bias", False),
            "norm_eps": d.get("layer_norm_epsilon", 1e-5), "dt_limit": limit, "dt_clamp_in_step": False,
            "dt_min": d.get("time_step_min", 1e-3), "dt_max": d.get("time_step_max", 0.1),
            "dt_init_floor": d.get("time_step_floor", 1e-4)})
    rank = d.get("time_step_rank", "auto")
    return ModelConfig(name="mamba", **common, mamba1={
        "d_state": d.get("state_size", 16), "d_conv": d.get("conv_kernel", 4), "expand": d.get("expand", 2),
        "dt_rank": rank if rank == "auto" else int(rank), "conv_bias": d.get("use_conv_bias", True),
        "proj_bias": d.get("use_bias", False), "dt_min": d.get("time_step_min", 1e-3),
        "dt_max": d.get("time_step_max", 0.1), "dt_init_floor": d.get("time_step_floor", 1e-4)})


def check_exportable(cfg: ModelConfig, mamba2: bool) -> None:
    if set(cfg.tokens) != {_mixer(mamba2).token}:
        raise ConfigError(f"only a pure {'Mamba2' if mamba2 else 'Mamba1'} stack exports to this format")
    if cfg.norm != "rmsnorm":
        raise ConfigError("Mamba checkpoints use RMSNorm")
    if mamba2 and cfg.mamba2.norm_eps != cfg.norm_eps:
        raise ConfigError("Mamba2 checkpoints use one epsilon for both norms")
    if not mamba2 and (cfg.mamba1.n_heads != 1 or cfg.mamba1.inner_norms):
        raise ConfigError("transformers' Mamba has no multi-head Mamba1 and no inner norms")


def config_to_hf(cfg: ModelConfig, mamba2: bool) -> dict:
    d = {
        "hidden_size": cfg.d_model, "vocab_size": cfg.padded_vocab_size, "num_hidden_layers": cfg.n_layers,
        "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings, "hidden_act": "silu",
    }
    if mamba2:
        m = cfg.mamba2
        return {"architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", **d, "state_size": m.d_state,
                "conv_kernel": m.d_conv, "expand": m.expand, "head_dim": m.headdim, "num_heads": cfg.mamba2_n_heads,
                "n_groups": m.ngroups, "chunk_size": m.chunk_size, "use_conv_bias": m.conv_bias,
                "use_bias": m.proj_bias, "time_step_limit": [m.dt_limit[0], m.dt_limit[1]],
                "time_step_min": m.dt_min, "time_step_max": m.dt_max, "time_step_floor": m.dt_init_floor}
    m1 = cfg.mamba1
    return {"architectures": ["MambaForCausalLM"], "model_type": "mamba", **d, "state_size": m1.d_state,
            "conv_kernel": m1.d_conv, "expand": m1.expand, "time_step_rank": cfg.mamba1_dt_rank,
            "use_conv_bias": m1.conv_bias, "use_bias": m1.proj_bias, "time_step_min": m1.dt_min,
            "time_step_max": m1.dt_max, "time_step_floor": m1.dt_init_floor}


def mamba1_mixer_from(sd: dict, src: str, dst: str) -> dict:
    """One single-head Mamba1 mixer in mamba_ssm's names (shared by transformers' Mamba and Jamba, mamba_ssm
    and BlackMamba) under prefix `src` -> ours under `dst`; Jamba's inner norms when present."""
    out = {dst + name: take(sd, src + name) for name in _M1_SAME if src + name in sd}
    out[dst + "x_proj"] = take(sd, src + "x_proj.weight")[None]
    out[dst + "dt_proj"] = take(sd, src + "dt_proj.weight")[None]
    out[dst + "dt_proj_bias"] = take(sd, src + "dt_proj.bias")[None]
    out[dst + "A_log"] = take(sd, src + "A_log")[None]
    out[dst + "D"] = take(sd, src + "D")[None]
    for ours, theirs in _M1_INNER_NORMS.items():
        if src + theirs in sd:
            out[dst + ours] = take(sd, src + theirs)
    return out


def mamba1_mixer_to(sd: dict, src: str, dst: str) -> dict:
    """The inverse of `mamba1_mixer_from`: our mixer under `src` -> mamba_ssm's names under `dst`."""
    out = {dst + name: sd[src + name] for name in _M1_SAME if src + name in sd}
    out[dst + "x_proj.weight"] = sd[src + "x_proj"][0]
    out[dst + "dt_proj.weight"] = sd[src + "dt_proj"][0]
    out[dst + "dt_proj.bias"] = sd[src + "dt_proj_bias"][0]
    out[dst + "A_log"] = sd[src + "A_log"][0]
    out[dst + "D"] = sd[src + "D"][0]
    for ours, theirs in _M1_INNER_NORMS.items():
        if src + ours in sd:
            out[dst + theirs] = sd[src + ours]
    return out


def state_from_hf(sd: dict, cfg: ModelConfig, mamba2: bool) -> dict:
    out = {"embed.weight": take(sd, "backbone.embeddings.weight"), "norm_f.weight": take(sd, "backbone.norm_f.weight")}
    for i in range(cfg.n_layers):
        src, dst = f"backbone.layers.{i}.", f"layers.{i}."
        out[dst + "norm.weight"] = take(sd, src + "norm.weight")
        if mamba2:
            for name in _M2_SAME:
                if src + "mixer." + name in sd:
                    out[dst + "mixer." + name] = take(sd, src + "mixer." + name)
        else:
            out.update(mamba1_mixer_from(sd, src + "mixer.", dst + "mixer."))
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = take(sd, "lm_head.weight")
    sd.pop("lm_head.weight", None)
    return out


def state_to_hf(sd: dict, cfg: ModelConfig, mamba2: bool) -> dict:
    out = {"backbone.embeddings.weight": sd["embed.weight"], "backbone.norm_f.weight": sd["norm_f.weight"]}
    for i in range(cfg.n_layers):
        src, dst = f"layers.{i}.", f"backbone.layers.{i}."
        out[dst + "norm.weight"] = sd[src + "norm.weight"]
        if mamba2:
            for name in _M2_SAME:
                if src + "mixer." + name in sd:
                    out[dst + "mixer." + name] = sd[src + "mixer." + name]
        else:
            out.update(mamba1_mixer_to(sd, src + "mixer.", dst + "mixer."))
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out

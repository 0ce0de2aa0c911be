"""mamba_ssm's own checkpoints (state-spaces/mamba-*, mamba2-*; `MambaLMHeadModel.save_pretrained`) <-> HybridLM.

config.json holds mamba_ssm's `MambaConfig` fields: d_model, n_layer, vocab_size (unpadded; the model
pads it to a multiple of pad_vocab_size_multiple), ssm_cfg (the mixer's keyword arguments; its "layer"
picks Mamba1, the default, or Mamba2), rms_norm, residual_in_fp32, fused_add_norm, and since mamba_ssm 2
d_intermediate, attn_layer_idx, attn_cfg and tie_embeddings. The weights are one pytorch_model.bin
(torch.save of the state dict) with `backbone.*` names: transformers' Mamba/Mamba2 names but for
`backbone.embedding` (transformers: `embeddings`); `lm_head.weight` is saved even when tied. The norm
epsilon is MixerModel's default 1e-5 (config.json has no field for it), as is Mamba2's gated norm's.
Pure Mamba1 or Mamba2 stacks only: no attention layers, no MLPs (d_intermediate 0).
"""

from __future__ import annotations

import math

from hybridlm.config import ModelConfig
from hybridlm.errors import CheckpointError, ConfigError
from hybridlm.hf import mamba
from hybridlm.kinds import MAMBA1, MAMBA2

EPS = 1e-5
_OPTIONS = {  # ssm_cfg keys hybridlm reads
    "Mamba1": {"d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init_floor", "conv_bias", "bias"},
    "Mamba2": {"d_state", "d_conv", "expand", "headdim", "ngroups", "dt_min", "dt_max", "dt_init_floor", "dt_limit",
               "bias", "conv_bias", "chunk_size"},
}
_NO_EFFECT = {"dt_init", "dt_scale", "A_init_range", "conv_init", "use_fast_path", "use_mem_eff_path"}  # init, kernels
_FIXED = {"rmsnorm": True, "norm_before_gate": False, "D_has_hdim": False}  # the only values hybridlm computes
_RENAME = ("backbone.embedding.weight", "backbone.embeddings.weight")  # (mamba_ssm, transformers)


def is_config(d: dict) -> bool:
    return "d_model" in d and "n_layer" in d


def config_from_hf(d: dict) -> ModelConfig:
    ssm = dict(d.get("ssm_cfg") or {})
    layer = ssm.pop("layer", "Mamba1")
    if layer not in _OPTIONS:
        raise ConfigError(f"ssm_cfg.layer {layer!r} is not supported; allowed: Mamba1, Mamba2")
    if d.get("d_intermediate", 0):
        raise ConfigError("mamba_ssm d_intermediate > 0 (an MLP in every block) is not supported; pure Mamba only")
    if d.get("attn_layer_idx"):
        raise ConfigError("mamba_ssm attention layers (attn_layer_idx) are not supported; pure Mamba only")
    if not d.get("rms_norm", True):
        raise ConfigError("mamba_ssm rms_norm=false (LayerNorm blocks) is not supported; published models use RMSNorm")
    for key, value in _FIXED.items():
        if ssm.pop(key, value) != value:
            raise ConfigError(f"ssm_cfg.{key}={not value} is not supported (only {value})")
    mamba2 = layer == "Mamba2"
    d_ssm = ssm.pop("d_ssm", None)
    if mamba2 and d_ssm not in (None, ssm.get("expand", 2) * d["d_model"]):
        raise ConfigError("ssm_cfg.d_ssm (a gated MLP beside the SSM) is not supported")
    unknown = sorted(set(ssm) - _OPTIONS[layer] - _NO_EFFECT)
    if unknown:
        raise ConfigError(f"ssm_cfg.{unknown[0]} is not supported for {layer}; "
                          f"allowed: {', '.join(sorted(_OPTIONS[layer]))}")
    common = {"d_model": d["d_model"], "vocab_size": d["vocab_size"],
              "pad_vocab_multiple": d.get("pad_vocab_size_multiple", 8),
              "tie_embeddings": d.get("tie_embeddings", True),
              "norm_eps": EPS, "layers": f"{(MAMBA2 if mamba2 else MAMBA1).token}*{d['n_layer']}"}
    dt = {"dt_min": ssm.get("dt_min", 1e-3), "dt_max": ssm.get("dt_max", 0.1),
          "dt_init_floor": ssm.get("dt_init_floor", 1e-4)}
    if mamba2:
        limit = tuple(float(v) for v in ssm.get("dt_limit", (0.0, math.inf)))
        return ModelConfig(name="mamba2", **common, mamba2={
            "d_state": ssm.get("d_state", 128), "d_conv": ssm.get("d_conv", 4), "expand": ssm.get("expand", 2),
            "headdim": ssm.get("headdim", 64), "ngroups": ssm.get("ngroups", 1),
            "chunk_size": ssm.get("chunk_size", 256),
            "conv_bias": ssm.get("conv_bias", True), "proj_bias": ssm.get("bias", False), "norm_eps": EPS,
            "dt_limit": limit, "dt_clamp_in_step": False, **dt})  # mamba_ssm's step() does not clamp dt
    rank = ssm.get("dt_rank", "auto")
    return ModelConfig(name="mamba", **common, mamba1={
        "d_state": ssm.get("d_state", 16), "d_conv": ssm.get("d_conv", 4), "expand": ssm.get("expand", 2),
        "dt_rank": rank if rank == "auto" else int(rank), "conv_bias": ssm.get("conv_bias", True),
        "proj_bias": ssm.get("bias", False), **dt})


def _is_mamba2(cfg: ModelConfig) -> bool:
    return set(cfg.tokens) == {MAMBA2.token}


def check_exportable(cfg: ModelConfig) -> None:
    if set(cfg.tokens) not in ({MAMBA1.token}, {MAMBA2.token}):
        raise ConfigError(f"only a pure Mamba1 ('{MAMBA1.token}') or Mamba2 ('{MAMBA2.token}') stack exports to "
                          "mamba_ssm's format")
    problems = []
    if cfg.norm != "rmsnorm" or cfg.final_norm_kind != "rmsnorm" or cfg.norm_eps != EPS:
        problems.append(f"mamba_ssm's norms are RMSNorms with eps {EPS}")
    if _is_mamba2(cfg):
        m = cfg.mamba2
        if m.norm_eps != EPS:
            problems.append(f"mamba_ssm's Mamba2 gated norm has eps {EPS}")
        if m.dt_limit != (0.0, math.inf) and m.dt_clamp_in_step:
            problems.append("mamba_ssm clamps dt to dt_limit only in the chunked scan (set dt_clamp_in_step false)")
    elif cfg.mamba1.n_heads != 1 or cfg.mamba1.inner_norms:
        problems.append("mamba_ssm's Mamba1 has one head and no inner norms")
    if problems:
        raise ConfigError("cannot export to mamba_ssm's format: " + "; ".join(problems))


def config_to_hf(cfg: ModelConfig) -> dict:
    mamba2 = _is_mamba2(cfg)
    if mamba2:
        m = cfg.mamba2
        ssm = {"layer": "Mamba2", "d_state": m.d_state, "d_conv": m.d_conv, "expand": m.expand, "headdim": m.headdim,
               "ngroups": m.ngroups, "chunk_size": m.chunk_size, "conv_bias": m.conv_bias, "bias": m.proj_bias,
               "dt_min": m.dt_min, "dt_max": m.dt_max, "dt_init_floor": m.dt_init_floor}
        if m.dt_limit != (0.0, math.inf):
            ssm["dt_limit"] = list(m.dt_limit)
    else:  # no "layer" key: mamba_ssm 1.x reads these configs too (Mamba1 is the default)
        m1 = cfg.mamba1
        ssm = {"d_state": m1.d_state, "d_conv": m1.d_conv, "expand": m1.expand, "dt_rank": cfg.mamba1_dt_rank,
               "conv_bias": m1.conv_bias, "bias": m1.proj_bias, "dt_min": m1.dt_min, "dt_max": m1.dt_max,
               "dt_init_floor": m1.dt_init_floor}
    out = {"d_model": cfg.d_model, "n_layer": cfg.n_layers, "vocab_size": cfg.vocab_size, "ssm_cfg": ssm,
           "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
           "pad_vocab_size_multiple": cfg.pad_vocab_multiple}
    if mamba2 or not cfg.tie_embeddings:  # mamba_ssm 2's fields
        out.update({"d_intermediate": 0, "attn_layer_idx": [], "attn_cfg": {}, "tie_embeddings": cfg.tie_embeddings})
    return out


def state_from_hf(sd: dict, cfg: ModelConfig) -> dict:
    theirs, transformers = _RENAME
    if theirs in sd:
        sd[transformers] = sd.pop(theirs)
    out = mamba.state_from_hf(sd, cfg, mamba2=_is_mamba2(cfg))
    if sd:
        raise CheckpointError(f"mamba_ssm checkpoint has weights the config does not use: {sorted(sd)[:3]}")
    return out


def state_to_hf(sd: dict, cfg: ModelConfig) -> dict:
    theirs, transformers = _RENAME
    out = mamba.state_to_hf(sd, cfg, mamba2=_is_mamba2(cfg))
    out[theirs] = out.pop(transformers)
    if cfg.tie_embeddings:  # MambaLMHeadModel's state dict holds the tied head too (one storage on disk)
        out["lm_head.weight"] = out[theirs]
    return out

"""transformers' JambaForCausalLM <-> HybridLM.

A Jamba layer i is a mixer (attention when i % attn_layer_period == attn_layer_offset, else Mamba1 with
RMSNorms on dt, B and C) followed by a feed-forward (a top-k softmax MoE when num_experts > 1 and
i % expert_layer_period == expert_layer_offset, else a SwiGLU MLP), each pre-normed: tokens
`(r|a) (f|e)` per layer. Attention has no RoPE and no biases. The router has no bias and keeps the top-k
softmax probabilities unnormalized; MoE and MLP share `intermediate_size`. On disk (what transformers
writes and what ai21labs published) each expert has its own gate_proj / up_proj / down_proj; our
experts are stacked with gate and up fused, gate rows first. The Mamba's conv activation is `hidden_act`
while its output gate is always SiLU, so only 'silu' is accepted.
"""

from __future__ import annotations

import torch

from hybridlm.config import ModelConfig
from hybridlm.errors import CheckpointError, ConfigError
from hybridlm.hf.io import take
from hybridlm.hf.mamba import mamba1_mixer_from, mamba1_mixer_to
from hybridlm.kinds import ATTENTION, MAMBA1, MLP, MOE


def _mixer_ffn(cfg: ModelConfig) -> list[tuple[str, str]]:
    """(mixer token, feed-forward token) per Jamba layer; ConfigError when the stack is not of that shape."""
    tokens = cfg.tokens
    pairs = list(zip(tokens[0::2], tokens[1::2], strict=False))
    ok = (len(tokens) % 2 == 0 and tokens
          and all(m in (MAMBA1.token, ATTENTION.token) and f in (MLP.token, MOE.token) for m, f in pairs))
    if not ok:
        raise ConfigError(f"only stacks of layers '({MAMBA1.token}|{ATTENTION.token}) ({MLP.token}|{MOE.token})' "
                          "export to transformers' Jamba (each mixer followed by a feed-forward)")
    return pairs


def _period(flags: list[bool], what: str) -> tuple[int, int]:
    """The smallest (period, offset) with flags[i] == (i % period == offset) for every layer i."""
    n = len(flags)
    if not any(flags):
        return n + 1, n  # never within n layers
    for period in range(1, n + 1):
        offset = flags.index(True)
        if offset < period and all(f == (i % period == offset) for i, f in enumerate(flags)):
            return period, offset
    where = [i for i, f in enumerate(flags) if f]
    raise ConfigError(f"{what} layers {where} are not periodic; Jamba places them at i % period == offset")


def config_from_hf(d: dict) -> ModelConfig:
    n = d["num_hidden_layers"]
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"hidden_act {act!r} is not supported for Jamba (only 'silu': its Mamba gates with SiLU)")
    ap, ao = d.get("attn_layer_period", 8), d.get("attn_layer_offset", 4)
    ep, eo = d.get("expert_layer_period", 2), d.get("expert_layer_offset", 1)
    n_experts = d.get("num_experts", 16)
    tokens = []
    for i in range(n):
        tokens.append(ATTENTION.token if i % ap == ao else MAMBA1.token)
        tokens.append(MOE.token if n_experts > 1 and i % ep == eo else MLP.token)
    hidden, heads = d.get("hidden_size", 4096), d.get("num_attention_heads", 32)
    if d.get("head_dim") not in (None, hidden // heads):
        raise ConfigError("Jamba's attention head_dim must be hidden_size / num_attention_heads")
    rank = d.get("mamba_dt_rank", "auto")
    ffn = d.get("intermediate_size", 14336)
    moe = {"n_experts": n_experts, "top_k": d.get("num_experts_per_tok", 2), "ffn_dim": ffn, "activation": "silu",
           "gated": True, "router_bias": False, "normalize_topk": False,
           "aux_loss_coef": d.get("router_aux_loss_coef", 0.001)} if n_experts > 1 else {}
    return ModelConfig(
        name="jamba", d_model=hidden, layers=" ".join(tokens), vocab_size=d.get("vocab_size", 65536),
        tie_embeddings=d.get("tie_word_embeddings", False), norm_eps=d.get("rms_norm_eps", 1e-6),
        max_seq_len=d.get("max_position_embeddings", 262144),
        mamba1={"d_state": d.get("mamba_d_state", 16), "d_conv": d.get("mamba_d_conv", 4),
                "expand": d.get("mamba_expand", 2), "dt_rank": rank if rank == "auto" else int(rank),
                "conv_bias": d.get("mamba_conv_bias", True), "proj_bias": d.get("mamba_proj_bias", False),
                "inner_norms": True},
        attention={"n_heads": heads, "n_kv_heads": d.get("num_key_value_heads", 8), "rope": False},
        mlp={"ffn_dim": ffn, "activation": "silu", "gated": True},
        moe=moe)


def check_exportable(cfg: ModelConfig) -> None:
    pairs = _mixer_ffn(cfg)
    _period([m == ATTENTION.token for m, _ in pairs], "attention")
    uses_moe = any(f == MOE.token for _, f in pairs)
    if uses_moe:
        _period([f == MOE.token for _, f in pairs], "MoE")
    problems = []
    used = set(cfg.tokens)
    m1, a, mlp, moe = cfg.mamba1, cfg.attention, cfg.mlp, cfg.moe
    if cfg.norm != "rmsnorm" or cfg.final_norm_kind != "rmsnorm":
        problems.append("norms must be rmsnorm")
    if MAMBA1.token in used and (not m1.inner_norms or m1.n_heads != 1):
        problems.append("Jamba's Mamba has inner norms on dt, B, C and one head (mamba1.inner_norms, n_heads 1)")
    if ATTENTION.token in used and (a.rope or a.qkv_bias or a.out_bias
                                    or cfg.attention_head_dim * a.n_heads != cfg.d_model):
        problems.append("Jamba's attention has no RoPE, no biases and head_dim = d_model / n_heads")
    if MLP.token in used and not (mlp.gated and not mlp.bias and mlp.activation == "silu"):
        problems.append("Jamba's MLP is SwiGLU without biases (mlp.gated, activation silu)")
    if uses_moe:
        if not (moe.gated and not moe.bias and moe.activation == "silu" and not moe.router_bias
                and moe.router_activation == "softmax" and not moe.normalize_topk and moe.n_experts > 1):
            problems.append("Jamba's MoE has SwiGLU experts without biases and a bias-free softmax router whose "
                            "top-k weights are not renormalized")
        if cfg.moe_ffn_dim != cfg.mlp_ffn_dim and MLP.token in used:
            problems.append("Jamba's experts and MLPs share intermediate_size (moe.ffn_dim == mlp.ffn_dim)")
    if problems:
        raise ConfigError("cannot export to transformers' Jamba: " + "; ".join(problems))


def config_to_hf(cfg: ModelConfig) -> dict:
    pairs = _mixer_ffn(cfg)
    ap, ao = _period([m == ATTENTION.token for m, _ in pairs], "attention")
    uses_moe = any(f == MOE.token for _, f in pairs)
    ep, eo = _period([f == MOE.token for _, f in pairs], "MoE") if uses_moe else (2, 1)
    m1, moe = cfg.mamba1, cfg.moe
    return {
        "architectures": ["JambaForCausalLM"], "model_type": "jamba", "hidden_size": cfg.d_model,
        "vocab_size": cfg.padded_vocab_size, "num_hidden_layers": len(pairs), "tie_word_embeddings": cfg.tie_embeddings,
        "rms_norm_eps": cfg.norm_eps, "max_position_embeddings": cfg.max_seq_len, "hidden_act": "silu",
        "num_attention_heads": cfg.attention.n_heads, "num_key_value_heads": cfg.attention_kv_heads,
        "intermediate_size": cfg.moe_ffn_dim if uses_moe else cfg.mlp_ffn_dim,
        "attn_layer_period": ap, "attn_layer_offset": ao, "expert_layer_period": ep, "expert_layer_offset": eo,
        "num_experts": moe.n_experts if uses_moe else 1, "num_experts_per_tok": moe.top_k if uses_moe else 1,
        "router_aux_loss_coef": moe.aux_loss_coef,
        "mamba_d_state": m1.d_state, "mamba_d_conv": m1.d_conv, "mamba_expand": m1.expand,
        "mamba_dt_rank": cfg.mamba1_dt_rank, "mamba_conv_bias": m1.conv_bias, "mamba_proj_bias": m1.proj_bias,
    }


def state_from_hf(sd: dict, cfg: ModelConfig) -> dict:
    out = {"embed.weight": take(sd, "model.embed_tokens.weight"),
           "norm_f.weight": take(sd, "model.final_layernorm.weight")}
    for i, (mixer, ffn) in enumerate(_mixer_ffn(cfg)):
        src, a, f = f"model.layers.{i}.", f"layers.{2 * i}.", f"layers.{2 * i + 1}."
        out[a + "norm.weight"] = take(sd, src + "input_layernorm.weight")
        out[f + "norm.weight"] = take(sd, src + "pre_ff_layernorm.weight")
        if mixer == ATTENTION.token:
            for p in "qkvo":
                out[f"{a}mixer.{p}_proj.weight"] = take(sd, f"{src}self_attn.{p}_proj.weight")
        else:
            out.update(mamba1_mixer_from(sd, src + "mamba.", a + "mixer."))
        ff = src + "feed_forward."
        if ffn == MLP.token:
            out[f + "mixer.up.weight"] = torch.cat([take(sd, ff + "gate_proj.weight"), take(sd, ff + "up_proj.weight")])
            out[f + "mixer.down.weight"] = take(sd, ff + "down_proj.weight")
            continue
        out[f + "mixer.router.weight"] = take(sd, ff + "router.weight")
        if ff + "experts.gate_up_proj" in sd:  # transformers' in-memory layout, fused and stacked
            out[f + "mixer.up"] = take(sd, ff + "experts.gate_up_proj")
            out[f + "mixer.down"] = take(sd, ff + "experts.down_proj")
            continue
        e = range(cfg.moe.n_experts)
        out[f + "mixer.up"] = torch.stack([torch.cat([take(sd, f"{ff}experts.{j}.gate_proj.weight"),
                                                      take(sd, f"{ff}experts.{j}.up_proj.weight")]) for j in e])
        out[f + "mixer.down"] = torch.stack([take(sd, f"{ff}experts.{j}.down_proj.weight") for j in e])
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = take(sd, "lm_head.weight")
    sd.pop("lm_head.weight", None)  # tied: a copy of the embeddings
    if sd:
        raise CheckpointError(f"Jamba checkpoint has weights the config does not use: {sorted(sd)[:3]}")
    return out


def state_to_hf(sd: dict, cfg: ModelConfig) -> dict:
    out = {"model.embed_tokens.weight": sd["embed.weight"], "model.final_layernorm.weight": sd["norm_f.weight"]}
    f_dim = cfg.moe_ffn_dim
    for i, (mixer, ffn) in enumerate(_mixer_ffn(cfg)):
        dst, a, f = f"model.layers.{i}.", f"layers.{2 * i}.", f"layers.{2 * i + 1}."
        out[dst + "input_layernorm.weight"] = sd[a + "norm.weight"]
        out[dst + "pre_ff_layernorm.weight"] = sd[f + "norm.weight"]
        if mixer == ATTENTION.token:
            for p in "qkvo":
                out[f"{dst}self_attn.{p}_proj.weight"] = sd[f"{a}mixer.{p}_proj.weight"]
        else:
            out.update(mamba1_mixer_to(sd, a + "mixer.", dst + "mamba."))
        ff = dst + "feed_forward."
        if ffn == MLP.token:
            out[ff + "gate_proj.weight"], out[ff + "up_proj.weight"] = sd[f + "mixer.up.weight"].chunk(2)
            out[ff + "down_proj.weight"] = sd[f + "mixer.down.weight"]
            continue
        out[ff + "router.weight"] = sd[f + "mixer.router.weight"]
        for j in range(cfg.moe.n_experts):
            up = sd[f + "mixer.up"][j]
            out[f"{ff}experts.{j}.gate_proj.weight"], out[f"{ff}experts.{j}.up_proj.weight"] = up[:f_dim], up[f_dim:]
            out[f"{ff}experts.{j}.down_proj.weight"] = sd[f + "mixer.down"][j]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out

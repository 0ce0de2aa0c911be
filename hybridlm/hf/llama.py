"""transformers' LlamaForCausalLM <-> HybridLM (pattern '(a f)*N'; gate_proj and up_proj fused into `up`)."""

from __future__ import annotations

import torch

from hybridlm.config import ModelConfig
from hybridlm.errors import ConfigError
from hybridlm.hf.io import take
from hybridlm.kinds import ATTENTION, MLP

_ACT = {"silu": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def config_from_hf(d: dict) -> ModelConfig:
    rope = d.get("rope_parameters") or {"rope_theta": d.get("rope_theta", 10000.0)}
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(f"rope_type {rope['rope_type']!r} is not supported (only 'default')")
    act = d.get("hidden_act", "silu")
    if act not in _ACT:
        raise ConfigError(f"hidden_act {act!r} is not supported; allowed: {sorted(_ACT)}")
    return ModelConfig(
        name="llama", d_model=d["hidden_size"], vocab_size=d["vocab_size"],
        layers=f"({ATTENTION.token} {MLP.token})*{d['num_hidden_layers']}",
        tie_embeddings=d.get("tie_word_embeddings", False), norm_eps=d.get("rms_norm_eps", 1e-6),
        max_seq_len=d.get("max_position_embeddings", 2048),
        attention={"n_heads": d["num_attention_heads"], "n_kv_heads": d.get("num_key_value_heads"),
                   "head_dim": d.get("head_dim"), "rope": True, "rope_theta": rope.get("rope_theta", 10000.0),
                   "qkv_bias": d.get("attention_bias", False), "out_bias": d.get("attention_bias", False)},
        mlp={"ffn_dim": d["intermediate_size"], "activation": _ACT[act], "gated": True,
             "bias": d.get("mlp_bias", False)})


def check_exportable(cfg: ModelConfig) -> None:
    tokens = cfg.tokens
    if tokens != [ATTENTION.token, MLP.token] * (len(tokens) // 2) or not tokens:
        raise ConfigError("only an '(a f)*N' stack exports to transformers' Llama")
    if not (cfg.mlp.gated and cfg.attention.rope and cfg.norm == "rmsnorm"):
        raise ConfigError("Llama needs a gated MLP, RoPE and RMSNorm")
    if cfg.attention.qkv_bias != cfg.attention.out_bias:
        raise ConfigError("Llama's attention_bias covers q, k, v and o together")


def config_to_hf(cfg: ModelConfig) -> dict:
    a = cfg.attention
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.d_model,
            "vocab_size": cfg.padded_vocab_size, "num_hidden_layers": cfg.n_layers, "num_attention_heads": a.n_heads,
            "num_key_value_heads": cfg.attention_kv_heads, "head_dim": cfg.attention_head_dim,
            "intermediate_size": cfg.mlp_ffn_dim, "hidden_act": {v: k for k, v in _ACT.items()}[cfg.mlp.activation],
            "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
            "max_position_embeddings": cfg.max_seq_len, "attention_bias": a.qkv_bias, "mlp_bias": cfg.mlp.bias,
            "rope_parameters": {"rope_type": "default", "rope_theta": a.rope_theta}}


def state_from_hf(sd: dict, cfg: ModelConfig) -> dict:
    out = {"embed.weight": take(sd, "model.embed_tokens.weight"), "norm_f.weight": take(sd, "model.norm.weight")}
    for i in range(cfg.n_layers):
        src, attn, mlp = f"model.layers.{i}.", f"layers.{2 * i}.", f"layers.{2 * i + 1}."
        out[attn + "norm.weight"] = take(sd, src + "input_layernorm.weight")
        out[mlp + "norm.weight"] = take(sd, src + "post_attention_layernorm.weight")
        for p in "qkvo":
            for kind in ("weight", "bias"):
                if f"{src}self_attn.{p}_proj.{kind}" in sd:
                    out[f"{attn}mixer.{p}_proj.{kind}"] = take(sd, f"{src}self_attn.{p}_proj.{kind}")
        for kind in ("weight", "bias"):
            if f"{src}mlp.gate_proj.{kind}" in sd:
                out[f"{mlp}mixer.up.{kind}"] = torch.cat([take(sd, f"{src}mlp.gate_proj.{kind}"),
                                                          take(sd, f"{src}mlp.up_proj.{kind}")])
                out[f"{mlp}mixer.down.{kind}"] = take(sd, f"{src}mlp.down_proj.{kind}")
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = take(sd, "lm_head.weight")
    return out


def state_to_hf(sd: dict, cfg: ModelConfig) -> dict:
    out = {"model.embed_tokens.weight": sd["embed.weight"], "model.norm.weight": sd["norm_f.weight"]}
    for i in range(cfg.n_layers):
        dst, attn, mlp = f"model.layers.{i}.", f"layers.{2 * i}.", f"layers.{2 * i + 1}."
        out[dst + "input_layernorm.weight"] = sd[attn + "norm.weight"]
        out[dst + "post_attention_layernorm.weight"] = sd[mlp + "norm.weight"]
        for p in "qkvo":
            for kind in ("weight", "bias"):
                if f"{attn}mixer.{p}_proj.{kind}" in sd:
                    out[f"{dst}self_attn.{p}_proj.{kind}"] = sd[f"{attn}mixer.{p}_proj.{kind}"]
        for kind in ("weight", "bias"):
            if f"{mlp}mixer.up.{kind}" in sd:
                gate, up = sd[f"{mlp}mixer.up.{kind}"].chunk(2)
                out[f"{dst}mlp.gate_proj.{kind}"], out[f"{dst}mlp.up_proj.{kind}"] = gate, up
                out[f"{dst}mlp.down_proj.{kind}"] = sd[f"{mlp}mixer.down.{kind}"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out

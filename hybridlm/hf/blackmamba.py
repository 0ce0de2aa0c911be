"""Zyphra's BlackMamba checkpoints (Zyphra/BlackMamba-1.5B, -2.8B; github.com/Zyphra/BlackMamba) <-> HybridLM.

config.json (what their `MambaModel.from_pretrained` reads): num_layers, hidden_size, state_size,
conv_dimension, expansion_factor, vocab_size, ffn_hidden_size, mamba_moe_layers, add_bias_linear,
swiglu, max_sequence_length; optional MambaConfig fields layernorm_epsilon, rms_norm, routing_mode,
dt_rank, conv_bias, bias, gated_linear_unit, activation_func. `mamba_moe_layers` lists one entry per
layer: 'r' a Mamba1 layer, a digit N > 1 a switch MoE of N experts, '1' a dense MLP ('rN', a Mamba
with an MoE beside it, has no hybridlm equivalent). Weights: pytorch_model.bin holding
{"model": state_dict} with Megatron-style names (`embedding.word_embeddings.weight`,
`decoder.layers.i.{norm, mixer}.*`, `decoder.final_layernorm.{weight, bias}`; experts
`mixer.local_experts.j.linear_fc{1,2}.weight`, router `mixer.router.{weight, bias}`); the output layer is
tied to the embeddings and not stored.

Their forward: pre-norm residual blocks with RMSNorm (eps layernorm_epsilon), a final nn.LayerNorm with
bias, a router nn.Linear with bias, top-1 routing whose expert output is scaled by sigmoid(router logit)
in routing_mode 'sinkhorn' (the default; Sinkhorn balancing itself only trains) and by the softmax
probability in any other mode; experts are linear_fc1 (gate rows first when gated) -> act(gate) * up ->
linear_fc2. Trap: their from_pretrained never sets MambaConfig.activation_func, whose default is GELU, so
their code runs the "swiglu" experts as GeGLU; the paper and Megatron's --swiglu mean SiLU, which is what
hybridlm reads unless config.json names `activation_func` ('gelu' reproduces their code's output). Their
loader also ignores `routing_mode` (always 'sinkhorn'), so only sigmoid routing exports; hybridlm reads
both fields when present, as their MambaConfig would.
"""

from __future__ import annotations

import torch

from hybridlm.config import ModelConfig
from hybridlm.errors import CheckpointError, ConfigError
from hybridlm.hf.io import take
from hybridlm.hf.mamba import mamba1_mixer_from, mamba1_mixer_to
from hybridlm.kinds import MAMBA1, MLP, MOE

ZYPHRA_MAMBA = "r"  # Zyphra's code for a Mamba layer in mamba_moe_layers (their format's letter, not a token of ours)
_ACTIVATIONS = ("silu", "gelu")
_EMBED = ("embedding.word_embeddings.weight", "embedding.weight")  # as stored, as their model names it


def is_config(d: dict) -> bool:
    return "mamba_moe_layers" in d or {"num_layers", "hidden_size", "state_size"} <= set(d)


def _tokens(d: dict) -> tuple[list[str], set[int]]:
    n = d["num_layers"]
    entries = d.get("mamba_moe_layers") or [ZYPHRA_MAMBA] * n
    if isinstance(entries, str):
        entries = entries.split()
    if len(entries) != n:
        raise ConfigError(f"mamba_moe_layers has {len(entries)} entries for num_layers={n}")
    tokens, experts = [], set()
    for entry in map(str, entries):
        if entry == ZYPHRA_MAMBA:
            tokens.append(MAMBA1.token)
        elif entry == "1":
            tokens.append(MLP.token)
        elif len(entry) == 1 and entry.isdigit() and entry != "0":  # their code reads an entry's last character only
            tokens.append(MOE.token)
            experts.add(int(entry))
        else:
            raise ConfigError(f"mamba_moe_layers entry {entry!r} is not supported; allowed: '{ZYPHRA_MAMBA}' (Mamba), "
                              "'1' (MLP), '2'..'9' (MoE of that many experts)")
    if len(experts) > 1:
        raise ConfigError(f"MoE layers with different expert counts {sorted(experts)} are not supported")
    return tokens, experts


def config_from_hf(d: dict) -> ModelConfig:
    tokens, experts = _tokens(d)
    if d.get("add_bias_linear", True) or d.get("bias", False):
        raise ConfigError("BlackMamba add_bias_linear=true (biases on every linear, the tied output layer's too) is "
                          "not supported; the released models use false")
    if not d.get("rms_norm", True):
        raise ConfigError("BlackMamba rms_norm=false is not supported (their code cannot build it either)")
    gated = bool(d.get("swiglu", d.get("gated_linear_unit", False)))
    act = d.get("activation_func", "silu" if gated else "gelu")
    if act not in _ACTIVATIONS:
        raise ConfigError(f"activation_func {act!r} is not supported; allowed: {', '.join(_ACTIVATIONS)}")
    sigmoid = d.get("routing_mode", "sinkhorn") == "sinkhorn"
    hidden = d["hidden_size"]
    ffn = d.get("ffn_hidden_size") or 4 * hidden
    rank = d.get("dt_rank", "auto")
    moe = {"n_experts": experts.pop(), "top_k": 1, "ffn_dim": ffn, "activation": act, "gated": gated, "bias": False,
           "router_bias": True, "router_activation": "sigmoid" if sigmoid else "softmax"} if experts else {}
    return ModelConfig(
        name="blackmamba", d_model=hidden, layers=" ".join(tokens), vocab_size=d["vocab_size"], tie_embeddings=True,
        norm="rmsnorm", final_norm="layernorm", norm_eps=d.get("layernorm_epsilon", 1e-5),
        max_seq_len=d.get("max_sequence_length", 2048),
        mamba1={"d_state": d["state_size"], "d_conv": d.get("conv_dimension", 4),
                "expand": d.get("expansion_factor", 2),
                "dt_rank": rank if rank == "auto" else int(rank), "conv_bias": d.get("conv_bias", True),
                "proj_bias": False},
        mlp={"ffn_dim": ffn, "activation": act, "gated": gated, "bias": False},
        moe=moe)


def check_exportable(cfg: ModelConfig) -> None:
    used = set(cfg.tokens)
    if used - {MAMBA1.token, MLP.token, MOE.token}:
        raise ConfigError(f"only '{MAMBA1.token}', '{MLP.token}' and '{MOE.token}' layers export to BlackMamba")
    problems = []
    if cfg.norm != "rmsnorm" or cfg.final_norm_kind != "layernorm":
        problems.append("BlackMamba has RMSNorm blocks and a final LayerNorm (final_norm: layernorm)")
    if not cfg.tie_embeddings:
        problems.append("BlackMamba ties the output layer to the embeddings")
    m1, mlp, moe = cfg.mamba1, cfg.mlp, cfg.moe
    if m1.n_heads != 1 or m1.inner_norms or m1.proj_bias:
        problems.append("BlackMamba's Mamba has one head, no inner norms and no projection biases")
    ffns = [(cfg.mlp_ffn_dim, mlp.gated, mlp.activation, mlp.bias)] if MLP.token in used else []
    if MOE.token in used:
        ffns.append((cfg.moe_ffn_dim, moe.gated, moe.activation, moe.bias))
        if not (moe.top_k == 1 and moe.router_bias and not moe.normalize_topk and 2 <= moe.n_experts <= 9
                and moe.router_activation == "sigmoid"):
            problems.append("BlackMamba's MoE routes top-1 by a sigmoid router with bias (their loader always uses "
                            "routing_mode 'sinkhorn'), 2 to 9 experts, unnormalized")
    if len({f[:3] for f in ffns}) > 1 or any(f[3] for f in ffns) or any(f[2] not in _ACTIVATIONS for f in ffns):
        problems.append("BlackMamba's MLPs and experts share one ffn_hidden_size, gating and activation (silu or "
                        "gelu), without biases")
    if problems:
        raise ConfigError("cannot export to BlackMamba: " + "; ".join(problems))


def config_to_hf(cfg: ModelConfig) -> dict:
    codes = {MAMBA1.token: ZYPHRA_MAMBA, MLP.token: "1", MOE.token: str(cfg.moe.n_experts)}
    uses_moe = MOE.token in cfg.tokens
    ffn, gated, act = ((cfg.moe_ffn_dim, cfg.moe.gated, cfg.moe.activation) if uses_moe
                       else (cfg.mlp_ffn_dim, cfg.mlp.gated, cfg.mlp.activation))
    out = {"num_layers": len(cfg.tokens), "hidden_size": cfg.d_model,
           "state_size": cfg.mamba1.d_state, "conv_dimension": cfg.mamba1.d_conv,
           "expansion_factor": cfg.mamba1.expand, "vocab_size": cfg.padded_vocab_size, "ffn_hidden_size": ffn,
           "mamba_moe_layers": [codes[t] for t in cfg.tokens], "add_bias_linear": False, "swiglu": gated,
           "max_sequence_length": cfg.max_seq_len, "layernorm_epsilon": cfg.norm_eps, "rms_norm": True,
           "routing_mode": "sinkhorn",
           "dt_rank": cfg.mamba1_dt_rank, "conv_bias": cfg.mamba1.conv_bias}
    if act != ("silu" if gated else "gelu"):
        out["activation_func"] = act
    return out


def state_from_hf(sd: dict, cfg: ModelConfig) -> dict:
    stored, named = _EMBED
    out = {"embed.weight": take(sd, stored if stored in sd else named),
           "norm_f.weight": take(sd, "decoder.final_layernorm.weight"),
           "norm_f.bias": take(sd, "decoder.final_layernorm.bias")}
    sd.pop("output_layer.weight", None)  # tied to the embeddings
    for i, token in enumerate(cfg.tokens):
        src, dst = f"decoder.layers.{i}.", f"layers.{i}."
        out[dst + "norm.weight"] = take(sd, src + "norm.weight")
        m = src + "mixer."
        if token == MAMBA1.token:
            out.update(mamba1_mixer_from(sd, m, dst + "mixer."))
        elif token == MLP.token:
            out[dst + "mixer.up.weight"] = take(sd, m + "linear_fc1.weight")
            out[dst + "mixer.down.weight"] = take(sd, m + "linear_fc2.weight")
        else:
            out[dst + "mixer.router.weight"] = take(sd, m + "router.weight")
            out[dst + "mixer.router.bias"] = take(sd, m + "router.bias")
            experts = [f"{m}local_experts.{j}." for j in range(cfg.moe.n_experts)]
            out[dst + "mixer.up"] = torch.stack([take(sd, e + "linear_fc1.weight") for e in experts])
            out[dst + "mixer.down"] = torch.stack([take(sd, e + "linear_fc2.weight") for e in experts])
    if sd:
        raise CheckpointError(f"BlackMamba checkpoint has weights the config does not use: {sorted(sd)[:3]}")
    return out


def state_to_hf(sd: dict, cfg: ModelConfig) -> dict:
    out = {_EMBED[0]: sd["embed.weight"], "decoder.final_layernorm.weight": sd["norm_f.weight"],
           "decoder.final_layernorm.bias": sd["norm_f.bias"]}
    for i, token in enumerate(cfg.tokens):
        src, dst = f"layers.{i}.", f"decoder.layers.{i}."
        out[dst + "norm.weight"] = sd[src + "norm.weight"]
        m = dst + "mixer."
        if token == MAMBA1.token:
            out.update(mamba1_mixer_to(sd, src + "mixer.", m))
        elif token == MLP.token:
            out[m + "linear_fc1.weight"] = sd[src + "mixer.up.weight"]
            out[m + "linear_fc2.weight"] = sd[src + "mixer.down.weight"]
        else:
            out[m + "router.weight"] = sd[src + "mixer.router.weight"]
            out[m + "router.bias"] = sd[src + "mixer.router.bias"]
            for j in range(cfg.moe.n_experts):
                out[f"{m}local_experts.{j}.linear_fc1.weight"] = sd[src + "mixer.up"][j]
                out[f"{m}local_experts.{j}.linear_fc2.weight"] = sd[src + "mixer.down"][j]
    return out

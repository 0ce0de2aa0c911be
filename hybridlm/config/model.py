"""`ModelConfig`: the one validated description of a model, shared by model, plan, bench and train.

Every sub-layer type has its own small section (`mamba1`, `mamba2`, `attention`, `mlp`, `moe`,
`shared`); `layers` says how they are stacked (see `hybridlm.config.pattern`). Derived sizes
(d_inner, heads, padded vocab, ...) are properties, so they can never disagree with the fields.
"""

from __future__ import annotations

import json
import math
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hybridlm.config import pattern as pat
from hybridlm.errors import ConfigError
from hybridlm.kinds import KINDS, MAMBA2, kinds_in

Activation = Literal["gelu", "gelu_tanh", "silu", "relu"]
Unbounded = Annotated[float, Field(allow_inf_nan=True)]  # a bound that may be infinite (NaN is refused below)


def _one_line(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if p != "__root__")
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "finite_number":
        msg = f"must be a finite number, got {first['input']}"
    elif first["type"] == "missing":
        msg = "required field is missing"
    where = ".".join(p for p in (prefix, loc) if p)
    return f"{where}: {msg}" if where else msg


class _Section(BaseModel):
    """Strict, immutable config section whose errors are one line naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError(_one_line(err, getattr(self, "_prefix", ""))) from None


def _check_dt(section) -> None:
    """The dt initialisation range of a Mamba section: 0 < dt_min <= dt_max, dt_init_floor >= 0."""
    if not 0 < section.dt_min <= section.dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={section.dt_min}, dt_max={section.dt_max}")
    if section.dt_init_floor < 0:
        raise ValueError(f"dt_init_floor must be >= 0, got {section.dt_init_floor}")


class Mamba1Config(_Section):
    """Mamba1 (selective scan). `n_heads` > 1 is Zamba1's multi-head variant (own x_proj/dt_proj per head)."""

    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | Literal["auto"] = "auto"
    n_heads: int = 1
    conv_bias: bool = True
    proj_bias: bool = False
    inner_norms: bool = False  # Jamba: RMSNorm on dt, B and C
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4

    @model_validator(mode="after")
    def _check(self) -> Mamba1Config:
        for name in ("d_state", "d_conv", "expand", "n_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dt_rank != "auto" and self.dt_rank < 1:
            raise ValueError(f"dt_rank must be >= 1 or 'auto', got {self.dt_rank}")
        _check_dt(self)
        return self


class Mamba2Config(_Section):
    """Mamba2 (SSD). `dt_limit` clamps dt in the parallel (chunked) path, as mamba_ssm does; whether the
    recurrent step clamps too is `dt_clamp_in_step` (True keeps decoding identical to a full forward;
    transformers' Zamba2 does not clamp there, so checkpoints imported from it set False).

    `chunk_size` is the SSD chunk of GPU kernels and of checkpoints (256 in the published ones). The
    chunk changes only the schedule of the computation, not its result, and on CPU the PyTorch path is
    fastest near 64 (measured: 1.3x faster than 256 for a 20M model's training step), so on CPU it uses
    min(chunk_size, cpu_chunk_size); None keeps chunk_size everywhere. See `chunk_for`."""

    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 64
    cpu_chunk_size: int | None = 64
    conv_bias: bool = True
    proj_bias: bool = False
    norm_eps: float = 1e-5
    dt_limit: tuple[Unbounded, Unbounded] = (0.0, math.inf)
    dt_clamp_in_step: bool = True
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4

    @model_validator(mode="after")
    def _check(self) -> Mamba2Config:
        for name in ("d_state", "d_conv", "expand", "headdim", "ngroups", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cpu_chunk_size is not None and self.cpu_chunk_size < 1:
            raise ValueError(f"cpu_chunk_size must be >= 1 or null, got {self.cpu_chunk_size}")
        if math.isnan(sum(self.dt_limit)) or self.dt_limit[0] < 0 or self.dt_limit[1] <= self.dt_limit[0]:
            raise ValueError(f"dt_limit must be (min >= 0, max > min), got {self.dt_limit}")
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps}")
        _check_dt(self)
        return self

    def chunk_for(self, device_type: str) -> int:
        """The SSD chunk size used on a device type ('cpu', 'cuda', ...)."""
        if device_type == "cpu" and self.cpu_chunk_size is not None:
            return min(self.chunk_size, self.cpu_chunk_size)
        return self.chunk_size


class AttentionConfig(_Section):
    """Causal self-attention. `n_kv_heads` < `n_heads` is GQA. `head_dim` defaults to d_model / n_heads.
    Sliding-window layers ('w') share these fields and attend the last `window` tokens."""

    n_heads: int = 16
    n_kv_heads: int | None = None
    head_dim: int | None = None
    rope: bool = True
    rope_theta: float = 10000.0
    qkv_bias: bool = False
    out_bias: bool = False
    window: int = 4096

    @model_validator(mode="after")
    def _check(self) -> AttentionConfig:
        if self.n_heads < 1:
            raise ValueError(f"n_heads must be >= 1, got {self.n_heads}")
        kv = self.n_kv_heads or self.n_heads
        if kv < 1 or self.n_heads % kv:
            raise ValueError(f"n_kv_heads={kv} must be >= 1 and divide n_heads={self.n_heads}")
        if self.head_dim is not None and (self.head_dim < 1 or (self.rope and self.head_dim % 2)):
            raise ValueError(f"head_dim must be a positive (even, with RoPE) integer, got {self.head_dim}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")
        return self


class MLPConfig(_Section):
    """Dense feed-forward. gated: act(x W_gate) * (x W_up) (SwiGLU with silu, GeGLU with gelu)."""

    ffn_dim: int | None = None  # default 4 * d_model
    activation: Activation = "gelu"
    gated: bool = False
    bias: bool = False


class MoEConfig(_Section):
    """Top-k routed experts. The router scores experts with `router_activation` of its logits: 'softmax'
    (Mixtral, Jamba) or 'sigmoid' (BlackMamba's inference routing: each kept expert's output is scaled by
    its own sigmoid score). `normalize_topk` renormalizes the k kept scores to sum to 1.
    `aux_loss_coef` weights the Switch-style load-balancing loss E * sum_i f_i P_i."""

    n_experts: int = 8
    top_k: int = 1
    ffn_dim: int | None = None  # default 4 * d_model
    activation: Activation = "silu"
    gated: bool = True
    bias: bool = False
    router_bias: bool = False
    router_activation: Literal["softmax", "sigmoid"] = "softmax"
    normalize_topk: bool = False
    aux_loss_coef: float = 0.01

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if self.n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {self.n_experts}")
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k must be between 1 and n_experts={self.n_experts}, got {self.top_k}")
        if self.aux_loss_coef < 0:
            raise ValueError(f"aux_loss_coef must be >= 0, got {self.aux_loss_coef}")
        return self


class SharedBlockConfig(_Section):
    """Zamba's shared transformer block(s), invoked by 'g' tokens round-robin (call j uses block
    j % n_blocks). Input is concat([x, x0]) (width 2d) when `concat_embeddings`; head_dim = input
    width / n_heads; the softmax scale is (head_dim / 2) ** -0.5 (Zamba's convention) unless
    `attn_scale` = 'head_dim'. Each call owns a d x d output projection and optional LoRA adapters
    (rank `lora_rank`) on q/k/v (`lora_qkv`) and on the MLP's gate/up projection (`lora_mlp`)."""

    n_blocks: int = 1
    n_heads: int = 16
    n_kv_heads: int | None = None
    ffn_dim: int | None = None  # default 4 * d_model
    activation: Activation = "gelu"
    gated: bool = True
    concat_embeddings: bool = True
    attn_scale: Literal["half_head_dim", "head_dim"] = "half_head_dim"
    rope: bool = False
    rope_theta: float = 10000.0
    lora_rank: int = 0
    lora_qkv: bool = False
    lora_mlp: bool = False

    @model_validator(mode="after")
    def _check(self) -> SharedBlockConfig:
        if self.n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {self.n_blocks}")
        if self.n_heads < 1:
            raise ValueError(f"n_heads must be >= 1, got {self.n_heads}")
        kv = self.n_kv_heads or self.n_heads
        if kv < 1 or self.n_heads % kv:
            raise ValueError(f"n_kv_heads={kv} must be >= 1 and divide n_heads={self.n_heads}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if (self.lora_qkv or self.lora_mlp) and self.lora_rank == 0:
            raise ValueError("lora_qkv / lora_mlp need lora_rank >= 1")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")
        return self


class ModelConfig(_Section):
    """One model. Build with `ModelConfig(...)`, `ModelConfig.from_preset(name)` or `ModelConfig.from_file(path)`."""

    name: str = "custom"
    d_model: int
    layers: str
    vocab_size: int
    pad_vocab_multiple: int = 1
    tie_embeddings: bool = True
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    final_norm: Literal["rmsnorm", "layernorm"] | None = None  # None: same as `norm` (BlackMamba: layernorm)
    norm_eps: float = 1e-5
    max_seq_len: int = 4096
    init_std: float = 0.02
    mamba1: Mamba1Config = Mamba1Config()
    mamba2: Mamba2Config = Mamba2Config()
    attention: AttentionConfig = AttentionConfig()
    mlp: MLPConfig = MLPConfig()
    moe: MoEConfig = MoEConfig()
    shared: SharedBlockConfig = SharedBlockConfig()

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        for name in ("d_model", "vocab_size", "pad_vocab_multiple", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps}")
        if self.init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {self.init_std}")
        for spec in kinds_in(pat.expand(self.layers)):
            spec.validate(self)
        for name, size in (("mlp.ffn_dim", self.mlp.ffn_dim), ("moe.ffn_dim", self.moe.ffn_dim),
                           ("shared.ffn_dim", self.shared.ffn_dim)):
            if size is not None and size < 1:
                raise ValueError(f"{name} must be >= 1, got {size}")
        return self

    # ----- the layer stack -----
    @cached_property
    def tokens(self) -> list[str]:
        """The flat list of sub-layer tokens (see hybridlm.config.pattern)."""
        return pat.expand(self.layers)

    @property
    def n_layers(self) -> int:
        """Number of sequence-mixer layers (r, m, a): the 'layers' a paper or config.json reports."""
        return sum(KINDS[t].mixer for t in self.tokens)

    @property
    def n_shared_calls(self) -> int:
        """Number of shared-block calls ('g' tokens)."""
        return sum(KINDS[t].call for t in self.tokens)

    # ----- derived sizes -----
    @property
    def final_norm_kind(self) -> str:
        """The norm before the LM head: `final_norm`, or `norm` when that is unset."""
        return self.final_norm or self.norm

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @property
    def mamba1_d_inner(self) -> int:
        return self.mamba1.expand * self.d_model

    @property
    def mamba1_dt_rank(self) -> int:
        r = self.mamba1.dt_rank
        return math.ceil(self.d_model / 16) if r == "auto" else r

    @property
    def mamba2_d_inner(self) -> int:
        return self.mamba2.expand * self.d_model

    @property
    def mamba2_n_heads(self) -> int:
        return self.mamba2_d_inner // self.mamba2.headdim

    @property
    def attention_head_dim(self) -> int:
        a = self.attention
        return a.head_dim if a.head_dim is not None else self.d_model // a.n_heads

    @property
    def attention_kv_heads(self) -> int:
        return self.attention.n_kv_heads or self.attention.n_heads

    @property
    def mlp_ffn_dim(self) -> int:
        return self.mlp.ffn_dim or 4 * self.d_model

    @property
    def moe_ffn_dim(self) -> int:
        return self.moe.ffn_dim or 4 * self.d_model

    @property
    def shared_input_dim(self) -> int:
        return 2 * self.d_model if self.shared.concat_embeddings else self.d_model

    @property
    def shared_head_dim(self) -> int:
        return self.shared_input_dim // self.shared.n_heads

    @property
    def shared_kv_heads(self) -> int:
        return self.shared.n_kv_heads or self.shared.n_heads

    @property
    def shared_ffn_dim(self) -> int:
        return self.shared.ffn_dim or 4 * self.d_model

    # ----- construction and I/O -----
    @classmethod
    def from_preset(cls, name: str) -> ModelConfig:
        from hybridlm.config.presets import get_preset

        return get_preset(name)

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """YAML or JSON of our own schema, or a transformers `config.json` (detected by `model_type`)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text()
        try:
            data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        except (yaml.YAMLError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: "
                              f"{str(err).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields")
        from hybridlm.hf import checkpoint_format, config_from_hf

        if checkpoint_format(data) is not None:  # a checkpoint's config.json in any supported format
            return config_from_hf(data)
        if "model" in data and isinstance(data["model"], dict) and "d_model" not in data:
            data = data["model"]  # a run config with a model section
        elif isinstance(data.get("model"), str) and "d_model" not in data:  # a run config naming its model
            from hybridlm.locate import locate

            return locate(data["model"], base=path.parent).config()
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict that may name a `preset` to start from and may use foreign layer formats:
        `cookbook_layers` (Zyphra strings), `megatron_pattern`, or `attn_layer_idx` (+ `n_layer`, `ssm`)."""
        data = dict(data)
        base: dict[str, Any] = {}
        if "preset" in data:
            base = cls.from_preset(data.pop("preset")).to_dict()
        if "cookbook_layers" in data:
            layers, experts = pat.from_cookbook(data.pop("cookbook_layers"))
            data["layers"] = layers
            if experts is not None:
                data.setdefault("moe", {})
                data["moe"] = {**data["moe"], "n_experts": experts}
        if "megatron_pattern" in data:
            data["layers"] = pat.from_megatron(data.pop("megatron_pattern"))
        if "attn_layer_idx" in data:
            n_layer = data.pop("n_layer", None)
            if n_layer is None:
                raise ConfigError("attn_layer_idx: also give n_layer (the number of mixer layers)")
            data["layers"] = pat.from_attn_layer_idx(
                n_layer, data.pop("attn_layer_idx"), data.pop("ssm", MAMBA2.token), bool(data.pop("mlp", False))
            )
        return cls(**_deep_merge(base, data))

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        return d

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        if path.suffix in (".yaml", ".yml"):
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    def replace(self, **overrides: Any) -> ModelConfig:
        """A validated copy with fields replaced; nested fields as dotted keys, e.g. `**{"mamba2.d_state": 64}`."""
        nested: dict[str, Any] = {}
        for key, value in overrides.items():
            node = nested
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return ModelConfig(**_deep_merge(self.to_dict(), nested))

    def describe(self) -> str:
        return f"{self.name}: d_model={self.d_model}, {self.n_layers} layers, pattern '{pat.compress(self.tokens)}'"


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out

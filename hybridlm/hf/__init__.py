"""Checkpoint formats: transformers' families, mamba_ssm's, Zyphra's BlackMamba and hybridlm's own.

Our weight names map to a format's in exactly one place per family (`zamba.py`, `mamba.py`, `llama.py`,
`jamba.py`, `mamba_ssm.py`, `blackmamba.py`). Architectures no format expresses are saved in hybridlm's
own layout: config.json with `model_type: hybridlm` and our parameter names. `load.py` builds the model
on the meta device and fills it tensor by tensor in the requested dtype and device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hybridlm.config import ModelConfig
from hybridlm.errors import CheckpointError, ConfigError
from hybridlm.hf import blackmamba, jamba, llama, mamba, mamba_ssm, zamba


@dataclass(frozen=True)
class Family:
    """One checkpoint format. `transformers`: a transformers model_type, which `save_pretrained` picks by
    itself when the config fits; the others are written only when asked for by name."""

    name: str
    config_from_hf: Callable[[dict], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict]
    check_exportable: Callable[[ModelConfig], None]
    state_from_hf: Callable[[dict, ModelConfig], dict]
    state_to_hf: Callable[[dict, ModelConfig], dict]
    transformers: bool = True
    weights: str = "safetensors"  # or "bin": one pytorch_model.bin
    wrapper: str | None = None  # the .bin holds {wrapper: state_dict}


def _family(name: str, module, transformers: bool = True, weights: str = "safetensors", wrapper: str | None = None,
            **flag) -> Family:
    return Family(
        name,
        lambda d: module.config_from_hf(d, **flag),
        lambda c: module.config_to_hf(c, **flag),
        lambda c: module.check_exportable(c, **flag),
        lambda sd, c: module.state_from_hf(sd, c, **flag),
        lambda sd, c: module.state_to_hf(sd, c, **flag),
        transformers, weights, wrapper,
    )


FAMILIES: dict[str, Family] = {
    "zamba2": _family("zamba2", zamba, v2=True),
    "zamba": _family("zamba", zamba, v2=False),
    "mamba2": _family("mamba2", mamba, mamba2=True),
    "mamba": _family("mamba", mamba, mamba2=False),
    "llama": _family("llama", llama),
    "jamba": _family("jamba", jamba),
    "mamba_ssm": _family("mamba_ssm", mamba_ssm, transformers=False, weights="bin"),
    "blackmamba": _family("blackmamba", blackmamba, transformers=False, weights="bin", wrapper="model"),
}
NATIVE = "hybridlm"
HF = "hf"  # whichever transformers family fits
FORMATS = (HF, NATIVE, "mamba_ssm", "blackmamba")  # what `hybridlm convert --to` offers


def checkpoint_format(data: dict) -> str | None:
    """The format a config.json (as a dict) is written in: a FAMILIES key or 'hybridlm'; None if it has no
    format's marks. transformers' configs name their model_type; mamba_ssm's and Zyphra's have none."""
    model_type = data.get("model_type")
    if model_type == NATIVE or model_type in FAMILIES:
        return model_type
    if model_type is not None:
        allowed = [NATIVE] + [name for name, f in FAMILIES.items() if f.transformers]
        raise ConfigError(f"config.json model_type {model_type!r} is not supported; allowed: {', '.join(allowed)}")
    if blackmamba.is_config(data):
        return "blackmamba"
    if mamba_ssm.is_config(data):
        return "mamba_ssm"
    return None


def config_from_hf(data: dict) -> ModelConfig:
    """A checkpoint's config.json (as a dict) in any supported format."""
    fmt = checkpoint_format(data)
    if fmt is None:
        raise ConfigError("config.json is in no known format: expected a transformers config (model_type), "
                          "mamba_ssm's (d_model, n_layer, ssm_cfg), Zyphra's BlackMamba (num_layers, hidden_size, "
                          "mamba_moe_layers) or hybridlm's own")
    if fmt == NATIVE:
        if not isinstance(data.get(NATIVE), dict):
            raise ConfigError(f"config.json has model_type {NATIVE!r} but no {NATIVE!r} section of model fields")
        return ModelConfig(**data[NATIVE])
    try:
        return FAMILIES[fmt].config_from_hf(data)
    except KeyError as err:
        raise ConfigError(f"config.json for {fmt} is missing field {err.args[0]!r}") from None


def export_family(cfg: ModelConfig) -> str:
    """The transformers family this config exports to, or 'hybridlm' for our own layout."""
    for name, fam in FAMILIES.items():
        if not fam.transformers:
            continue
        try:
            fam.check_exportable(cfg)
            return name
        except ConfigError:
            continue
    return NATIVE


def resolve_format(cfg: ModelConfig, fmt: str | None) -> str:
    """A format name as a user gives it (None, 'hf', a family, 'hybridlm', ...) -> a FAMILIES key or 'hybridlm'."""
    if fmt is None:
        return export_family(cfg)
    if fmt == HF:
        found = export_family(cfg)
        if found == NATIVE:
            raise ConfigError(f"{cfg.name}: no transformers family expresses this architecture (layers "
                              f"{cfg.layers!r}); save it in format 'hybridlm'")
        return found
    if fmt != NATIVE and fmt not in FAMILIES:
        raise CheckpointError(f"unknown checkpoint format {fmt!r}; allowed: {', '.join([HF, *FAMILIES, NATIVE])}")
    return fmt


def load_pretrained(directory: str | Path, dtype=None, device=None):
    from hybridlm.hf.load import load_pretrained as _load

    return _load(directory, dtype, device)


def save_pretrained(model, directory: str | Path, format: str | None = None,
                    max_shard_size: int | str | None = None) -> Path:
    from hybridlm.hf.load import save_pretrained as _save

    return _save(model, directory, format, max_shard_size)

"""Checkpoint interchange with Hugging Face transformers.

Our weight names map to transformers' in exactly one place per family (`zamba.py`, `mamba.py`,
`llama.py`). Architectures no transformers family expresses (BlackMamba, custom hybrids) are saved in
hybridlm's own layout: config.json with `model_type: hybridlm` and our parameter names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from hybridlm.config import ModelConfig
from hybridlm.errors import CheckpointError, ConfigError, HybridLMError
from hybridlm.hf import llama, mamba, zamba
from hybridlm.hf.io import read_config, read_state_dict, write_checkpoint


@dataclass(frozen=True)
class Family:
    model_type: str
    config_from_hf: Callable[[dict], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict]
    check_exportable: Callable[[ModelConfig], None]
    state_from_hf: Callable[[dict, ModelConfig], dict]
    state_to_hf: Callable[[dict, ModelConfig], dict]


def _family(model_type: str, module, **flag) -> Family:
    return Family(
        model_type,
        lambda d: module.config_from_hf(d, **flag),
        lambda c: module.config_to_hf(c, **flag),
        lambda c: module.check_exportable(c, **flag),
        lambda sd, c: module.state_from_hf(sd, c, **flag),
        lambda sd, c: module.state_to_hf(sd, c, **flag),
    )


FAMILIES: dict[str, Family] = {
    "zamba2": _family("zamba2", zamba, v2=True),
    "zamba": _family("zamba", zamba, v2=False),
    "mamba2": _family("mamba2", mamba, mamba2=True),
    "mamba": _family("mamba", mamba, mamba2=False),
    "llama": _family("llama", llama),
}
NATIVE = "hybridlm"


def config_from_hf(data: dict) -> ModelConfig:
    """A transformers config.json (as a dict), or one written by hybridlm for its own layout."""
    model_type = data.get("model_type")
    if model_type == NATIVE:
        if not isinstance(data.get(NATIVE), dict):
            raise ConfigError(f"config.json has model_type {NATIVE!r} but no {NATIVE!r} section of model fields")
        return ModelConfig(**data[NATIVE])
    if model_type not in FAMILIES:
        raise ConfigError(
            f"config.json model_type {model_type!r} is not supported; allowed: {', '.join([*FAMILIES, NATIVE])}"
        )
    try:
        return FAMILIES[model_type].config_from_hf(data)
    except KeyError as err:
        raise ConfigError(f"config.json for {model_type} is missing field {err.args[0]!r}") from None


def export_family(cfg: ModelConfig) -> str:
    """The transformers family this config exports to, or 'hybridlm' for our own layout."""
    for name, fam in FAMILIES.items():
        try:
            fam.check_exportable(cfg)
            return name
        except ConfigError:
            continue
    return NATIVE


def load_pretrained(directory: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    from hybridlm.model import HybridLM

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    data = read_config(directory)
    cfg = config_from_hf(data)
    state = read_state_dict(directory)
    if data.get("model_type") != NATIVE:
        state = FAMILIES[data["model_type"]].state_from_hf(state, cfg)
    with torch.device("meta"):
        model = HybridLM(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{directory}: weights do not match the config "
                              f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                              f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(f"{directory}: weight {key} has shape {tuple(state[key].shape)}, "
                                  f"the config needs {tuple(ref.shape)}")
        state[key] = state[key].to(device=device, dtype=dtype)
    model.load_state_dict(state, assign=True)
    return model.eval()


def save_pretrained(model, directory: str | Path, format: str | None = None) -> Path:
    """format: a family name, 'hybridlm', or None to pick the transformers family when one fits."""
    cfg = model.config
    fmt = format or export_family(cfg)
    state = {k: v for k, v in model.state_dict().items()}
    if fmt == NATIVE:
        return write_checkpoint(Path(directory), {"model_type": NATIVE, "hybridlm": cfg.to_dict()}, state)
    if fmt not in FAMILIES:
        raise HybridLMError(f"unknown checkpoint format {fmt!r}; allowed: {', '.join([*FAMILIES, NATIVE])}")
    fam = FAMILIES[fmt]
    fam.check_exportable(cfg)
    hf_config = fam.config_to_hf(cfg)
    hf_config.setdefault("dtype", str(next(model.parameters()).dtype).removeprefix("torch."))
    return write_checkpoint(Path(directory), hf_config, fam.state_to_hf(state, cfg))

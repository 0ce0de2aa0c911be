"""Turn what a user typed (a preset name, a config file, a checkpoint directory) into a ModelConfig."""

from __future__ import annotations

from pathlib import Path

from hybridlm.config.model import ModelConfig
from hybridlm.config.presets import presets
from hybridlm.errors import ConfigError


def resolve_config(source: str) -> ModelConfig:
    if source in presets():
        return ModelConfig.from_preset(source)
    path = Path(source)
    if path.is_dir() or path.is_file():
        return ModelConfig.from_file(path)
    raise ConfigError(
        f"{source!r} is neither a preset, a config file nor a checkpoint directory; presets: {', '.join(presets())}"
    )


def is_checkpoint_dir(source: str) -> bool:
    path = Path(source)
    return path.is_dir() and (path / "config.json").is_file() and any(
        any(path.glob(pattern)) for pattern in ("*.safetensors", "*.bin"))

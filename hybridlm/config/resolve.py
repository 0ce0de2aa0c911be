"""Turn what a user typed (a preset name, a config file, a checkpoint or run directory) into a ModelConfig."""

from __future__ import annotations

from pathlib import Path

from hybridlm.config.model import ModelConfig


def resolve_config(source: str) -> ModelConfig:
    """The architecture at any model location (`hybridlm.locate`): preset, config file, exported model, checkpoint
    or run directory."""
    from hybridlm.locate import locate

    return locate(source).config()


def is_checkpoint_dir(source: str) -> bool:
    path = Path(source)
    return path.is_dir() and (path / "config.json").is_file() and any(
        any(path.glob(pattern)) for pattern in ("*.safetensors", "*.bin"))

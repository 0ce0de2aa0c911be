"""Model configuration: one validated `ModelConfig`, the layer-pattern language, and presets."""

from hybridlm.config.model import (
    AttentionConfig,
    Mamba1Config,
    Mamba2Config,
    MLPConfig,
    ModelConfig,
    MoEConfig,
    SharedBlockConfig,
)
from hybridlm.config.presets import presets

__all__ = [
    "AttentionConfig",
    "Mamba1Config",
    "Mamba2Config",
    "MLPConfig",
    "ModelConfig",
    "MoEConfig",
    "SharedBlockConfig",
    "presets",
]

"""hybridlm: build, plan, train, anneal, benchmark and serve hybrid SSM / attention / MoE language models."""

from hybridlm.config import ModelConfig, presets
from hybridlm.errors import ConfigError, HybridLMError
from hybridlm.model import HybridLM, LMOutput

__version__ = "0.1.0"
__all__ = ["ConfigError", "HybridLM", "HybridLMError", "LMOutput", "ModelConfig", "presets", "__version__"]

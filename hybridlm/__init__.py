"""hybridlm: build, plan, train, anneal, benchmark and serve hybrid SSM / attention / MoE language models.

The public names are imported on first use (PEP 562), so `import hybridlm` and the command line's data and help
commands do not import torch.
"""

from __future__ import annotations

import importlib

from hybridlm.errors import ConfigError, HybridLMError

__version__ = "0.1.0"
__all__ = ["ConfigError", "HybridLM", "HybridLMError", "LMOutput", "ModelConfig", "presets", "__version__"]

_LAZY = {"HybridLM": "hybridlm.model", "LMOutput": "hybridlm.model", "ModelConfig": "hybridlm.config",
         "presets": "hybridlm.config"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hybridlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

"""Reading and writing checkpoint directories: config.json plus safetensors (single or sharded)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hybridlm.errors import CheckpointError


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json (expected a transformers or hybridlm checkpoint directory)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object of config fields")
    return data


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors weights found")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            with safe_open(directory / name, framework="pt") as f:
                for key in f.keys():
                    state[key] = f.get_tensor(key)
        except Exception as err:  # safetensors raises its own error types for empty, truncated or corrupt files
            raise CheckpointError(f"{directory / name}: not a readable safetensors file ({err})") from None
    return state


def write_checkpoint(directory: Path, config: dict, state: dict[str, torch.Tensor]) -> Path:
    """Write config.json + model.safetensors atomically: files go to a temporary directory that is
    renamed into place, so an interrupted save never leaves a half-written checkpoint."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)  # left by a save killed between the two renames
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old)
    else:
        os.replace(tmp, directory)
    return directory


def take(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"checkpoint is missing weight {key!r}")
    return state.pop(key)

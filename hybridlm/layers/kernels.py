"""Optional fused CUDA kernels (mamba_ssm), chosen per call for CUDA tensors.

The pure-PyTorch path is complete on its own; kernels are imported lazily, only for CUDA inputs,
and disabled with HYBRIDLM_KERNELS=0. Which path runs is logged once per layer kind, so a silently
slow path is never a surprise.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os

import torch

log = logging.getLogger("hybridlm")
_announced: set[str] = set()


def _announce(kind: str, path: str) -> None:
    if kind not in _announced:
        _announced.add(kind)
        log.warning("hybridlm: %s uses %s", kind, path)


@functools.cache
def _module(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # missing, or built for another torch/CUDA
        return None


def _enabled(x: torch.Tensor) -> bool:
    return x.is_cuda and os.environ.get("HYBRIDLM_KERNELS", "1") != "0"


def _lookup(x: torch.Tensor, kind: str, module: str, name: str, fast: str, slow: str):
    """`module.name` for CUDA inputs when importable (announcing which path runs once), else None."""
    if not _enabled(x):
        return None
    mod = _module(module)
    fn = getattr(mod, name, None) if mod else None
    _announce(kind, fast if fn else f"{slow} on CUDA (slow: pip install mamba-ssm causal-conv1d)")
    return fn


def ssd_kernel(x: torch.Tensor):
    """mamba_ssm's `mamba_chunk_scan_combined`, or None for the PyTorch path."""
    return _lookup(x, "mamba2", "mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined",
                   "mamba_ssm Triton kernels", "the PyTorch SSD path")


def selective_scan_kernel(x: torch.Tensor):
    """mamba_ssm's `selective_scan_fn`, or None for the PyTorch path."""
    return _lookup(x, "mamba1", "mamba_ssm.ops.selective_scan_interface", "selective_scan_fn",
                   "mamba_ssm CUDA selective scan", "the PyTorch selective scan")

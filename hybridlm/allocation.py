"""Refusing, before anything is allocated, a model or a decoding cache larger than the memory that would hold it.

A typo such as `d_model: 1000000000` would otherwise die deep inside the allocator (or be killed by the kernel
after minutes of paging); the parameter count and cache bytes are exact and cheap (`hybridlm.plan`), so the check
costs nothing and names the size. Only what is certainly too large is refused: the weights (or the cache) alone
against the memory the device has free; activations come on top.
"""

from __future__ import annotations

import os

from hybridlm.errors import ConfigError
from hybridlm.units import binary_bytes


def available_bytes(device) -> int | None:
    """Free memory of a device: `MemAvailable` for the CPU, free CUDA memory; None when unknown."""
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    return None


def check_model_fits(cfg, device=None, dtype=None) -> None:
    """ConfigError when the parameters of `cfg` alone exceed the free memory of `device` (default: torch's default
    device; the meta device holds anything)."""
    import torch

    device = torch.device(device) if device is not None else torch.get_default_device()
    if device.type == "meta":
        return
    from hybridlm.plan.params import params

    dtype = dtype or torch.get_default_dtype()
    n = params(cfg).total
    need = n * dtype.itemsize
    free = available_bytes(device)
    if free is not None and need > free:
        raise ConfigError(
            f"the model has {n:,} parameters: {binary_bytes(need)} in {str(dtype).removeprefix('torch.')}, more than "
            f"the {binary_bytes(free)} free on {device.type}; check its sizes (d_model={cfg.d_model}, "
            f"{len(cfg.tokens)} sub-layers, vocab_size={cfg.vocab_size}) or plan it without building it "
            "(`hybridlm plan`)"
        )


def check_cache_fits(cfg, batch: int, length: int, dtype, device) -> None:
    """ConfigError when the decoding cache for `batch` sequences of `length` positions exceeds the free memory."""
    from hybridlm.kinds import KINDS

    need = sum(sum(KINDS[t].cache_bytes(cfg, batch, length, dtype.itemsize).values()) for t in cfg.tokens)
    free = available_bytes(device)
    if free is not None and need > free:
        raise ConfigError(
            f"decoding {batch} x {length:,} positions needs a cache of {binary_bytes(need)}, more than the "
            f"{binary_bytes(free)} free on {device.type}; generate fewer tokens"
        )

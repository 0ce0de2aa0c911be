"""Loading a checkpoint into `HybridLM` in a dtype and on a device, and saving one in any format.

The model is built on the meta device (no memory), then each weight is read, converted and moved on its
own, largest first, so host memory peaks near one copy of the weights in the requested dtype plus one
tensor as stored: a 1.4B model in bfloat16 needs about 2.8 GB, not its 5.6 GB fp32 checkpoint plus the
copy (see benchmarks/bench_load_memory.py). Safetensors are read through memory maps that each last one
tensor, .bin files through one map whose pages are handed back tensor by tensor (`hybridlm.hf.io`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from hybridlm.errors import CheckpointError, HybridLMError
from hybridlm.hf import FAMILIES, NATIVE, checkpoint_format, config_from_hf, resolve_format
from hybridlm.hf.io import Deferred, materialize, read_config, read_state_dict, write_checkpoint

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
AUTO = "auto"  # the dtype the checkpoint stores its weights in


def resolve_dtype(dtype) -> torch.dtype | str:
    """None -> float32; 'auto'; a name in DTYPES; a floating torch.dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise HybridLMError(f"dtype must be a floating type, got {dtype}")
        return dtype
    if isinstance(dtype, str) and (dtype == AUTO or dtype in DTYPES):
        return dtype if dtype == AUTO else DTYPES[dtype]
    raise HybridLMError(f"unknown dtype {dtype!r}; allowed: {', '.join(['auto', *DTYPES])}")


def resolve_device(device) -> torch.device:
    """None -> cpu; a device that exists on this machine."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise HybridLMError(f"unknown device {device!r}; allowed: cpu, cuda, cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HybridLMError(f"device {device!r} is not available: torch sees no CUDA GPU; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise HybridLMError(f"device {device!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s)")
    elif dev.type not in ("cpu", "meta"):
        if dev.type == "mps" and torch.backends.mps.is_available():
            return dev
        raise HybridLMError(f"device {device!r} is not supported here; allowed: cpu, cuda, cuda:N")
    return dev


def _stored_dtype(state: dict) -> torch.dtype:
    """The floating dtype holding most of the checkpoint's elements."""
    count: dict[torch.dtype, int] = {}
    for value in state.values():
        if value.dtype.is_floating_point:
            count[value.dtype] = count.get(value.dtype, 0) + value.numel()
    return max(count, key=count.get) if count else torch.float32


def load_pretrained(directory: str | Path, dtype=None, device=None):
    """A checkpoint directory in any supported format -> HybridLM in eval mode, weights in `dtype` (default
    float32; 'auto' keeps the checkpoint's) on `device` (default cpu)."""
    from hybridlm.model import HybridLM

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    target, dev = resolve_dtype(dtype), resolve_device(device)
    data = read_config(directory)
    fmt = checkpoint_format(data)
    cfg = config_from_hf(data)
    family = FAMILIES.get(fmt) if fmt != NATIVE else None
    state = read_state_dict(directory, wrapper=family.wrapper if family else None)
    if target == AUTO:
        target = _stored_dtype(state)
    if family is not None:
        state = family.state_from_hf(state, cfg)
    with torch.device("meta"), _no_init():
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
    filled = {}
    # largest first: a big tensor's transient copy as stored comes before most of the model exists
    for key in sorted(expected, key=lambda k: -expected[k].numel()):
        value = state.pop(key)
        source = materialize(value)
        tensor = source.to(device=dev, dtype=target) if source.is_floating_point() else source.to(dev)
        if _shares_storage(tensor, source):
            tensor = tensor.clone()  # own memory, not a view of a memory-mapped file the model would depend on
        filled[key] = tensor
        del source
        if isinstance(value, Deferred):
            value.release()
    model.load_state_dict(filled, assign=True)
    return model.eval()


@contextlib.contextmanager
def _no_init():
    """torch.nn.init's functions do nothing while a model is built on the meta device to be loaded: there are
    no values to set, and their meta kernels would import torch's Python decompositions and dynamo (~70 MB
    of resident memory, a quarter of a 130M model's bf16 weights). transformers skips them the same way."""
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
    for name in saved:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device == b.device and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def save_pretrained(model, directory: str | Path, format: str | None = None,
                    max_shard_size: int | str | None = None) -> Path:
    """format: None or 'hf' (the transformers family that fits; None falls back to 'hybridlm'), a family
    name ('zamba2', 'mamba', 'jamba', 'mamba_ssm', 'blackmamba', ...) or 'hybridlm'. Safetensors formats
    are sharded at `max_shard_size` (default 50GB, as transformers)."""
    cfg = model.config
    fmt = resolve_format(cfg, format)
    state = model.state_dict()
    n = model.num_parameters()
    if fmt == NATIVE:
        return write_checkpoint(Path(directory), {"model_type": NATIVE, "hybridlm": cfg.to_dict()}, state,
                                max_shard_size=max_shard_size, total_parameters=n)
    fam = FAMILIES[fmt]
    fam.check_exportable(cfg)
    config = fam.config_to_hf(cfg)
    if fam.transformers:
        config.setdefault("dtype", str(next(model.parameters()).dtype).removeprefix("torch."))
    return write_checkpoint(Path(directory), config, fam.state_to_hf(state, cfg), weights=fam.weights,
                            max_shard_size=max_shard_size, wrapper=fam.wrapper, total_parameters=n)

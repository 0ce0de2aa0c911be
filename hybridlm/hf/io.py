"""Reading and writing checkpoint directories: config.json plus safetensors (one file or shards with
`model.safetensors.index.json`) or PyTorch `.bin` files.

Weights are read lazily. A safetensors tensor stays on disk as a `Deferred` until the loader asks for it,
and is then read through a memory map opened for that tensor alone, so the mapped pages leave the
process as soon as it is converted (a map held open over the whole file would keep every page it
touched resident: about one more copy of the checkpoint). A .bin file is memory-mapped whole by
torch.load; once a tensor is converted, `Deferred.release` hands its pages back (madvise DONTNEED on
the file-backed map: a later read maps them in again from the file). The per-family name mappings run
unchanged on deferred tensors: any torch operation on them (cat, stack, chunk, indexing) is recorded on
meta tensors, which give the result's shape, and replayed when the result is read.
"""

from __future__ import annotations

import ctypes
import functools
import json
import mmap
import os
import pickle
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils._pytree import tree_flatten, tree_map

from hybridlm.errors import CheckpointError

SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_WEIGHTS = "pytorch_model.bin"
DEFAULT_MAX_SHARD_SIZE = "50GB"  # transformers' default
_SAFE_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


class Deferred:
    """A tensor not read yet: its shape and dtype (a meta tensor) and the function that reads it.

    Torch operations on it return new `Deferred`s (see the module docstring); `materialize` reads."""

    def __init__(self, meta: torch.Tensor, read: Callable[[], torch.Tensor], sources: tuple[Deferred, ...] = (),
                 release: Callable[[], None] | None = None):
        self.meta, self._read, self.sources, self._release = meta, read, sources, release

    @property
    def shape(self) -> torch.Size:
        return self.meta.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.meta.dtype

    def numel(self) -> int:
        return self.meta.numel()

    def materialize(self) -> torch.Tensor:
        return self._read()

    def release(self) -> None:
        """Give back the memory the tensors read for this one hold, once its result is no longer needed."""
        if self._release is not None:
            self._release()
        for source in self.sources:
            source.release()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        shape_of = _JOIN_SHAPES.get(func)
        if shape_of is not None:  # torch's meta cat/stack would import its Python meta kernels (~70 MB)
            tensors, dim = _join_args(*args, **kwargs)
            metas = [_as_meta(t) for t in tensors]
            dtype = functools.reduce(torch.promote_types, [m.dtype for m in metas])
            out = torch.empty(shape_of([m.shape for m in metas], dim), dtype=dtype, device="meta")
        else:
            out = func(*tree_map(_as_meta, args), **tree_map(_as_meta, kwargs))

        def run():
            return func(*tree_map(materialize, args), **tree_map(materialize, kwargs))

        sources = tuple(v for v in tree_flatten((args, kwargs))[0] if isinstance(v, Deferred))
        if isinstance(out, torch.Tensor):
            return Deferred(out, run, sources)
        if isinstance(out, (tuple, list)):  # chunk, split, unbind: each piece replays the op and takes its part
            return type(out)(Deferred(o, lambda i=i: run()[i], sources) for i, o in enumerate(out))
        return out

    def __getitem__(self, index):
        return Deferred.__torch_function__(torch.Tensor.__getitem__, (Deferred,), (self, index))

    def __getattr__(self, name: str):
        method = getattr(torch.Tensor, name)
        return lambda *args, **kwargs: Deferred.__torch_function__(method, (Deferred,), (self, *args), kwargs)

    def __repr__(self) -> str:
        return f"Deferred(shape={tuple(self.shape)}, dtype={self.dtype})"


def _join_args(tensors, dim=0):
    return list(tensors), dim


def _cat_shape(shapes: list[torch.Size], dim: int) -> list[int]:
    out = list(shapes[0])
    dim %= len(out)
    out[dim] = sum(s[dim] for s in shapes)
    return out


def _stack_shape(shapes: list[torch.Size], dim: int) -> list[int]:
    out = list(shapes[0])
    out.insert(dim % (len(out) + 1), len(shapes))
    return out


_JOIN_SHAPES = {torch.cat: _cat_shape, torch.stack: _stack_shape}


def _as_meta(value):
    if isinstance(value, Deferred):
        return value.meta
    if isinstance(value, torch.Tensor):
        return value.to("meta")
    return value


def materialize(value):
    """A tensor from a `Deferred` (read now) or a tensor (as it is); other values unchanged."""
    return value.materialize() if isinstance(value, Deferred) else value


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json (expected a transformers, mamba_ssm, BlackMamba or "
                              f"hybridlm checkpoint directory)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object of config fields")
    return data


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory: the shards an index names, else every *.safetensors,
    else the .bin files (PyTorch's format: `pytorch_model.bin` or shards with their index)."""
    for index_name in (SAFE_INDEX, BIN_INDEX):
        index = directory / index_name
        if index.is_file():
            try:
                names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise CheckpointError(f"{index}: not a shard index (a JSON object with a 'weight_map')") from None
            missing = [n for n in names if not (directory / n).is_file()]
            if missing:
                raise CheckpointError(f"{index} names shard {missing[0]}, which is missing from {directory}")
            return [directory / n for n in names]
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if not files:
        raise CheckpointError(f"{directory}: no weights found (expected *.safetensors, {SAFE_INDEX}, "
                              f"{BIN_WEIGHTS} or {BIN_INDEX})")
    return files


def read_state_dict(directory: Path, wrapper: str | None = None) -> dict[str, Deferred]:
    """Every weight of the checkpoint by name, deferred (.bin ones memory-mapped).

    `wrapper`: a .bin file may hold the state dict under this key (Megatron-style {"model": ...})."""
    state: dict[str, Deferred] = {}
    for path in weight_files(directory):
        part = _read_safetensors(path) if path.suffix == ".safetensors" else _read_bin(path, wrapper)
        clash = set(part) & set(state)
        if clash:
            raise CheckpointError(f"{path}: weight {sorted(clash)[0]!r} is also in another shard")
        state.update(part)
    return state


def _read_safetensors(path: Path) -> dict[str, Deferred]:
    def reader(key: str) -> Callable[[], torch.Tensor]:
        def read() -> torch.Tensor:
            with safe_open(path, framework="pt") as f:  # a map for this tensor only (module docstring)
                return f.get_tensor(key)

        return read

    out = {}
    try:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                piece = f.get_slice(key)
                dtype = _SAFE_DTYPES.get(piece.get_dtype())
                if dtype is None:
                    raise CheckpointError(f"{path}: weight {key!r} has dtype {piece.get_dtype()}, which torch cannot "
                                          f"hold")
                out[key] = Deferred(torch.empty(piece.get_shape(), dtype=dtype, device="meta"), reader(key))
    except CheckpointError:
        raise
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    return out


def _read_bin(path: Path, wrapper: str | None) -> dict[str, Deferred]:
    """torch.load with weights_only=True (no code from the file runs), memory-mapped when the file is in
    the zip format torch.save has written since PyTorch 1.6."""
    mapped = True
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
            mapped = False
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise CheckpointError(f"{path}: not a readable PyTorch weights file") from None
        raise CheckpointError(f"{path}: holds a Python object ({found.group(1)}) besides tensors, which "
                              "torch.load(weights_only=True) does not run; re-save the state dict alone with "
                              "torch.save") from None
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({type(err).__name__}: {err})") from None
    if wrapper is not None and isinstance(data, dict) and isinstance(data.get(wrapper), dict):
        data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors)"
                              + (f", optionally under {wrapper!r}" if wrapper else ""))
    return {k: Deferred(t.to("meta"), lambda t=t: t, release=functools.partial(_drop_pages, t) if mapped else None)
            for k, t in data.items()}


_madvise = None
if sys.platform.startswith("linux") and hasattr(mmap, "MADV_DONTNEED"):
    _madvise = ctypes.CDLL(None, use_errno=True).madvise
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _drop_pages(tensor: torch.Tensor) -> None:
    """Drop the resident pages of a tensor in a private file-backed memory map (never anonymous memory,
    which DONTNEED would zero): only whole pages inside its storage, so neighbours keep theirs."""
    if _madvise is None:
        return
    storage = tensor.untyped_storage()
    page = mmap.PAGESIZE
    start = -(-storage.data_ptr() // page) * page
    end = (storage.data_ptr() + storage.nbytes()) // page * page
    if end > start:
        _madvise(start, end - start, mmap.MADV_DONTNEED)


def write_checkpoint(directory: Path, config: dict, state: dict[str, torch.Tensor], weights: str = "safetensors",
                     max_shard_size: int | str | None = None, wrapper: str | None = None,
                     total_parameters: int | None = None) -> Path:
    """Write config.json and the weights atomically: files go to a temporary directory that is renamed into
    place, so an interrupted save never leaves a half-written checkpoint.

    weights='safetensors': one `model.safetensors`, or shards of at most `max_shard_size` (bytes, or a string
    like "5GB") named and indexed as transformers names them. weights='bin': one `pytorch_model.bin`
    (torch.save; under `wrapper` when given)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        if weights == "bin":
            if max_shard_size is not None:
                raise CheckpointError("max_shard_size applies to safetensors formats; this format is one "
                                      f"{BIN_WEIGHTS}")
            tensors = {k: v.detach().cpu() for k, v in state.items()}
            torch.save({wrapper: tensors} if wrapper else tensors, tmp / BIN_WEIGHTS)
        else:
            _write_safetensors(tmp, state, max_shard_size or DEFAULT_MAX_SHARD_SIZE, total_parameters)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)  # left by a save killed between the two renames
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old)
    else:
        os.replace(tmp, directory)
    return directory


def _write_safetensors(tmp: Path, state: dict[str, torch.Tensor], max_shard_size: int | str,
                       total_parameters: int | None) -> None:
    from huggingface_hub import split_torch_state_dict_into_shards

    try:
        split = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors",
                                                   max_shard_size=max_shard_size)
    except ValueError as err:
        raise CheckpointError(f"max_shard_size {max_shard_size!r}: {err} (give bytes or a size like '5GB')") from None
    for filename, names in split.filename_to_tensors.items():
        # one shard's tensors on the CPU at a time
        save_file({k: state[k].detach().contiguous().cpu() for k in names}, str(tmp / filename),
                  metadata={"format": "pt"})
    if split.is_sharded:
        metadata = dict(split.metadata)
        if total_parameters is not None:
            metadata = {"total_parameters": total_parameters, **metadata}
        index = {"metadata": metadata, "weight_map": dict(sorted(split.tensor_to_filename.items()))}
        (tmp / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def take(state: dict, key: str):
    if key not in state:
        raise CheckpointError(f"checkpoint is missing weight {key!r}")
    return state.pop(key)

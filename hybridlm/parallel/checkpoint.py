"""Checkpoints that reshard: torch.distributed.checkpoint (DCP) of every parameter and Adam state under its
single-process name and shape, whatever the layout that writes or reads it.

Each rank describes the elements it stores as boxes of the full tensor (`ParamLayout.boxes`: a tensor-
parallel shard of a packed projection is several boxes, one per part; an FSDP2 chunk cuts them further),
writes the boxes it owns (one copy of each element) and reads every box it holds; DCP's planner matches
boxes across layouts. So a run written at tp=2 (or FSDP2 on 4 ranks, or experts over 2 ranks) loads into
tp=1, one process without a process group, or any other layout, bit for bit.

DCP keys: the parameter names; `optim.NAME.exp_avg`, `optim.NAME.exp_avg_sq`, `optim.NAME.step`.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
from torch.distributed.checkpoint.planner import TensorWriteData, WriteItem, WriteItemType

from hybridlm.parallel.shards import ParamLayout, param_layouts

ADAM_STATE = ("exp_avg", "exp_avg_sq")


class Boxes:
    """Some boxes of a full tensor of `size`, each backed by a local tensor (a view into this rank's storage,
    so DCP loads in place). Speaks DCP's checkpointable-object protocol."""

    def __init__(self, size, boxes):
        self._size = torch.Size(size)
        self.boxes = [(torch.Size(offsets), t) for offsets, t in boxes]

    def size(self) -> torch.Size:
        return self._size

    def __create_write_items__(self, fqn, obj):
        return [WriteItem(index=MetadataIndex(fqn, offsets), type=WriteItemType.SHARD,
                          tensor_data=TensorWriteData(chunk=ChunkStorageMetadata(offsets, t.shape),
                                                      properties=TensorProperties.create_from_tensor(t),
                                                      size=self._size))
                for offsets, t in self.boxes]

    def __create_chunk_list__(self):
        return [ChunkStorageMetadata(offsets, t.shape) for offsets, t in self.boxes]

    def __get_tensor_shard__(self, index):
        for offsets, t in self.boxes:
            if offsets == index.offset:
                return t
        raise KeyError(f"{index.fqn}: no box at {tuple(index.offset)}")


class _SavePlanner(dcp.DefaultSavePlanner):
    def lookup_object(self, index):
        obj = self.state_dict[index.fqn]
        return obj.__get_tensor_shard__(index) if isinstance(obj, Boxes) else super().lookup_object(index)


class _LoadPlanner(dcp.DefaultLoadPlanner):
    def __init__(self):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)

    def set_up_planner(self, state_dict, metadata=None, is_coordinator=False):
        boxes = {k: v for k, v in state_dict.items() if isinstance(v, Boxes)}  # DCP's tensor walk drops them
        super().set_up_planner(state_dict, metadata, is_coordinator)
        self.state_dict.update(boxes)
        self.original_state_dict.update(boxes)

    def lookup_tensor(self, index):
        obj = self.state_dict[index.fqn]
        return obj.__get_tensor_shard__(index) if isinstance(obj, Boxes) else super().lookup_tensor(index)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def ensure_adam_state(optimizer: torch.optim.Optimizer) -> None:
    """Adam's state exists only after its first step; create it (zeros, step 0) so a load has targets."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not optimizer.state.get(p):
                optimizer.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                      "exp_avg_sq": torch.zeros_like(p)}


def state_view(model, layouts: dict[str, ParamLayout], optimizer=None, owned=None) -> dict:
    """The DCP state of `model` (and `optimizer`): boxes of every parameter (and Adam state) this rank holds,
    or with `owned` (name -> boxes) only the ones it writes."""
    params = dict(model.named_parameters())
    state: dict = {}

    def add(key: str, name: str, tensor: torch.Tensor) -> None:
        layout, local = layouts[name], local_tensor(tensor)
        boxes = owned(name) if owned is not None else ((o, s, w) for o, s, w, _ in layout.boxes())
        state[key] = Boxes(layout.shape, [(offsets, local[where]) for offsets, _, where in boxes])

    for name, p in params.items():
        add(name, name, p.data)
    if optimizer is not None:
        ensure_adam_state(optimizer)
        for name, p in params.items():
            st = optimizer.state[p]
            for k in ADAM_STATE:
                add(f"optim.{name}.{k}", name, st[k])
            state[f"optim.{name}.step"] = st["step"]
    return state


def save(path, state: dict) -> None:
    dcp.save(state, checkpoint_id=str(path), planner=_SavePlanner())


def load(path, state: dict, no_dist: bool = False) -> None:
    with warnings.catch_warnings():  # loading in one process (no process group) is intended
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        dcp.load(state, checkpoint_id=str(path), planner=_LoadPlanner(), no_dist=no_dist)


def plain_layouts(model) -> dict[str, ParamLayout]:
    """Layouts of an unsplit model: every parameter whole."""
    return param_layouts(model)


@torch.no_grad()
def load_full_state(model, layouts: dict[str, ParamLayout], full: dict[str, torch.Tensor]) -> None:
    """Copy a full (single-process) state dict into this rank's shards."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(full))
    if missing:
        from hybridlm.errors import CheckpointError

        raise CheckpointError(f"the weights lack parameters {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    for name, p in params.items():
        local = local_tensor(p.data)
        for offsets, sizes, where, _ in layouts[name].boxes():
            local[where] = full[name][tuple(slice(o, o + s) for o, s in zip(offsets, sizes, strict=True))]

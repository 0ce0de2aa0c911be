"""The device mesh of a run: data, expert and tensor parallelism on one `DeviceMesh`.

    world = dp x ep x tp,  mesh dims ("dp", "ep", "tp"), tp innermost (neighbouring ranks, the fastest links)

- the tp ranks of a model replica hold its shards and see the same tokens;
- the dp x ep "data ranks" (the flattened dims, "data") each see their own tokens; dense parameters are
  replicated (DDP) or sharded (FSDP2) over all of them;
- experts are split over "ep" (the data ranks of one dp index exchange tokens) and replicated or sharded
  over "dp".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

from hybridlm.errors import ConfigError


@dataclass(frozen=True)
class ParallelDims:
    world: int = 1
    tp: int = 1
    ep: int = 1
    sp: bool = False  # sequence parallelism: the residual stream (norms) split along the sequence over tp

    def __post_init__(self):
        for name in ("world", "tp", "ep"):
            if getattr(self, name) < 1:
                raise ConfigError(f"distributed.{name} must be >= 1, got {getattr(self, name)}")
        if self.world % (self.tp * self.ep):
            raise ConfigError(f"the world size {self.world} must be a multiple of distributed.tp x distributed.ep "
                              f"= {self.tp} x {self.ep}")
        if self.sp and self.tp == 1:
            raise ConfigError("distributed.sequence_parallel needs distributed.tp > 1")

    @property
    def dp(self) -> int:
        """Replicas of the expert shards (and data ranks per expert-parallel group)."""
        return self.world // (self.tp * self.ep)

    @property
    def data(self) -> int:
        """Ranks that see different tokens: dp x ep."""
        return self.world // self.tp

    @property
    def sharded(self) -> bool:
        """Whether any parameter is split across ranks by tensor or expert parallelism."""
        return self.tp > 1 or self.ep > 1


@dataclass
class ParallelMesh:
    """The mesh, this rank's coordinates and the process groups the parallel code communicates over
    (None in a single process)."""

    dims: ParallelDims
    mesh: object = None  # DeviceMesh ("dp", "ep", "tp")
    data_mesh: object = None  # its ("dp", "ep") dims flattened
    dp_rank: int = 0
    ep_rank: int = 0
    tp_rank: int = 0

    @classmethod
    def single(cls) -> ParallelMesh:
        return cls(ParallelDims())

    @classmethod
    def build(cls, dims: ParallelDims, device_type: str) -> ParallelMesh:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device_type, (dims.dp, dims.ep, dims.tp), mesh_dim_names=("dp", "ep", "tp"))
        dp, ep, tp = mesh.get_coordinate()
        return cls(dims, mesh, mesh["dp", "ep"]._flatten("data"), dp, ep, tp)

    @property
    def data_rank(self) -> int:
        return self.dp_rank * self.dims.ep + self.ep_rank

    def submesh(self, name: str):
        """"dp", "ep", "tp" or "data" (dp x ep flattened)."""
        return self.data_mesh if name == "data" else self.mesh[name]

    def group(self, name: str):
        return self.submesh(name).get_group() if self.mesh is not None else None

    @property
    def tp_group(self):
        return self.group("tp")

    @property
    def ep_group(self):
        return self.group("ep")

    @property
    def data_group(self):
        return self.group("data")

    @property
    def dp_group(self):
        return self.group("dp")


def world_group():
    return dist.group.WORLD if dist.is_initialized() else None

"""A `HybridLM` laid out over a `ParallelMesh`: built on the meta device, split by tensor and expert
parallelism, wrapped for data parallelism (FSDP2, DDP or DDP + ZeRO-1), and only then materialized, each
rank computing just its own elements with the single-process init (`hybridlm.init`).

    pm = ParallelModel.build(cfg, pmesh, mode="fsdp2", device=device)
    loss = pm.wrapped(ids, shift_labels=targets).loss; loss.backward()
    pm.finish_grads(); norm = pm.clip_grad_norm_(1.0); optimizer.step()

`finish_grads` completes what the wrappers do not: gradients of replicated tensor-parallel elements that
only saw this rank's share (summed over tp) and, under DDP with expert parallelism, the experts' gradients
(averaged over the data ranks, as DDP averages the rest). The gradient norm counts every element once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from hybridlm.config import ModelConfig
from hybridlm.init import fill_
from hybridlm.model import HybridLM
from hybridlm.parallel.mesh import ParallelMesh
from hybridlm.parallel.shards import ParamLayout, module_plans, param_layouts, validate
from hybridlm.parallel.tp import parallelize


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The tensor this rank stores (a DTensor's local shard)."""
    return t.to_local() if hasattr(t, "to_local") else t


def _fsdp_rows(param) -> tuple[int, int] | None:
    """Local rows [lo, hi) of dim 0 that FSDP2 keeps on this rank (torch.chunk pieces over its mesh), or None
    for a plain tensor."""
    if not hasattr(param, "device_mesh"):
        return None
    rows, ways = param.shape[0], param.device_mesh.size()
    lo = min(param.device_mesh.get_local_rank() * -(-rows // ways), rows)
    return lo, lo + param.to_local().shape[0]


@dataclass
class ParallelModel:
    model: HybridLM  # the split model (an FSDP module under fsdp2)
    wrapped: nn.Module  # what forward/backward run on (DDP wraps `model`)
    pmesh: ParallelMesh
    mode: str  # none | ddp | zero1 | fsdp2
    layouts: dict[str, ParamLayout]  # of the stored local tensors (FSDP2 chunks included)

    @classmethod
    def build(cls, cfg: ModelConfig, pmesh: ParallelMesh, mode: str, device: torch.device,
              mixed_precision: torch.dtype | None = None, seq_len: int | None = None) -> ParallelModel:
        dims = pmesh.dims
        validate(cfg, dims.tp, dims.ep, dims.sp, seq_len)
        with torch.device("meta"):
            model = HybridLM(cfg)  # draws its init seed from torch's generator, as the single process does
        rules, seed = model.init_rules(), model.init_seed
        layouts = param_layouts(model, dims.tp, pmesh.tp_rank, dims.ep, pmesh.ep_rank, dims.sp)
        parallelize(model, pmesh, layouts)
        wrapped = model
        if mode == "fsdp2":
            _fully_shard(model, pmesh, mixed_precision)
        model.to_empty(device=device)
        with torch.no_grad():
            for name, p in model.named_parameters():
                rows = _fsdp_rows(p)
                if rows is not None:
                    layouts[name] = layouts[name].chunk(*rows)
                layout = layouts[name]
                fill_(local_tensor(p), rules[name], seed, name, layout.local_index(device), layout.shape)
        if mode in ("ddp", "zero1"):
            from torch.nn.parallel import DistributedDataParallel

            experts = [n for n, lay in layouts.items() if lay.expert and dims.ep > 1]
            if experts:
                DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, experts)
            ids = [device.index] if device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=ids, process_group=pmesh.data_group)
        return cls(model, wrapped, pmesh, mode, layouts)

    # ----- gradients -----
    @torch.no_grad()
    def finish_grads(self) -> None:
        dims = self.pmesh.dims
        for name, p in self.model.named_parameters():
            if p.grad is None:
                continue
            layout, grad = self.layouts[name], local_tensor(p.grad)
            if layout.expert and dims.ep > 1 and self.mode in ("ddp", "zero1"):
                if dims.dp > 1:
                    dist.all_reduce(grad, group=self.pmesh.dp_group)
                grad.div_(dims.data)
            if layout.partial:
                for where in layout.shared_slices():
                    part = grad[where].contiguous()
                    dist.all_reduce(part, group=self.pmesh.tp_group)
                    grad[where] = part

    def _replica(self, layout: ParamLayout) -> bool:
        """Whether another rank holds the same copy of this rank's elements of the parameter and counts
        them instead (data-parallel replicas other than the first)."""
        if self.mode == "fsdp2":
            return False
        return (self.pmesh.dp_rank if layout.expert else self.pmesh.data_rank) > 0

    def owned_boxes(self, name: str):
        """(global offsets, sizes, local slices) of the elements this rank is the one copy of."""
        layout = self.layouts[name]
        if self._replica(layout):
            return
        for offsets, sizes, where, shared in layout.boxes():
            if not shared or self.pmesh.tp_rank == 0:
                yield offsets, sizes, where

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> float:
        """Clip to `max_norm` (0: no clipping) by the global norm (every element counted once, over all
        ranks), as torch.nn.utils.clip_grad_norm_ does in one process; returns the norm before clipping."""
        grads = [(name, local_tensor(p.grad)) for name, p in self.model.named_parameters() if p.grad is not None]
        total = torch.zeros((), dtype=torch.float64, device=grads[0][1].device if grads else None)
        for name, grad in grads:
            for _, _, where in self.owned_boxes(name):
                total += grad[where].double().pow(2).sum()
        dist.all_reduce(total)
        norm = float(total.sqrt())
        if max_norm > 0 and math.isfinite(norm):
            coef = max_norm / (norm + 1e-6)
            if coef < 1:
                for _, grad in grads:
                    grad.mul_(coef)
        return norm

    def local_bytes(self, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
        """Bytes this rank stores for parameters, gradients and Adam's m and v."""
        params = list(self.model.parameters())
        out = {"params": sum(local_tensor(p).numel() * local_tensor(p).element_size() for p in params),
               "grads": sum(local_tensor(p.grad).numel() * local_tensor(p.grad).element_size()
                            for p in params if p.grad is not None)}
        if optimizer is not None:
            state = [s for p in params for k, s in optimizer.state.get(p, {}).items() if k in ("exp_avg", "exp_avg_sq")]
            out["optimizer"] = sum(local_tensor(s).numel() * local_tensor(s).element_size() for s in state)
        return out


def _fully_shard(model: HybridLM, pmesh: ParallelMesh, mixed_precision: torch.dtype | None) -> None:
    """FSDP2 units: every sub-layer and shared block, then the root, over the data ranks; with expert
    parallelism the experts form their own unit over "dp" (their replicas), the router its own over the
    data ranks, and the experts' gradients are divided by the number of data ranks (each expert saw the
    tokens of its whole expert-parallel group)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dims = pmesh.dims
    mp = MixedPrecisionPolicy(param_dtype=mixed_precision, reduce_dtype=torch.float32) if mixed_precision \
        else MixedPrecisionPolicy()
    data = pmesh.submesh("data")
    for _, module, plan in module_plans(model, dims.tp).entries:
        if plan.experts and dims.ep > 1:
            fully_shard(module.router, mesh=data, mp_policy=mp)
            fully_shard(module, mesh=pmesh.submesh("dp"), mp_policy=mp)
            module.set_gradient_divide_factor(float(dims.data))
    for group in (model.layers, model.shared or []):
        for sub in group:
            fully_shard(sub, mesh=data, mp_policy=mp)
    fully_shard(model, mesh=data, mp_policy=mp)

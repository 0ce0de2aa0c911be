"""Tensor and expert parallelism applied to a plain `HybridLM` from outside (torchtitan style), following
the kinds' plans (`hybridlm.kinds.tp`): every parameter replaced by this rank's shard (`layout`), the
per-rank sizes set on the modules, the region edges hooked in (Megatron's f and g, or the sequence-parallel
all-gather / reduce-scatter), row-parallel linears adding their bias once after the reduction, the
vocabulary-parallel embedding, output head and cross-entropy, and the MoE layers routed across ranks.

Parameter names do not change, so optimizer groups, checkpoints (`hybridlm.parallel.checkpoint`) and the
init rules keep working by name; the shards are plain tensors, so DDP and FSDP2 wrap the result as they
wrap any model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.errors import HybridLMError
from hybridlm.model import HybridLM
from hybridlm.parallel.experts import ExpertRouting
from hybridlm.parallel.mesh import ParallelMesh
from hybridlm.parallel.regions import Region, vocab_parallel_cross_entropy
from hybridlm.parallel.shards import ParamLayout, module_plans


class RowParallelLinear(nn.Module):
    """A linear whose input is split along its features: partial products summed over the ranks (or
    reduce-scattered along the sequence), then the bias, once."""

    def __init__(self, linear: nn.Linear, region: Region):
        super().__init__()
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.region.leave(F.linear(x, self.weight))
        return y if self.bias is None else y + self.bias


class VocabParallelEmbedding(nn.Module):
    """Rank r holds vocabulary rows [start, start + n): other ids look up zeros, and the ranks' partial
    embeddings are summed (reduce-scattered along the sequence under sequence parallelism)."""

    def __init__(self, embedding: nn.Embedding, start: int, region: Region):
        super().__init__()
        self.weight = embedding.weight
        self.start, self.region = start, region

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        local = ids - self.start
        inside = (local >= 0) & (local < n)
        out = F.embedding(local.clamp(0, n - 1), self.weight) * inside[..., None].to(self.weight.dtype)
        return self.region.leave(out)


class TensorParallelLM(HybridLM):
    """A HybridLM whose output head is split along the vocabulary (logits are this rank's columns)."""

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        weight = self.embed.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(self.tp_region.enter(h), weight)

    def cross_entropy(self, logits, targets, reduction="mean"):
        return vocab_parallel_cross_entropy(logits, targets, self.vocab_start, self.tp_region.group, reduction)

    def generate(self, *args, **kwargs):
        raise HybridLMError("generation runs on the whole model: load the run's OUTPUT/final (or a checkpoint) "
                            "with HybridLM.from_pretrained / load_checkpoint in one process")


@torch.no_grad()
def shard_parameters_(model: nn.Module, layouts: dict[str, ParamLayout]) -> None:
    """Replace every parameter by its local shard: its values gathered from the full tensor, or an empty
    meta tensor of the local shape for a model built on the meta device."""
    for name, param in list(model.named_parameters()):
        layout = layouts[name]
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if param.is_meta:
            local = torch.empty(layout.local_shape, dtype=param.dtype, device="meta")
        else:
            local = param.detach().flatten()[layout.local_index(param.device)].clone()
        setattr(owner, leaf, nn.Parameter(local, requires_grad=param.requires_grad))


def parallelize(model: HybridLM, pmesh: ParallelMesh, layouts: dict[str, ParamLayout]) -> HybridLM:
    """Split `model` in place for this rank of `pmesh` (tensor parallelism over "tp", experts over "ep",
    MoE balancing statistics over the data ranks). `layouts`: `param_layouts` for this rank."""
    dims = pmesh.dims
    shard_parameters_(model, layouts)
    region = Region(pmesh.tp_group if dims.tp > 1 else None, dims.sp)
    ops = {"sum": region.sum, "mean": region.mean}
    for _, module, plan in module_plans(model, dims.tp).entries:
        if module is model:
            continue
        if dims.tp > 1:
            for path, attrs in plan.local.items():
                sub = module.get_submodule(path)
                for key, value in attrs.items():
                    setattr(sub, key, value)
            for path, op in plan.reduce.items():
                owner, _, attr = path.rpartition(".")
                setattr(module.get_submodule(owner), attr, ops[op])
            for path in plan.enter:
                module.get_submodule(path).register_forward_pre_hook(
                    lambda m, args: (region.enter(args[0]), *args[1:]))
            for path in plan.leave:
                owner, _, leaf = path.rpartition(".")
                parent = module.get_submodule(owner)
                setattr(parent, leaf, RowParallelLinear(getattr(parent, leaf), region))
        if plan.experts and (dims.tp > 1 or dims.ep > 1 or dims.data > 1):
            module.parallel = ExpertRouting(region, model.config.moe.n_experts,
                                            pmesh.ep_group if dims.ep > 1 else None,
                                            pmesh.data_group if dims.data > 1 else None)
    if dims.tp > 1:
        start = layouts["embed.weight"].runs[0][0].start
        model.embed = VocabParallelEmbedding(model.embed, start, region)
        model.__class__ = TensorParallelLM
        model.tp_region, model.vocab_start = region, start
    return model

"""AdamW with parameter groups: weight decay on matrices, none on norms, biases and other 1-d parameters,
embeddings (each as configured) and the SSM's own parameters (A_log, D and the dt bias of Mamba1 and
Mamba2, which their layers mark `_no_weight_decay`, as mamba_ssm does), whatever their shape.

Which parameters decay is decided by name on the plain model (`plain_no_decay_names`: module types and the
layers' marks), not on a split one (its shards are new tensors in new modules), so every layout gets the
same groups."""

from __future__ import annotations

import torch
from torch import nn

from hybridlm.layers.norms import LayerNorm, RMSNorm
from hybridlm.train.config import OptimConfig


def no_decay_names(model: nn.Module, cfg: OptimConfig) -> set[str]:
    """Names of the parameters of a plain model that get no weight decay."""
    out: set[str] = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            is_norm = isinstance(module, (RMSNorm, LayerNorm, nn.LayerNorm))
            if (
                getattr(p, "_no_weight_decay", False)
                or (is_norm and cfg.no_decay_norms)
                or (p.ndim < 2 and not is_norm and cfg.no_decay_biases)
                or (isinstance(module, nn.Embedding) and cfg.no_decay_embeddings)
            ):
                out.add(name)
    return out


def plain_no_decay_names(model_config, cfg: OptimConfig) -> set[str]:
    """`no_decay_names` of the plain model of a config (built on the meta device, torch's generator untouched)."""
    from hybridlm.model import HybridLM

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return no_decay_names(HybridLM(model_config), cfg)


def param_groups(model: nn.Module, cfg: OptimConfig, exempt: set[str] | None = None) -> list[dict]:
    """Two groups: {"params", "weight_decay": cfg.weight_decay} and {"params", "weight_decay": 0}, in a fixed
    order (module order), named by `names` for inspection. `exempt`: the no-decay names (default: computed on
    `model` itself)."""
    exempt = no_decay_names(model, cfg) if exempt is None else exempt
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if name in exempt else decay).append((name, p))
    groups = [
        {"params": [p for _, p in decay], "names": [n for n, _ in decay], "weight_decay": cfg.weight_decay},
        {"params": [p for _, p in no_decay], "names": [n for n, _ in no_decay], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, lr: float, zero1: bool = False, exempt: set[str] | None = None,
    process_group=None,
) -> torch.optim.Optimizer:
    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(model, cfg, exempt)]
    kwargs = dict(lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, foreach=False)
    if zero1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        first, *rest = groups
        opt = ZeroRedundancyOptimizer(
            first["params"], optimizer_class=torch.optim.AdamW, weight_decay=first["weight_decay"],
            process_group=process_group, **kwargs
        )
        for g in rest:
            opt.add_param_group(g)
        return opt
    return torch.optim.AdamW(groups, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr

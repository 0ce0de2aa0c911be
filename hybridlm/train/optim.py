"""AdamW with parameter groups: weight decay on matrices, none on norms, biases / 1-d parameters (SSM
A_log, D, dt_bias) and embeddings, each as configured."""

from __future__ import annotations

import torch
from torch import nn

from hybridlm.layers.norms import LayerNorm, RMSNorm
from hybridlm.train.config import OptimConfig


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Two groups: {"params", "weight_decay": cfg.weight_decay} and {"params", "weight_decay": 0}, in a fixed
    order (module order), named by `names` for inspection."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            is_norm = isinstance(module, (RMSNorm, LayerNorm, nn.LayerNorm))
            is_emb = isinstance(module, nn.Embedding)
            is_bias = p.ndim < 2 and not is_norm
            skip = (
                (is_norm and cfg.no_decay_norms)
                or (is_bias and cfg.no_decay_biases)
                or (is_emb and cfg.no_decay_embeddings)
            )
            (no_decay if skip else decay).append((name, p))
    groups = [
        {"params": [p for _, p in decay], "names": [n for n, _ in decay], "weight_decay": cfg.weight_decay},
        {"params": [p for _, p in no_decay], "names": [n for n, _ in no_decay], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, lr: float, zero1: bool = False
) -> torch.optim.Optimizer:
    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(model, cfg)]
    kwargs = dict(lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, foreach=False)
    if zero1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        first, *rest = groups
        opt = ZeroRedundancyOptimizer(
            first["params"], optimizer_class=torch.optim.AdamW, weight_decay=first["weight_decay"], **kwargs
        )
        for g in rest:
            opt.add_param_group(g)
        return opt
    return torch.optim.AdamW(groups, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr

"""The planner: parameters, FLOPs, memory, budgets and sizing advice, computed from a `ModelConfig`
alone (no model is built), so the plan and the model can never disagree.

    from hybridlm.plan import params, flops, memory
    params(cfg).total, flops(cfg, seq_len=4096).train_per_token, memory(cfg, batch=1, seq_len=4096)

The functions below shadow their modules' names on this package on purpose (`hybridlm.plan.flops` is
the function); import from the modules (`from hybridlm.plan.flops import ssd_flops`) for the rest.
"""

from hybridlm.plan.budget import (
    chinchilla_optimal,
    flop_budget,
    model_budget,
    size_token_pairs,
    tokens_affordable,
)
from hybridlm.plan.flops import FlopReport, flops, sublayer_flops
from hybridlm.plan.memory import MemoryReport, memory
from hybridlm.plan.params import ParamReport, params
from hybridlm.plan.report import build_plan
from hybridlm.plan.sizing import sizing_advice

__all__ = [
    "FlopReport",
    "MemoryReport",
    "ParamReport",
    "build_plan",
    "chinchilla_optimal",
    "flop_budget",
    "flops",
    "memory",
    "model_budget",
    "params",
    "size_token_pairs",
    "sizing_advice",
    "sublayer_flops",
    "tokens_affordable",
]

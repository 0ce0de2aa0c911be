"""The planner: parameters, FLOPs, memory, budgets and sizing advice, computed from a `ModelConfig`
alone (no model is built), so the plan and the model can never disagree.

    from hybridlm.plan import params, flops, memory
    params(cfg).total, flops(cfg, seq_len=4096).train_per_token, memory(cfg, batch=1, seq_len=4096)
"""

from hybridlm.plan.flops import FlopReport, flops, sublayer_flops
from hybridlm.plan.params import ParamReport, params

__all__ = ["FlopReport", "ParamReport", "flops", "params", "sublayer_flops"]

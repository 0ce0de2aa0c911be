"""Context parallelism for inference: one long sequence over several ranks.

    merge      attention partials and their log-sum-exp merge (split-KV decoding on one device)
    tree       Tree Attention's reduction across ranks (two all-reduces, payload independent of context)
    ring       passing KV blocks around the ring (prefill, and the ring-attention baseline)
    state      Mamba layers by state passing; halo: the conv's and the window's rows before a slice
    kv         the attention cache slots that attend across ranks
    context    ContextParallel: the generation's phases, what the kinds' specs build
    launch     `--nproc N`: starting local ranks with torchrun
"""

from hybridlm.parallel.context import MODES, ContextParallel
from hybridlm.parallel.merge import Partial, attend, merge, split_kv_attention
from hybridlm.parallel.tree import tree_merge

__all__ = ["MODES", "ContextParallel", "Partial", "attend", "merge", "split_kv_attention", "tree_merge"]

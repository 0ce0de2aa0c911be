"""Parallelism across ranks.

Context parallelism for inference: one long sequence over several ranks.

    merge      attention partials and their log-sum-exp merge (split-KV decoding on one device)
    tree       Tree Attention's reduction across ranks (two all-reduces, payload independent of context)
    ring       passing KV blocks around the ring (prefill, and the ring-attention baseline)
    state      Mamba layers by state passing; halo: the conv's and the window's rows before a slice
    kv         the attention cache slots that attend across ranks
    context    ContextParallel: the generation's phases, what the kinds' specs build
    launch     `--nproc N`: starting local ranks with torchrun

Training at scale on one device mesh (docs/parallel.md): tensor parallelism for every layer kind (from the
kinds' `tp_plan`), expert parallelism (all-to-all dispatch) and data parallelism (FSDP2 / DDP / ZeRO-1),
with layout-independent init and checkpoints that reshard.

    mesh        ParallelDims (world = dp x ep x tp), ParallelMesh (DeviceMesh, coordinates, groups)
    shards      which global elements of every parameter a rank holds (ParamLayout, from the plans)
    regions     differentiable collectives at region edges; the vocabulary-parallel cross-entropy
    tp          `parallelize`: split a plain HybridLM in place (shards, hooks, row-parallel linears)
    experts     MoE routing across ranks (expert parallelism, the global balancing loss)
    model       ParallelModel: meta build, split, wrap, materialize; gradient completion and norm
    checkpoint  DCP checkpoints by single-process name and shape (boxes), resharding on load
    footprint   per-rank bytes of weights, gradients and optimizer state (the planner's)
"""

from hybridlm.parallel.context import MODES, ContextParallel
from hybridlm.parallel.merge import Partial, attend, merge, split_kv_attention
from hybridlm.parallel.tree import tree_merge

__all__ = ["MODES", "ContextParallel", "Partial", "attend", "merge", "split_kv_attention", "tree_merge"]

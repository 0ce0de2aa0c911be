"""Training at scale on one device mesh: tensor parallelism (every layer kind, from the kinds' plans),
expert parallelism (all-to-all dispatch) and data parallelism (FSDP2 / DDP / ZeRO-1), with layout-
independent init and checkpoints that reshard. See docs/parallel.md.

    mesh.py        ParallelDims (world = dp x ep x tp), ParallelMesh (DeviceMesh, coordinates, groups)
    layout.py      which global elements of every parameter a rank holds (from `LayerKind.tp_plan`)
    comm.py        differentiable collectives at region edges; vocabulary-parallel cross-entropy
    tp.py          `parallelize`: split a plain HybridLM in place (shards, hooks, row-parallel linears)
    experts.py     MoE routing across ranks (expert parallelism, the global balancing loss)
    model.py       ParallelModel: meta build, split, wrap, materialize; gradient completion and norm
    checkpoint.py  DCP checkpoints by single-process name and shape (boxes), resharding on load
    footprint.py   per-rank bytes of weights, gradients and optimizer state (the planner's)
"""

"""Tree Attention's reduction (arXiv 2408.04093): each rank attends its KV shard, then two all-reduces
make every rank's partial the attention over the whole cache,

    m = all_reduce(lse, MAX);   w = exp(lse - m);   [num, den] = all_reduce([out * w, w], SUM)

(`hybridlm.parallel.merge`'s formula with the sum over ranks done by the collective; the all-reduce
itself runs as a tree or ring inside the backend). The payload is b x heads x queries x (head_dim + 2)
fp32 values per rank, whatever the context length."""

from __future__ import annotations

import torch

from hybridlm.parallel.comm import Comm
from hybridlm.parallel.merge import Partial, normalize, weights


def tree_merge(part: Partial, comm: Comm) -> Partial:
    if comm.world == 1:
        return part
    m = comm.all_reduce(part.lse.clone(), "max")
    w = weights(part.lse, m)
    packed = comm.all_reduce(torch.cat([part.out * w[..., None], w[..., None]], dim=-1), "sum")
    return normalize(packed[..., :-1], packed[..., -1], m)

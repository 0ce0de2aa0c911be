"""Held-out evaluation: mean next-token cross-entropy (and perplexity) of a model on packed shards."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from hybridlm.data.shards import TokenShardDataset


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    dataset: TokenShardDataset | str,
    seq_len: int = 128,
    batch_size: int = 8,
    max_batches: int = 0,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """Loss over the first non-overlapping windows of seq_len + 1 tokens (all of them when max_batches is 0),
    in a fixed order, so two models (or one model before and after annealing) see the same tokens.
    Returns {"loss", "ppl", "tokens"}; the loss is pure cross-entropy (no MoE auxiliary loss)."""
    if isinstance(dataset, str):
        from hybridlm.train.data import open_dataset

        dataset = open_dataset(dataset)
    n = (dataset.total_tokens - 1) // seq_len
    if max_batches:
        n = min(n, max_batches * batch_size)
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for first in range(0, n, batch_size):
        rows = [
            dataset.tokens(w * seq_len, seq_len + 1).astype("int64")
            for w in range(first, min(n, first + batch_size))
        ]
        ids = torch.from_numpy(np.stack(rows)).to(device)
        with torch.autocast(
            device_type=torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None
        ):
            logits = model(ids[:, :-1]).logits
        if hasattr(model, "cross_entropy"):  # a HybridLM, possibly split along the vocabulary
            loss = model.cross_entropy(logits, ids[:, 1:], reduction="sum")
        else:
            loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
        total += float(loss)
        count += ids[:, 1:].numel()
    model.train(was_training)
    mean = total / max(count, 1)
    return {"loss": mean, "ppl": math.exp(min(mean, 50.0)), "tokens": count}

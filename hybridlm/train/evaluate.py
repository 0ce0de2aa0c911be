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
    document_mask: bool = True,
) -> dict:
    """Loss over the first non-overlapping windows of seq_len + 1 tokens (all of them when max_batches is 0),
    in a fixed order, so two models (or one model before and after annealing) see the same tokens.
    Returns {"loss", "ppl", "tokens"}; the loss is pure cross-entropy (no MoE auxiliary loss).
    With `document_mask` and an EOS id in the shards, documents stay apart as in training."""
    from hybridlm.train.data import check_ids, document_ids, open_dataset

    if isinstance(dataset, str):
        dataset = open_dataset(dataset)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    max_seq = getattr(getattr(model, "config", None), "max_seq_len", None)
    if max_seq is not None and seq_len > max_seq:
        from hybridlm.errors import ConfigError

        raise ConfigError(f"seq_len {seq_len} exceeds the model's max_seq_len {max_seq}")
    n = (dataset.total_tokens - 1) // seq_len
    if max_batches:
        n = min(n, max_batches * batch_size)
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    eos = dataset.eos_id if document_mask and dataset.index.get("append_eos", True) else None
    total, count = 0.0, 0
    for first in range(0, n, batch_size):
        rows = [
            dataset.tokens(w * seq_len, seq_len + 1).astype("int64")
            for w in range(first, min(n, first + batch_size))
        ]
        batch = np.stack(rows)
        check_ids(batch, vocab, lambda r, first=first: (dataset, (first + r) * seq_len))
        ids = torch.from_numpy(batch).to(device)
        with torch.autocast(
            device_type=torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None
        ):
            inputs = ids[:, :-1]
            logits = model(inputs, seq_idx=document_ids(inputs, eos) if eos is not None else None).logits
        targets = ids[:, 1:] if eos is None else ids[:, 1:].masked_fill(inputs == eos, -100)
        if hasattr(model, "cross_entropy"):  # a HybridLM, possibly split along the vocabulary
            loss = model.cross_entropy(logits, targets, reduction="sum")
        else:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum", ignore_index=-100)
        total += float(loss)
        count += int((targets != -100).sum())
    model.train(was_training)
    mean = total / max(count, 1)
    return {"loss": mean, "ppl": math.exp(min(mean, 50.0)), "tokens": count}

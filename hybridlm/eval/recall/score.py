"""Scoring recall answers: the share of answer tokens right (`accuracy`, what Zoology reports for MQAR) and the
share of examples with every answer token right (`exact`, what greedy decoding would get fully right)."""

from __future__ import annotations

import numpy as np

from hybridlm.errors import HybridLMError


def score(targets, predictions) -> dict:
    """targets, predictions: (examples, answers per example) token ids."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    if targets.shape != predictions.shape or targets.ndim != 2 or targets.size == 0:
        raise HybridLMError(f"predictions {predictions.shape} must match the targets {targets.shape} "
                            "(examples, answers per example), neither empty")
    right = targets == predictions
    return {"accuracy": float(right.mean()), "exact": float(right.all(axis=1).mean()),
            "examples": int(targets.shape[0]), "answers": int(targets.size)}

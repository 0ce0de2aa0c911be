"""Running the recall suite on a model: per task and context length, the greedy (argmax) prediction of every
answer token under teacher forcing, scored."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from hybridlm.errors import HybridLMError
from hybridlm.eval.recall.score import score
from hybridlm.eval.recall.tasks import TASKS, check, generate

LOGITS_BUDGET = 1 << 27  # logits values held at once (512 MiB in fp32): long contexts x large vocabularies


@torch.no_grad()
def predict_answers(model, tokens: np.ndarray, answers: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """The model's argmax at each answer position (predicting it from the tokens before), (n, answers)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    keep = tokens.shape[1] - int(answers.min()) + 1  # logits from the position before the first answer on
    rows = max(1, min(batch_size, LOGITS_BUDGET // (keep * vocab)))
    out = []
    for s in range(0, len(tokens), rows):
        ids = torch.from_numpy(tokens[s: s + rows]).to(device)
        logits = model(ids, logits_to_keep=keep).logits[..., :vocab]
        where = torch.from_numpy(answers[s: s + rows] - 1 - (tokens.shape[1] - keep)).to(device)
        out.append(logits.argmax(-1).gather(1, where).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out)


def evaluate_recall(model, tasks: Sequence[str] = TASKS, lengths: Sequence[int] = (64, 128, 256, 512),
                    examples: int = 32, vocab: int | None = None, seed: int = 0, batch_size: int = 8,
                    progress: Callable[[int, int, str], None] | None = None) -> list[dict]:
    """Rows {"task", "length", "accuracy", "exact", "examples", "answers"}, one per (task, length). The task
    vocabulary is ids 0 .. vocab-1 (default: the model's whole vocabulary)."""
    vocab = vocab or model.config.vocab_size
    if vocab > model.config.vocab_size:
        raise HybridLMError(f"--vocab {vocab} is larger than the model's vocabulary ({model.config.vocab_size})")
    if examples < 1:
        raise HybridLMError(f"--examples must be >= 1, got {examples}")
    cells = [(t, n) for t in tasks for n in sorted(set(lengths))]
    for t, n in cells:  # every setting checked before any work
        check(t, n, vocab)
    rows = []
    for k, (task, length) in enumerate(cells):
        if progress is not None:
            progress(k, len(cells), f"{task} @ {length}")
        batch = generate(task, length, examples, vocab, seed)
        predicted = predict_answers(model, batch.tokens, batch.answers, batch_size)
        rows.append({"task": task, "length": length, **score(batch.targets, predicted)})
    if progress is not None:
        progress(len(cells), len(cells), "done")
    return rows

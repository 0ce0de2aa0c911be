"""In-context recall tasks over token ids, generated deterministically.

An example is `length` token ids plus the positions of its answers: the token at an answer position must be
predicted from the tokens before it. Scoring is by teacher forcing: greedy decoding produces an answer exactly
when each of its tokens is the model's argmax there, so one forward pass scores a whole batch.

Token ids, for a task vocabulary of V ids (0 .. V-1):

    0          filler: the gaps between MQAR's queries, the pad before an odd-length copy
    1          marker: the copy separator, the needle's tag
    2 .. V-1   content; MQAR draws keys from the first half (2 .. 2+K-1, K = (V-2)//2) and values from the rest

mqar    multi-query associative recall (Zoology, arXiv 2312.04927): `k1 v1 k2 v2 .. kn vn` (distinct keys),
        then every key once more, in random order at random places of the rest of the sequence (fillers
        between), each followed by its value: predict the n values. n = length // 8 unless given, so the pairs
        fill a quarter of the context and the queries another quarter.
needle  a haystack of random content with a needle `1 a1 .. ak` at a random depth; the sequence ends with
        `1 a1 .. ak`: predict a1 .. ak (k = 2 unless given).
copy    `x1 .. xm 1 x1 .. xm` with random content (m = (length - 1) // 2, one leading filler when length is
        even): predict the second copy.

Example i of (task, length) is drawn from `numpy.random.default_rng([seed, task number, length, i])`: the same
seed gives the same examples whatever other tasks, lengths or counts are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridlm.errors import HybridLMError

TASKS = ("mqar", "needle", "copy")
FILLER, MARKER, FIRST_CONTENT = 0, 1, 2
MIN_VOCAB = 8


@dataclass(frozen=True)
class RecallBatch:
    """`tokens` (n, length) int64 and `answers` (n, answers per example) int64 positions, ascending per row."""

    task: str
    length: int
    tokens: np.ndarray
    answers: np.ndarray

    @property
    def targets(self) -> np.ndarray:
        """The answer tokens, (n, answers per example)."""
        return np.take_along_axis(self.tokens, self.answers, axis=1)

    def labels(self, ignore: int = -100) -> np.ndarray:
        """Training labels in transformers' convention: the answer tokens, `ignore` elsewhere."""
        out = np.full_like(self.tokens, ignore)
        np.put_along_axis(out, self.answers, self.targets, axis=1)
        return out


def chance(task: str, vocab: int) -> float:
    """The accuracy of guessing an answer token uniformly among the ids it can take."""
    content = vocab - FIRST_CONTENT
    return 1 / (content - content // 2) if task == "mqar" else 1 / content


def mqar_pairs(length: int) -> int:
    return max(1, length // 8)


def check(task: str, length: int, vocab: int, pairs: int | None = None, needle_len: int = 2) -> None:
    """One-line errors for settings a task cannot be generated with."""
    if task not in TASKS:
        raise HybridLMError(f"unknown recall task {task!r}; allowed: {', '.join(TASKS)}")
    if vocab < MIN_VOCAB:
        raise HybridLMError(f"the recall vocabulary must have at least {MIN_VOCAB} ids, got {vocab}")
    if task == "mqar":
        n = pairs or mqar_pairs(length)
        keys = (vocab - FIRST_CONTENT) // 2
        if length < 4 * n:
            raise HybridLMError(f"mqar at length {length} has no room for {n} pairs and their queries "
                                f"(needs length >= 4 * pairs = {4 * n})")
        if n > keys:
            raise HybridLMError(f"mqar with {n} pairs needs {n} distinct keys, but a vocabulary of {vocab} ids "
                                f"has {keys}; use a larger vocabulary or shorter lengths")
    elif task == "needle":
        if needle_len < 1 or length < 2 * (needle_len + 1) + 1:
            raise HybridLMError(f"needle of {needle_len} tokens needs length >= {2 * (needle_len + 1) + 1}, "
                                f"got {length}")
    elif length < 3:
        raise HybridLMError(f"copy needs length >= 3, got {length}")


def _mqar(rng: np.random.Generator, length: int, vocab: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    n_keys = (vocab - FIRST_CONTENT) // 2
    keys = rng.choice(n_keys, n, replace=False) + FIRST_CONTENT
    values = rng.integers(FIRST_CONTENT + n_keys, vocab, n)
    seq = np.full(length, FILLER, dtype=np.int64)
    seq[0: 2 * n: 2], seq[1: 2 * n: 2] = keys, values
    # n non-overlapping (key, value) slots in the query section of length - 2n: n sorted distinct offsets among
    # (length - 2n) - n, spread apart by adding 0, 1, .., n-1
    starts = np.sort(rng.choice(length - 3 * n, n, replace=False)) + np.arange(n) + 2 * n
    order = rng.permutation(n)
    seq[starts], seq[starts + 1] = keys[order], values[order]
    return seq, starts + 1


def _needle(rng: np.random.Generator, length: int, vocab: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    seq = rng.integers(FIRST_CONTENT, vocab, length)
    answer = rng.integers(FIRST_CONTENT, vocab, k)
    query = length - (k + 1)
    at = int(rng.integers(0, query - (k + 1) + 1))
    seq[at], seq[at + 1: at + 1 + k] = MARKER, answer
    seq[query], seq[query + 1:] = MARKER, answer
    return seq, np.arange(query + 1, length)


def _copy(rng: np.random.Generator, length: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    m = (length - 1) // 2
    lead = length - (2 * m + 1)
    x = rng.integers(FIRST_CONTENT, vocab, m)
    seq = np.concatenate([np.full(lead, FILLER), x, [MARKER], x]).astype(np.int64)
    return seq, np.arange(length - m, length)


def generate(task: str, length: int, n: int, vocab: int, seed: int = 0, start: int = 0, pairs: int | None = None,
             needle_len: int = 2) -> RecallBatch:
    """Examples start .. start+n-1 of (task, length) for `seed`."""
    check(task, length, vocab, pairs, needle_len)
    task_number = TASKS.index(task)
    tokens, answers = [], []
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, task_number, length, i])
        if task == "mqar":
            seq, ans = _mqar(rng, length, vocab, pairs or mqar_pairs(length))
        elif task == "needle":
            seq, ans = _needle(rng, length, vocab, needle_len)
        else:
            seq, ans = _copy(rng, length, vocab)
        tokens.append(seq)
        answers.append(ans)
    return RecallBatch(task, length, np.stack(tokens), np.stack(answers).astype(np.int64))

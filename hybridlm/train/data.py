"""Training batches from packed token shards: a deterministic blend of sources, cut into fixed windows.

Sample j of source k is a window of seq_len + 1 tokens (inputs and shifted targets), starting at seq_len *
perm[j mod n_k], where n_k = (tokens_k - 1) // seq_len and perm is a permutation seeded by (seed, phase, k,
epoch = j // n_k). Which source a global sample comes from is the blend's rule (`hybridlm.train.blend`). So
the data of any step is a pure function of (seed, phase, step): resuming needs only the step, and a new phase
(annealing) counts its blend from its own start. All sources (and the evaluation data) must come from one
tokenizer (the fingerprint in their index.json), and every batch is checked for ids outside the model's vocabulary.

The global batch of step s is samples [s * B, (s + 1) * B); micro-step m of rank r takes the slice m * B / A +
r * b + [0, b), with b = B / (A * world), so every world size sees the same global batch.
"""

from __future__ import annotations

import numpy as np
import torch

from hybridlm.data.errors import DataError
from hybridlm.data.shards import TokenShardDataset
from hybridlm.errors import ConfigError
from hybridlm.train.blend import Blend, curriculum_weights
from hybridlm.train.config import DataConfig, TrainConfig
from hybridlm.train.synthetic import PREFIX as SYNTH_PREFIX
from hybridlm.train.synthetic import resolve_path


def open_dataset(path: str) -> TokenShardDataset:
    try:
        return TokenShardDataset(resolve_path(path))
    except FileNotFoundError as err:
        raise ConfigError(f"data source {path!r}: {err}") from None


def common_eos_id(datasets: list[TokenShardDataset], data: DataConfig) -> int | None:
    """The EOS id that ends every document of every source (None when the shards have none)."""
    ids = {ds.eos_id if ds.index.get("append_eos", True) else None for ds in datasets}
    if len(ids) > 1:
        names = ", ".join(f"{s.path}: {ds.eos_id}" for s, ds in zip(data.sources, datasets, strict=True))
        raise ConfigError(f"data sources end documents with different EOS ids ({names}); "
                          "pack them with one tokenizer or set data.document_mask: false")
    return ids.pop()


def document_ids(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """seq_idx for HybridLM: the number of EOS tokens before each position (an EOS ends its document)."""
    is_eos = ids == eos_id
    return is_eos.cumsum(1) - is_eos.long()


def target_count(ids: torch.Tensor, eos_id: int | None) -> int:
    """Tokens the loss predicts in a (b, l) batch: l - 1 per row, less those after an EOS (the next
    document's first token is not predicted from the previous document)."""
    n = ids[:, 1:].numel()
    return n if eos_id is None else n - int((ids[:, :-1] == eos_id).sum())


def same_tokenizer(named: list[tuple[str, TokenShardDataset]], what: str) -> str | None:
    """The tokenizer fingerprint shared by all datasets (None if none records one); one error naming each when they
    differ: the same ids mean different text under another tokenizer, so such data is never blended or scored."""
    fps = {name: ds.fingerprint for name, ds in named if ds.fingerprint}
    vocabs = {name: ds.vocab_size for name, ds in named if ds.vocab_size}
    if len(set(fps.values())) > 1 or (not fps and len(set(vocabs.values())) > 1):
        listed = ", ".join(
            f"{name} ({ds.index.get('tokenizer', '?')}, fingerprint {ds.fingerprint}, vocab {ds.vocab_size})"
            for name, ds in named
        )
        raise ConfigError(
            f"{what} were packed with different tokenizers: {listed}; pack them all with one tokenizer"
        )
    return next(iter(fps.values()), None)


def eval_dataset(data: DataConfig, stream: BatchStream, announce: bool = True) -> TokenShardDataset | None:
    """The held-out set of a run: `data.eval_path`, checked against the training data's tokenizer. `auto` is the
    synthetic corpus's held-out part when the run trains on the synthetic corpus, else no evaluation (with a line
    saying so): never held-out data of another tokenizer."""
    path = data.eval_path
    if path is None:
        return None
    if path == "auto":
        if not all(s.path.startswith(SYNTH_PREFIX) for s in data.sources):
            if announce:
                from hybridlm.train.checkpoint import notice

                notice(
                    "no held-out evaluation: data.eval_path is auto and the training data is not the synthetic "
                    "corpus; set data.eval_path to held-out shards packed with the training data's tokenizer"
                )
            return None
        path = SYNTH_PREFIX + "eval"
    ds = open_dataset(path)
    named = [(f"data.sources {s.path!r}", d) for s, d in zip(data.sources, stream.datasets, strict=True)]
    same_tokenizer(named + [(f"data.eval_path {path!r}", ds)], "the training data and the evaluation data")
    if stream.vocab_size is not None and ds.vocab_size is not None and ds.vocab_size > stream.vocab_size:
        raise ConfigError(
            f"data.eval_path {path!r} has vocab_size {ds.vocab_size} > the model's {stream.vocab_size}"
        )
    return ds


def check_ids(ids: np.ndarray, vocab_size: int | None, where) -> None:
    """One error naming the shard when a batch holds a token id the model has no embedding for. `where(row)` gives
    (dataset, stream position) of a row."""
    if vocab_size is None or ids.size == 0 or int(ids.max()) < vocab_size:
        return
    row = int(np.flatnonzero(ids.max(axis=1) >= vocab_size)[0])
    col = int(np.flatnonzero(ids[row] >= vocab_size)[0])
    ds, start = where(row)
    raise DataError(
        f"{ds.shard_at(start + col)} holds token id {int(ids[row, col])}, outside the model's vocabulary "
        f"(vocab_size {vocab_size}): a damaged shard or one packed with another tokenizer"
    )


class SourceWindows:
    """Windows of seq_len + 1 tokens of one source, in an order that is a function of (seed, phase, k)."""

    def __init__(self, ds: TokenShardDataset, seq_len: int, seed: int, phase: int, k: int):
        self.ds, self.seq_len = ds, seq_len
        self.n = (ds.total_tokens - 1) // seq_len
        if self.n < 1:
            raise ConfigError(
                f"data source {ds.path} has {ds.total_tokens} tokens, fewer than seq_len + 1 = {seq_len + 1}"
            )
        self._key = (seed, phase, k)
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([*self._key, epoch]).permutation(self.n)
        return self._perms[epoch]

    def start(self, j: int) -> int:
        return int(self._perm(j // self.n)[j % self.n]) * self.seq_len

    def window(self, j: int) -> np.ndarray:
        return self.ds.tokens(self.start(j), self.seq_len + 1)


class BatchStream:
    """Micro-batches (LongTensor (b, seq_len + 1)) of a step for one rank."""

    def __init__(
        self,
        data: DataConfig,
        train: TrainConfig,
        world: int = 1,
        rank: int = 0,
        vocab_size: int | None = None,
    ):
        if train.batch_size % (train.grad_accum * world):
            raise ConfigError(
                f"train.batch_size={train.batch_size} must be divisible by train.grad_accum * "
                f"world size = {train.grad_accum * world}"
            )
        self.datasets = [open_dataset(s.path) for s in data.sources]
        for s, ds in zip(data.sources, self.datasets, strict=True):
            if vocab_size is not None and ds.vocab_size is not None and ds.vocab_size > vocab_size:
                raise ConfigError(
                    f"data source {s.path!r} has vocab_size {ds.vocab_size} > the model's "
                    f"{vocab_size}; set model.vocab_size"
                )
        named = [(f"data.sources {s.path!r}", ds) for s, ds in zip(data.sources, self.datasets, strict=True)]
        self.fingerprint = same_tokenizer(named, "data.sources")
        self.vocab_size = vocab_size
        self.windows = [
            SourceWindows(ds, data.seq_len, train.seed, train.phase, k) for k, ds in enumerate(self.datasets)
        ]
        points = [(p.step, p.weights) for p in data.curriculum] or [(0, [s.weight for s in data.sources])]
        self.blend = Blend(curriculum_weights(points), samples_per_step=train.batch_size)
        self.seq_len = data.seq_len
        self.eos_id = common_eos_id(self.datasets, data) if data.document_mask else None
        self.batch, self.accum, self.world, self.rank = train.batch_size, train.grad_accum, world, rank
        self.micro = train.batch_size // (train.grad_accum * world)

    def sample(self, i: int) -> np.ndarray:
        k, j = self.blend.assign(i)
        return self.windows[k].window(j)

    def micro_batches(self, step: int) -> list[torch.Tensor]:
        out = []
        for m in range(self.accum):
            first = step * self.batch + m * (self.batch // self.accum) + self.rank * self.micro
            batch = np.stack([self.sample(first + j).astype(np.int64) for j in range(self.micro)])
            check_ids(batch, self.vocab_size, lambda r, first=first: self._where(first + r))
            out.append(torch.from_numpy(batch))
        return out

    def _where(self, i: int) -> tuple[TokenShardDataset, int]:
        k, j = self.blend.assign(i)
        return self.datasets[k], self.windows[k].start(j)

    def source_tokens(self, steps: int) -> np.ndarray:
        """Target tokens drawn from each source over the first `steps` steps (all ranks)."""
        src = self.blend.sources(steps * self.batch)
        return np.bincount(src, minlength=len(self.datasets)) * self.seq_len


MAX_EPOCHS = 4.0  # repeated data helps about as much as new data up to ~4 epochs (Muennighoff et al., 2023)


def repeat_warnings(stream: BatchStream, data: DataConfig, steps: int, max_epochs: float = MAX_EPOCHS) -> list[str]:
    """One line for each source the run would read more than `max_epochs` times (a small corpus under many steps:
    the model memorizes it rather than learning from it)."""
    drawn = stream.source_tokens(steps)
    out = []
    for source, ds, n in zip(data.sources, stream.datasets, drawn, strict=True):
        epochs = float(n) / max(1, ds.total_tokens)
        if epochs > max_epochs:
            out.append(
                f"data source {source.path} ({ds.total_tokens:,} tokens) would be read {epochs:.1f} times over "
                f"{steps} steps (more than {max_epochs:g} epochs add little and overfit); use more data or fewer "
                "train.steps"
            )
    return out

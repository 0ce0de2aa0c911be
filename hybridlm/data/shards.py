"""Packed token shards: the format written by `hybridlm data pack` and the reader a trainer uses.

A packed dataset is a directory:

    index.json            {"format": "hybridlm-tokens", "version": 1, "dtype": "uint16"|"uint32",
                           "vocab_size": V, "eos_id": E|null, "append_eos": bool, "tokenizer": "...",
                           "tokenizer_fingerprint": "16 hex digits", "documents": D, "tokens": T,
                           "shards": [{"name": "00000", "source": "...", "documents": d, "tokens": t}, ...]}
    00000.bin             the shard's tokens, concatenated documents, little-endian `dtype`, no header
    00000.idx             16-byte header  b"HLMIDX\\x00\\x00" | uint32 version (1) | uint32 itemsize (2 or 4)
                          then uint64 n_docs, then uint64 offsets[n_docs + 1]: document i of the shard is
                          tokens[offsets[i]:offsets[i + 1]] of the .bin (offsets[0] = 0)

Shards are in `index.json` order; the dataset is their concatenation. `dtype` is uint16 when every id fits
(vocab_size <= 65536), else uint32. With `append_eos`, each document ends with the EOS id (counted in its tokens).
Opening a dataset checks every shard's sizes against its index (a truncated or mismatched shard is one error naming
the file, not a memmap failure); `tokenizer_fingerprint` identifies the tokenizer, so the trainer never mixes data
of different tokenizers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hybridlm.data.errors import DataError

IDX_MAGIC = b"HLMIDX\x00\x00"
IDX_VERSION = 1


def write_idx(path: Path, offsets: np.ndarray, itemsize: int) -> None:
    offsets = np.asarray(offsets, dtype="<u8")
    with open(path, "wb") as fh:
        fh.write(IDX_MAGIC)
        fh.write(np.array([IDX_VERSION, itemsize], dtype="<u4").tobytes())
        fh.write(np.array([len(offsets) - 1], dtype="<u8").tobytes())
        fh.write(offsets.tobytes())


def read_idx(path: Path) -> tuple[np.ndarray, int]:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != IDX_MAGIC:
        raise DataError(f"{path} is not a hybridlm token index (truncated or another file); re-run hybridlm data pack")
    version, itemsize = np.frombuffer(head[8:16], dtype="<u4")
    if version != IDX_VERSION:
        raise DataError(f"{path}: unsupported index version {version}")
    n = int(np.frombuffer(head[16:24], dtype="<u8")[0])
    if size != 24 + 8 * (n + 1):
        raise DataError(
            f"{path} holds {size:,} bytes but its header says {n:,} documents ({24 + 8 * (n + 1):,} bytes): truncated "
            "or damaged; re-run hybridlm data pack"
        )
    offsets = np.memmap(path, dtype="<u8", mode="r", offset=24, shape=(n + 1,))
    return offsets, int(itemsize)


class TokenShardDataset:
    """Random access to a packed dataset through numpy memmaps (nothing is loaded up front).

    - `len(ds)` / `ds.num_documents`, `ds.total_tokens`
    - `ds.get_document(i)`: the tokens of document i
    - `ds.tokens(start, length)`: a slice of the concatenated token stream (may cross documents and shards)
    - `ds.doc_offsets`: global start of every document in the stream (plus the end), for boundary-aware sampling
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index_path = self.path / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"{self.path} has no index.json (not a packed token dataset)")
        try:
            self.index = json.loads(index_path.read_text())
            self.dtype = np.dtype(self.index["dtype"]).newbyteorder("<")
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{index_path}: not a valid token index ({err}); re-run hybridlm data pack") from None
        self.vocab_size = self.index.get("vocab_size")
        self.eos_id = self.index.get("eos_id")
        self.fingerprint = self.index.get("tokenizer_fingerprint")
        self.shard_names = [sh["name"] for sh in self.index["shards"]]
        self._bins, offs, base = [], [], 0
        shard_token_starts = []
        for sh in self.index["shards"]:
            off, itemsize = read_idx(self.path / f"{sh['name']}.idx")
            if itemsize != self.dtype.itemsize:
                raise DataError(f"shard {self.path / sh['name']}: itemsize {itemsize} != {self.dtype.itemsize}")
            n_tok = int(off[-1])
            bin_path = self.path / f"{sh['name']}.bin"
            have = bin_path.stat().st_size if bin_path.is_file() else None
            if have != n_tok * self.dtype.itemsize or sh.get("tokens", n_tok) != n_tok:
                raise DataError(
                    f"{bin_path} "
                    + ("is missing" if have is None else f"holds {have:,} bytes")
                    + f" but its index says {n_tok:,} tokens ({n_tok * self.dtype.itemsize:,} bytes): truncated or "
                    "from another pack; re-run hybridlm data pack"
                )
            self._bins.append(
                np.memmap(bin_path, dtype=self.dtype, mode="r", shape=(n_tok,)) if n_tok else np.empty(0, self.dtype)
            )
            offs.append(np.asarray(off[:-1], dtype=np.int64) + base)
            shard_token_starts.append(base)
            base += n_tok
        self.total_tokens = base
        self.doc_offsets = (
            np.concatenate(offs + [np.array([base], np.int64)]) if offs else np.array([0], np.int64)
        )
        self._shard_starts = np.array(shard_token_starts + [base], dtype=np.int64)

    def tokenizer_path(self) -> Path | None:
        """The tokenizer.json these shards were packed with (None when it cannot be found or has changed)."""
        from hybridlm.data.tokenizer import packed_tokenizer

        return packed_tokenizer(self.path, self.index)

    def shard_at(self, position: int) -> Path:
        """The .bin file holding token `position` of the stream."""
        s = int(np.searchsorted(self._shard_starts, position, side="right")) - 1
        return self.path / f"{self.shard_names[min(s, len(self.shard_names) - 1)]}.bin"

    @property
    def num_documents(self) -> int:
        return len(self.doc_offsets) - 1

    def __len__(self) -> int:
        return self.num_documents

    def get_document(self, i: int) -> np.ndarray:
        if not -self.num_documents <= i < self.num_documents:
            raise IndexError(f"document {i} out of range ({self.num_documents} documents)")
        i %= self.num_documents
        return self.tokens(int(self.doc_offsets[i]), int(self.doc_offsets[i + 1] - self.doc_offsets[i]))

    def tokens(self, start: int, length: int) -> np.ndarray:
        if start < 0 or length < 0 or start + length > self.total_tokens:
            raise IndexError(f"tokens [{start}, {start + length}) out of range ({self.total_tokens} tokens)")
        parts = []
        s = int(np.searchsorted(self._shard_starts, start, side="right")) - 1
        pos, end = start, start + length
        while pos < end:
            lo = pos - self._shard_starts[s]
            take = min(end, self._shard_starts[s + 1]) - pos
            if take > 0:
                parts.append(self._bins[s][lo : lo + take])
            pos += take
            s += 1
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.empty(0, self.dtype)

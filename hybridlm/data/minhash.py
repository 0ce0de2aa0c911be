"""MinHash signatures, vectorised with numpy over whole batches of documents.

Shingles. Text is normalised (lower-cased, split into `\\w+` words). `word` shingles are word n-grams (n=13 by
default, as in Zyda-1); `char` shingles are character n-grams of the normalised text (as in Zyda-2). A document
shorter than one n-gram is a single shingle (its whole normalised text), so short documents are compared by exact
content rather than all colliding; a document with no words has no shingles and is never a duplicate.

Hashing. A word hashes to 64 bits from its UTF-8 bytes, eight at a time: h = mix(first 8 bytes xor length * K), then
h = mix(h * K xor next 8 bytes) (mix = the splitmix64 finaliser, a bijection), computed for every word of a batch at
once with numpy (no Python string per word); a character hashes from its code point. An n-gram's hash is a fixed
odd-multiplier combination of its members' hashes, finalised with the same mixer. Signature value k of a document is
    min over its shingles x of  (a_k * x + b_k) mod 2^64 >> 32      (multiply-add-shift, a_k odd)
a strongly universal family, computed for all shingles of a batch at once and reduced per document with
`np.minimum.reduceat`. The Jaccard estimate is the fraction of equal signature values.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

_WORD_RE = re.compile(r"\w+")
_U64 = np.uint64
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)


def normalize_words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def shingle_set(text: str, ngram: int = 13, kind: str = "word") -> set[str]:
    """The exact shingle set (strings); the reference the hashed path and the ground truth are checked against."""
    words = normalize_words(text)
    if kind == "word":
        if not words:
            return set()
        if len(words) < ngram:
            return {" ".join(words)}
        return {" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}
    s = " ".join(words)
    if not s:
        return set()
    if len(s) < ngram:
        return {s}
    return {s[i : i + ngram] for i in range(len(s) - ngram + 1)}


def exact_jaccard(a: str, b: str, ngram: int = 13, kind: str = "word") -> float:
    sa, sb = shingle_set(a, ngram, kind), shingle_set(b, ngram, kind)
    if not sa and not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array."""
    x ^= x >> _U64(30)
    x *= _MIX1
    x ^= x >> _U64(27)
    x *= _MIX2
    x ^= x >> _U64(31)
    return x


_K_LEN = _U64(0x9E3779B97F4A7C15)
_K_CHUNK = _U64(0xD6E8FEB86659FD93)
# bytes that belong to a word in normalised text: ASCII [0-9a-z_] and every byte of a multi-byte UTF-8 character
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz_", dtype=np.uint8)] = True
_WORD_BYTE[0x80:] = True


def _normalised_bytes(text: str) -> bytes:
    """The document as bytes in which the words are exactly the runs of `_WORD_BYTE` bytes: lower-cased ASCII text
    as it is (its `\\w+` runs are `[0-9a-z_]+`), other text as its `\\w+` words joined by spaces."""
    low = text.lower()
    if low.isascii():
        return low.encode("ascii")
    return " ".join(_WORD_RE.findall(low)).encode("utf-8")


def _word_spans(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All words of a batch: `(buffer, word starts, word lengths, words per document)`; documents are joined with a
    newline (never part of a word) and the buffer is zero-padded by 8 bytes for 8-byte reads."""
    parts = [_normalised_bytes(t) for t in texts]
    joined = b"\n".join(parts) + b"\n" + bytes(8)
    buf = np.frombuffer(joined, dtype=np.uint8)
    w = _WORD_BYTE[buf]
    edge = np.diff(w.view(np.int8), prepend=np.int8(0))
    starts = np.flatnonzero(edge == 1)
    ends = np.flatnonzero(edge == -1)
    doc_end = np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)) + 1)
    per_doc = np.diff(np.searchsorted(starts, doc_end), prepend=0)
    return buf, starts, ends - starts, per_doc


def _word_hashes(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """64-bit hashes of the words `buf[starts[i] : starts[i] + lengths[i]]` (see the module docstring)."""
    # element i of this view is bytes i..i+7 read as a little-endian uint64 (an unaligned, overlapping view)
    windows = np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))

    def chunk(pos, remaining):
        v = windows[pos]
        short = remaining < 8
        v[short] &= (_U64(1) << (_U64(8) * remaining[short].astype(np.uint64))) - _U64(1)
        return v

    lengths64 = lengths.astype(np.uint64)
    h = _mix64(chunk(starts, lengths) ^ (lengths64 * _K_LEN))
    j = 8
    active = np.flatnonzero(lengths > 8)
    while len(active):
        v = chunk(starts[active] + j, lengths[active] - j)
        h[active] = _mix64(h[active] * _K_CHUNK ^ v)
        j += 8
        active = active[lengths[active] > j]
    return h


def _whole_text_hash(words: list[str]) -> int:
    return xxhash.xxh64_intdigest(" ".join(words).encode(), seed=1)


@dataclass(frozen=True)
class MinHasher:
    num_perm: int = 128
    ngram: int = 13
    shingle: str = "word"
    seed: int = 0

    def __post_init__(self):
        if self.shingle not in ("word", "char"):
            raise ValueError(f"shingle must be 'word' or 'char', not {self.shingle!r}")
        if self.ngram < 1 or self.num_perm < 1:
            raise ValueError("ngram and num_perm must be >= 1")
        rng = np.random.default_rng([self.seed, 0x5EED])
        a = rng.integers(1, 2**63, size=self.num_perm, dtype=np.uint64) * _U64(2) + _U64(1)  # odd multipliers
        b = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64)
        pos = rng.integers(1, 2**63, size=self.ngram, dtype=np.uint64) * _U64(2) + _U64(1)
        object.__setattr__(self, "_a", a)
        object.__setattr__(self, "_b", b)
        object.__setattr__(self, "_pos", pos)

    # --- shingle hashes -------------------------------------------------------------------------------------
    def shingle_hashes(self, text: str) -> np.ndarray:
        """64-bit hashes of the document's shingles (may repeat; `np.unique` gives the set)."""
        return self.batch_hashes([text])[0]

    def batch_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The shingle hashes of a batch of documents: all of them concatenated, and the count per document.

        Word n-grams are computed once over the batch's concatenated word hashes; the n-grams that would straddle
        two documents are never selected. A document shorter than one n-gram is one shingle (the xxh64 of its
        normalised text); a document without words has none."""
        if self.shingle == "char":
            hs = [self._char_hashes(t) for t in texts]
            counts = np.fromiter(map(len, hs), dtype=np.int64, count=len(hs))
            return (np.concatenate(hs) if hs else np.empty(0, np.uint64)), counts
        n = self.ngram
        buf, starts, lengths, sizes = _word_spans(texts)
        long = sizes >= n
        counts = np.where(long, sizes - n + 1, np.minimum(sizes, 1))
        out = np.empty(int(counts.sum()), dtype=np.uint64)
        out_start = np.cumsum(counts) - counts
        for d in np.flatnonzero(~long & (sizes > 0)).tolist():
            out[out_start[d]] = _whole_text_hash(normalize_words(texts[d]))
        if long.any():
            keep = np.repeat(long, sizes)  # words of documents with at least one n-gram
            units = _word_hashes(buf, starts[keep], lengths[keep])
            m = len(units) - n + 1
            h = units[:m] * self._pos[0]
            for k in range(1, n):
                h += units[k : k + m] * self._pos[k]
            _mix64(h)
            # n-gram p of long document d starts at unit (its first word among the long documents' words) + p
            first_unit = np.cumsum(sizes[long]) - sizes[long]
            c = counts[long]
            within = np.arange(int(c.sum()), dtype=np.int64) - np.repeat(np.cumsum(c) - c, c)
            out[np.repeat(out_start[long], c) + within] = h[np.repeat(first_unit, c) + within]
        return out, counts

    def _char_hashes(self, text: str) -> np.ndarray:
        s = " ".join(normalize_words(text))
        if not s:
            return np.empty(0, dtype=np.uint64)
        if len(s) < self.ngram:
            return np.array([_whole_text_hash(s.split(" "))], dtype=np.uint64)
        units = _mix64(np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64) + _MIX2)
        n = self.ngram
        m = len(units) - n + 1
        h = units[:m] * self._pos[0]
        for k in range(1, n):
            h += units[k : k + m] * self._pos[k]
        return _mix64(h)

    # --- signatures -------------------------------------------------------------------------------------------
    def signatures(self, texts: Sequence[str], chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """Signatures `(n, num_perm) uint32` and the number of shingles per document (0 = no signature)."""
        flat, counts = self.batch_hashes(texts)
        return self.signatures_from_flat(flat, counts, chunk), counts

    def signatures_from_hashes(self, hashes: Sequence[np.ndarray], chunk: int = 8192) -> np.ndarray:
        lengths = np.array([len(h) for h in hashes], dtype=np.int64)
        flat = np.concatenate(list(hashes)) if len(hashes) else np.empty(0, np.uint64)
        return self.signatures_from_flat(flat, lengths, chunk)

    def signatures_from_flat(self, flat: np.ndarray, lengths: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """Signatures of documents whose shingle hashes are `flat`, `lengths[i]` of them for document i."""
        n = len(lengths)
        sig = np.full((n, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        nonempty = np.flatnonzero(lengths)
        if len(nonempty) == 0:
            return sig
        starts = np.concatenate([[0], np.cumsum(lengths[nonempty])[:-1]])
        a, b = self._a[:, None], self._b[:, None]
        # (num_perm, shingles) layout: the per-document min is a contiguous reduction along axis 1.
        # Slices of about `chunk` shingles keep the temporary in cache; documents never straddle a slice.
        buf = np.empty((self.num_perm, chunk), dtype=np.uint64)
        doc_lo = 0
        while doc_lo < len(nonempty):
            s0 = starts[doc_lo]
            doc_hi = max(int(np.searchsorted(starts, s0 + chunk, side="left")), doc_lo + 1)
            s1 = starts[doc_hi] if doc_hi < len(nonempty) else len(flat)
            x = flat[s0:s1]
            if buf.shape[1] < len(x):
                buf = np.empty((self.num_perm, len(x)), dtype=np.uint64)
            v = buf[:, : len(x)]
            np.multiply(a, x[None, :], out=v)
            v += b
            v >>= _U64(32)
            mins = np.minimum.reduceat(v, starts[doc_lo:doc_hi] - s0, axis=1)
            sig[nonempty[doc_lo:doc_hi]] = mins.T
            doc_lo = doc_hi
        return sig


def lsh_probability(s: float | np.ndarray, bands: int, rows: int):
    """Probability that a pair with Jaccard `s` shares at least one band."""
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


@functools.lru_cache(maxsize=64)
def choose_bands_rows(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """Bands x rows (b*r <= num_perm) minimising the weighted area of false positives below `threshold` and false
    negatives above it under the LSH S-curve (integrated numerically)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold must be in (0, 1)")
    lo = np.linspace(0.0, threshold, 201)
    hi = np.linspace(threshold, 1.0, 201)
    best, best_cost = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(lsh_probability(lo, b, r), lo)
            fn = np.trapezoid(1.0 - lsh_probability(hi, b, r), hi)
            cost = fp_weight * fp + fn_weight * fn
            if cost < best_cost - 1e-12:
                best, best_cost = (b, r), cost
    return best


def band_keys(sig: np.ndarray, bands: int, rows: int, seed: int = 0) -> np.ndarray:
    """`(n, bands) uint64` keys; two documents share a bucket in band j iff their rows in band j are equal
    (up to 64-bit hash collisions)."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {sig.shape[1]}")
    rng = np.random.default_rng([seed, 0xBA2D])
    mult = rng.integers(1, 2**63, size=rows, dtype=np.uint64) * _U64(2) + _U64(1)
    keys = np.empty((sig.shape[0], bands), dtype=np.uint64)
    for j in range(bands):
        block = sig[:, j * rows : (j + 1) * rows].astype(np.uint64)
        block *= mult
        k = block.sum(axis=1, dtype=np.uint64) + _U64(j)
        keys[:, j] = _mix64(k)
    return keys

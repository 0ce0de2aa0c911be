"""A deterministic synthetic corpus for tests, benchmarks and the quickstart (seconds to generate, no downloads).

`generate_corpus(out_dir, seed, n_web, n_hq, n_eval)` writes:

- `web.jsonl`: web-like text over an invented Zipfian vocabulary. A share of documents are planted near-duplicate
  groups (an original plus edited copies; field `dup_group`), and some are junk that one Zyda filter catches (field
  `junk` = the name of that filter, see `hybridlm.data.filters`). Every record has `id`, `text`, `kind`.
- `web_pairs.jsonl`: every pair inside a planted group with its exact Jaccard over word 13-gram shingles
  (`hybridlm.data.minhash.shingle_set`), the ground truth of the dedup benchmark.
- `hq.jsonl`: fact-rich "high-quality" documents (for annealing): templated facts about invented cities and people,
  each fact fixed per entity, so the structure is learnable and facts repeat across documents.
- `eval.jsonl`: held-out text: unseen web documents and question/answer lines about the same entities.
- `manifest.json`: the parameters and counts.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from hybridlm.data.errors import DataError
from hybridlm.data.minhash import shingle_set

_ONSETS = [
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "st",
    "tr",
    "ch",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
_CODAS = ["", "", "n", "r", "s", "l", "th", "nd"]
_FUNCTION = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "with",
    "as",
    "on",
    "was",
    "by",
    "it",
    "from",
]


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    words: list[str] = []
    seen = set(_FUNCTION)
    while len(words) < size:
        n = int(rng.integers(1, 4))
        w = "".join(
            _ONSETS[rng.integers(len(_ONSETS))]
            + _VOWELS[rng.integers(len(_VOWELS))]
            + _CODAS[rng.integers(len(_CODAS))]
            for _ in range(n)
        )
        if len(w) >= 3 and w not in seen:
            seen.add(w)
            words.append(w)
    return words


class _TextMaker:
    def __init__(self, rng: np.random.Generator, vocab_size: int = 12000):
        self.rng = rng
        self.vocab = _FUNCTION + _vocabulary(rng, vocab_size)
        ranks = np.arange(1, len(self.vocab) + 1)
        p = 1.0 / (ranks + 2.7)
        self.cdf = np.cumsum(p / p.sum())

    def words(self, n: int) -> list[str]:
        ids = np.minimum(np.searchsorted(self.cdf, self.rng.random(n)), len(self.vocab) - 1)
        return [self.vocab[i] for i in ids.tolist()]

    def paragraph(self, n_words: int) -> str:
        """Sentences of 6-20 words, capitalised, with a full stop."""
        words = self.words(n_words)
        out, i = [], 0
        while i < len(words):
            k = int(self.rng.integers(6, 21))
            sent = words[i : i + k]
            i += k
            out.append(
                sent[0].capitalize() + " " + " ".join(sent[1:]) + "." if len(sent) > 1 else sent[0] + "."
            )
        return " ".join(out)


def _edit(rng: np.random.Generator, maker: _TextMaker, text: str, n_edits: int) -> str:
    """Substitute, delete or insert `n_edits` single words at random positions."""
    words = text.split(" ")
    for _ in range(n_edits):
        op = int(rng.integers(3))
        pos = int(rng.integers(len(words)))
        if op == 0:
            words[pos] = maker.words(1)[0]
        elif op == 1 and len(words) > 20:
            del words[pos]
        else:
            words.insert(pos, maker.words(1)[0])
    return " ".join(words)


def _junk(rng: np.random.Generator, maker: _TextMaker, kind: str) -> str:
    base = maker.paragraph(int(rng.integers(80, 160)))
    if kind == "min_length":
        return maker.paragraph(int(rng.integers(3, 8)))[:90]
    if kind == "mean_word_length":
        return " ".join("".join(maker.words(4)) for _ in range(int(rng.integers(40, 80))))
    if kind == "fraction_non_alphanumeric":
        return " ".join(w + " " + "".join(rng.choice(list("#$%&*+=@^~|"), size=8)) for w in maker.words(120))
    if kind == "fraction_numerical":
        return " ".join(f"{w} {int(rng.integers(10**5, 10**8))}" for w in maker.words(120))
    if kind == "repeated_characters":
        return " ".join(w if i % 3 else w[0] * 12 for i, w in enumerate(maker.words(400)))
    if kind == "count:lorem ipsum":
        return "Lorem ipsum dolor sit amet. lorem ipsum dolor. lorem ipsum dolor. lorem ipsum. " + base
    if kind == "count:<?xml version=":
        return '<?xml version="1.0"?> ' + base + ' <?xml version="1.0"?>'
    if kind == "fraction:https://":
        return " ".join(
            f"{w} https://{w}.example.com/{i}" if i % 8 == 0 else w for i, w in enumerate(base.split())
        )
    raise ValueError(kind)


JUNK_KINDS = (
    "min_length",
    "mean_word_length",
    "fraction_non_alphanumeric",
    "fraction_numerical",
    "repeated_characters",
    "count:lorem ipsum",
    "count:<?xml version=",
    "fraction:https://",
)

_CITY_T = [
    "{c} is a city in the province of {p}.",
    "The city of {c} lies in {p}.",
    "{c} was founded in {y}.",
    "The founding year of {c} is {y}.",
    "{c} has a population of {n} people.",
    "About {n} people live in {c}.",
    "The main export of {c} is {e}.",
    "{c} is known for exporting {e}.",
    "The mayor of {c} is {m}.",
    "{m} serves as mayor of {c}.",
]
_QA_T = [
    ("In which province is {c}?", "{p}"),
    ("When was {c} founded?", "{y}"),
    ("What is the main export of {c}?", "{e}"),
    ("Who is the mayor of {c}?", "{m}"),
]
_EXPORTS = [
    "copper",
    "wool",
    "timber",
    "salt",
    "glass",
    "silk",
    "tin",
    "grain",
    "amber",
    "paper",
    "cheese",
    "iron",
]


def _entities(rng: np.random.Generator, maker: _TextMaker, n: int) -> list[dict]:
    names = _vocabulary(rng, 3 * n + 20)
    provinces = [w.capitalize() for w in names[:20]]
    ents = []
    for i in range(n):
        ents.append(
            {
                "c": names[20 + i].capitalize(),
                "p": provinces[int(rng.integers(len(provinces)))],
                "y": int(rng.integers(1100, 1990)),
                "n": f"{int(rng.integers(2_000, 900_000)):,}",
                "e": _EXPORTS[int(rng.integers(len(_EXPORTS)))],
                "m": f"{names[20 + n + i].capitalize()} {names[20 + 2 * n + i].capitalize()}",
            }
        )
    return ents


def generate_corpus(
    out_dir: str | Path,
    seed: int = 0,
    n_web: int = 2000,
    n_hq: int = 500,
    n_eval: int = 200,
    dup_fraction: float = 0.25,
    junk_fraction: float = 0.05,
    n_entities: int | None = None,
) -> dict:
    """Write the corpus to `out_dir` (see module docstring); returns the manifest. Same seed, same bytes."""
    for name, n in (("n_web", n_web), ("n_hq", n_hq), ("n_eval", n_eval)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DataError(f"--{name.replace('_', '-')} must be a whole number >= 0, got {n!r}")
    for name, f in (("dup_fraction", dup_fraction), ("junk_fraction", junk_fraction)):
        if not 0 <= f <= 1:
            raise DataError(f"{name} must be in [0, 1], got {f!r}")
    if dup_fraction + junk_fraction > 1:
        raise DataError(f"dup_fraction + junk_fraction must be <= 1, got {dup_fraction} + {junk_fraction}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    maker = _TextMaker(rng)

    # --- web: clean originals, planted near-duplicate groups, junk --------------------------------------------
    n_junk = int(round(n_web * junk_fraction))
    n_dup_docs = int(round(n_web * dup_fraction))
    web: list[dict] = []
    pairs: list[dict] = []
    group = 0
    while len(web) < n_dup_docs:
        size = int(min(rng.integers(2, 6), n_dup_docs - len(web) + 1))
        original = maker.paragraph(int(rng.integers(150, 500)))
        members = [original] + [
            _edit(rng, maker, original, int(rng.choice([0, 1, 1, 2, 2, 3, 4, 6]))) for _ in range(size - 1)
        ]
        start = len(web)
        for k, text in enumerate(members):
            web.append({"text": text, "kind": "dup", "dup_group": group, "dup_original": k == 0})
        sets = [shingle_set(t) for t in members]
        for i, j in itertools.combinations(range(len(members)), 2):
            jac = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
            pairs.append({"a": start + i, "b": start + j, "jaccard": jac})
        group += 1
    for kind_i in range(n_junk):
        kind = JUNK_KINDS[kind_i % len(JUNK_KINDS)]
        web.append({"text": _junk(rng, maker, kind), "kind": "junk", "junk": kind})
    while len(web) < n_web:
        web.append({"text": maker.paragraph(int(rng.integers(60, 500))), "kind": "clean"})
    order = rng.permutation(len(web))
    position = np.empty(len(web), dtype=np.int64)
    position[order] = np.arange(len(web))
    web = [web[i] for i in order]
    for i, rec in enumerate(web):
        rec["id"] = f"web-{i:06d}"
    for p in pairs:
        p["a"], p["b"] = sorted((f"web-{position[p['a']]:06d}", f"web-{position[p['b']]:06d}"))

    # --- high-quality facts and held-out evaluation ---------------------------------------------------------
    ents = _entities(rng, maker, n_entities or max(10, n_hq // 5))
    hq = []
    for i in range(n_hq):
        e = ents[int(rng.integers(len(ents)))]
        k = int(rng.integers(3, 7))
        sents = [_CITY_T[j].format(**e) for j in rng.choice(len(_CITY_T), size=k, replace=False)]
        hq.append({"id": f"hq-{i:06d}", "text": " ".join(sents), "entity": e["c"]})
    ev = []
    for i in range(n_eval):
        if i % 2 == 0:
            ev.append(
                {"id": f"eval-{i:06d}", "text": maker.paragraph(int(rng.integers(60, 300))), "kind": "web"}
            )
        else:
            e = ents[int(rng.integers(len(ents)))]
            q, a = _QA_T[int(rng.integers(len(_QA_T)))]
            ev.append({"id": f"eval-{i:06d}", "text": f"Q: {q.format(**e)} A: {a.format(**e)}", "kind": "qa"})

    files = {"web": web, "web_pairs": pairs, "hq": hq, "eval": ev}
    for name, rows in files.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    manifest = {
        "seed": seed,
        "web_documents": len(web),
        "dup_groups": group,
        "dup_documents": n_dup_docs,
        "dup_pairs": len(pairs),
        "junk_documents": n_junk,
        "hq_documents": len(hq),
        "eval_documents": len(ev),
        "entities": len(ents),
        "files": {name: f"{name}.jsonl" for name in files},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest

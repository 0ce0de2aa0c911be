"""The built-in synthetic corpus as packed shards, prepared on first use (about 10 s) and cached.

`synth://PART` names a part: `web` (pretraining), `hq` (high-quality facts, for annealing), `eval` (held-out
web text and question/answer lines), `eval-web` and `eval-qa` (the two halves of `eval`). The corpus comes
from `hybridlm.data.synth`, the tokenizer (byte-level BPE, 512 ids) from `hybridlm.data.tokenizer`, the shards
from `hybridlm.data.pack`. The cache lives in `$HYBRIDLM_CACHE` (default `~/.cache/hybridlm`); preparation
writes to a temporary directory and renames it into place, so concurrent first uses are safe.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "synth://"
PARTS = ("web", "hq", "eval", "eval-web", "eval-qa")
VERSION = "v1"
VOCAB_SIZE = 512
CORPUS = {"seed": 0, "n_web": 2000, "n_hq": 2000, "n_eval": 400}


def cache_root() -> Path:
    return Path(os.environ.get("HYBRIDLM_CACHE") or Path.home() / ".cache" / "hybridlm")


def synthetic_dir() -> Path:
    """The prepared corpus directory (prepared now if missing)."""
    final = cache_root() / f"synth-{VERSION}"
    if (final / "ready.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synth-", dir=final.parent))
    try:
        _prepare(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            if not (final / "ready.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _prepare(out: Path) -> None:
    from hybridlm.data.pack import pack
    from hybridlm.data.synth import generate_corpus
    from hybridlm.data.tokenizer import train_tokenizer

    raw = out / "raw"
    generate_corpus(raw, **CORPUS)
    rows = [json.loads(line) for line in (raw / "eval.jsonl").read_text().splitlines()]
    for kind in ("web", "qa"):
        with open(raw / f"eval-{kind}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows if r["kind"] == kind)
    train_tokenizer([raw / "web.jsonl", raw / "hq.jsonl"], out / "tokenizer", vocab_size=VOCAB_SIZE)
    for part in PARTS:
        pack([raw / f"{part}.jsonl"], out / part, out / "tokenizer")
    (out / "ready.json").write_text(json.dumps({"version": VERSION, "corpus": CORPUS, "parts": list(PARTS)}))


def resolve_path(path: str) -> Path:
    """A packed-shard directory for a config path (`synth://PART` or a directory)."""
    if path.startswith(PREFIX):
        part = path[len(PREFIX) :]
        if part == "tokenizer":
            return synthetic_dir() / "tokenizer"
        if part not in PARTS:
            from hybridlm.errors import ConfigError

            raise ConfigError(
                f"unknown synthetic part {path!r}; parts: {', '.join(PREFIX + p for p in PARTS)}"
            )
        return synthetic_dir() / part
    return Path(path)

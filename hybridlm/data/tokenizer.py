"""Loading a Hugging Face tokenizer from a local path, and training a byte-level BPE locally with `tokenizers`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from hybridlm.data.errors import DataError, TokenizerError
from hybridlm.data.io import RejectLog, check_text_field, expand_inputs, iter_records
from hybridlm.data.outputs import data_stage

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def load_tokenizer(path: str | Path):
    """A `tokenizers.Tokenizer` from a `tokenizer.json` file or a directory holding one (as saved by
    `save_pretrained`); falls back to `AutoTokenizer` for other local formats with a fast backend."""
    from tokenizers import Tokenizer

    p = Path(path)
    try:
        if p.is_file():
            return Tokenizer.from_file(str(p))
        if (p / "tokenizer.json").is_file():
            return Tokenizer.from_file(str(p / "tokenizer.json"))
    except Exception as e:
        raise TokenizerError(
            f"cannot read tokenizer {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e
    if p.is_dir():
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
            backend = getattr(tok, "backend_tokenizer", None)
            if backend is not None:
                return backend
        except Exception as e:
            raise TokenizerError(f"cannot read tokenizer directory {p}: {str(e).splitlines()[0]}") from e
        raise TokenizerError(f"tokenizer directory {p} has no tokenizer.json and no fast tokenizer")
    raise TokenizerError(
        f"tokenizer not found: {p} (pass a tokenizer.json or a directory saved by save_pretrained)"
    )


def fingerprint(tok) -> str:
    """Short hash of the tokenizer's complete definition: the same ids mean the same text only under the same one."""
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()[:16]


# what a tokenizer directory holds (save_pretrained); tokenizer.json alone is enough to load it
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tokenizer_file(path: str | Path) -> Path | None:
    """The tokenizer.json of a tokenizer path (the file itself or a directory holding one), None if there is none."""
    p = Path(path)
    if p.is_file() and p.name.endswith(".json"):
        return p
    return p / "tokenizer.json" if (p / "tokenizer.json").is_file() else None


def copy_tokenizer(source: str | Path, directory: str | Path) -> Path:
    """Copy a tokenizer (tokenizer.json, and its config files when it has them) into `directory`, each file written
    to a temporary name and renamed into place; returns the copied tokenizer.json."""
    src = tokenizer_file(source)
    if src is None:
        raise TokenizerError(f"no tokenizer.json at {source}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        file = src if name == "tokenizer.json" else src.with_name(name)
        if file.is_file():
            tmp = directory / f".{name}.tmp"
            shutil.copyfile(file, tmp)
            os.replace(tmp, directory / name)
    return directory / "tokenizer.json"


def packed_tokenizer(shard_dir: str | Path, index: dict) -> Path | None:
    """The tokenizer a packed dataset was made with: the copy `pack` keeps in `SHARDS/tokenizer/`, else the path its
    index.json records, else a `tokenizer/` beside the shards (the synthetic corpus) -- only one whose fingerprint is
    the index's."""
    shard_dir = Path(shard_dir)
    want = index.get("tokenizer_fingerprint")
    recorded = index.get("tokenizer")
    for candidate in (shard_dir / "tokenizer", recorded and Path(recorded), shard_dir.parent / "tokenizer"):
        if not candidate or tokenizer_file(candidate) is None:
            continue
        try:
            if want is None or fingerprint(load_tokenizer(candidate)) == want:
                return tokenizer_file(candidate)
        except TokenizerError:
            continue
    return None


def eos_token_id(tok, path: str | Path | None = None) -> int | None:
    """The end-of-document id: the `eos_token` of a saved tokenizer_config.json, else a usual EOS spelling."""
    names = []
    if path is not None:
        cfg = (
            Path(path) / "tokenizer_config.json"
            if Path(path).is_dir()
            else Path(path).with_name("tokenizer_config.json")
        )
        if cfg.is_file():
            eos = json.loads(cfg.read_text()).get("eos_token")
            if isinstance(eos, dict):
                eos = eos.get("content")
            if eos:
                names.append(eos)
    names += [EOS, "</s>", "<eos>", "<|end_of_text|>"]
    for n in names:
        i = tok.token_to_id(n)
        if i is not None:
            return i
    return None


def _texts(inputs, text_key: str, rejects: RejectLog) -> Iterator[str]:
    for f in expand_inputs(inputs):
        for _, rec in iter_records(f, text_key, rejects):
            yield rec[text_key]


@data_stage("train-tokenizer", owned=("tokenizer.json", "tokenizer_config.json", "rejects.jsonl"))
def train_tokenizer(
    inputs: list[str | Path],
    output_dir: str | Path,
    vocab_size: int = 8192,
    text_key: str = "text",
    min_frequency: int = 2,
    special_tokens: tuple[str, ...] = (EOS, PAD),
) -> dict:
    """Train a byte-level BPE (GPT-2 style: any byte sequence is encodable, no unknown token) and save it with
    `save_pretrained`, so `AutoTokenizer.from_pretrained(output_dir)` loads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(special_tokens):
        raise DataError(
            f"--vocab-size must be at least {256 + len(special_tokens)} (all bytes + special tokens)"
        )
    files = expand_inputs(inputs)
    check_text_field(files, text_key)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    rejects = RejectLog(out / "rejects.jsonl")
    n_docs = 0

    def counted():
        nonlocal n_docs
        for t in _texts([f.path for f in files], text_key, rejects):
            n_docs += 1
            yield t

    try:
        tok.train_from_iterator(counted(), trainer=trainer)
    finally:
        rejects.close()
    if n_docs == 0:
        raise DataError("no documents to train the tokenizer on")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=special_tokens[0],
        bos_token=special_tokens[0],
        pad_token=special_tokens[1] if len(special_tokens) > 1 else None,
    )
    fast.save_pretrained(str(out))
    return {
        "documents": n_docs,
        "vocab_size": tok.get_vocab_size(),
        "output_dir": str(out),
        "rejected_records": rejects.count,
    }

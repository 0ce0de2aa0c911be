"""Packing (`hybridlm data pack`): tokenise documents into contiguous token shards with an index.

One shard per input file, in input order, so the output is deterministic; a shard whose files were written by an
earlier run from the same input (path, size, mtime) with the same tokenizer and settings is not redone, so an
interrupted pack resumes, and an input that changed is packed again. `index.json` records the tokenizer's
fingerprint, which the trainer checks when it blends, evaluates or anneals, and `OUTPUT/tokenizer/` keeps a copy of
the tokenizer, which a trained model's export (`final/`) takes along. The format and its reader are in
`hybridlm.data.shards`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hybridlm.data.count import batched_texts, encode_stream
from hybridlm.data.errors import DataError
from hybridlm.data.io import RejectLog, check_text_field, expand_inputs, input_signature, reader_settings
from hybridlm.data.outputs import data_stage, write_json
from hybridlm.data.shards import write_idx
from hybridlm.data.tokenizer import copy_tokenizer, eos_token_id, fingerprint, load_tokenizer, tokenizer_file


@data_stage(
    "pack", owned=("[0-9]*.bin", "[0-9]*.idx", "index.json", "rejects", ".state", "tokenizer"), rejects="rejects"
)
def pack(
    inputs: list[str | Path],
    output_dir: str | Path,
    tokenizer: str | Path,
    text_key: str = "text",
    append_eos: bool = True,
    batch_size: int = 1024,
    progress=None,
) -> dict:
    """Write `OUTPUT/index.json` and `OUTPUT/NNNNN.{bin,idx}`; returns the index. `progress(n)` gets text bytes."""
    tok = load_tokenizer(tokenizer)
    files = expand_inputs(inputs)
    check_text_field(files, text_key)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    dtype = np.dtype("<u2") if vocab <= 2**16 else np.dtype("<u4")
    eos = eos_token_id(tok, tokenizer) if append_eos else None
    if append_eos and eos is None:
        raise DataError("the tokenizer has no EOS token; pass --no-eos or use a tokenizer with one")
    fp = fingerprint(tok)
    state = out / ".state"
    state.mkdir(exist_ok=True)
    shards, rejected, lines = [], 0, 0
    names = [f"{k:05d}" for k in range(len(files))]
    for name, f in zip(names, files, strict=True):
        marker = state / f"{name}.json"
        expect = {
            "file": str(f.path),
            "input": input_signature(f),
            "reader": reader_settings(),
            "tokenizer": fp,
            "append_eos": append_eos,
            "text_key": text_key,
        }
        if marker.exists():
            try:
                done = json.loads(marker.read_text())
            except ValueError:
                done = {}
            if {key: done.get(key) for key in expect} == expect and (out / f"{name}.bin").is_file():
                shards.append(done["shard"])
                rejected += done.get("rejected", 0)
                lines += done.get("input_lines", 0)
                if progress is not None:
                    progress(f.path.stat().st_size)
                continue
        marker.unlink(missing_ok=True)
        rejects = RejectLog(out / "rejects" / f"{f.key}.jsonl")
        bin_tmp = out / f"{name}.bin.tmp"
        lengths: list[int] = []
        try:
            with open(bin_tmp, "wb") as fh:
                for batch, enc in encode_stream(tok, batched_texts(f, text_key, rejects, batch_size)):
                    ids = [e.ids for e in enc]
                    if eos is not None:
                        for x in ids:
                            x.append(eos)
                    flat = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=sum(map(len, ids)))
                    fh.write(flat.astype(dtype).tobytes())
                    lengths.extend(map(len, ids))
                    if progress is not None:
                        progress(sum(len(t.encode("utf-8")) for t in batch))
        except BaseException:
            bin_tmp.unlink(missing_ok=True)
            raise
        finally:
            rejects.close()
        rejected += rejects.count
        lines += rejects.lines
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        write_idx(out / f"{name}.idx.tmp", offsets, dtype.itemsize)
        os.replace(bin_tmp, out / f"{name}.bin")
        os.replace(out / f"{name}.idx.tmp", out / f"{name}.idx")
        shard = {
            "name": name,
            "source": f"{f.source}/{f.relpath}",
            "documents": len(lengths),
            "tokens": int(offsets[-1]),
        }
        write_json(marker, {**expect, "shard": shard, "rejected": rejects.count, "input_lines": rejects.lines})
        shards.append(shard)
    # shards of an earlier run over more files are not part of this dataset
    for p in out.glob("[0-9]*.*"):
        if p.suffix in (".bin", ".idx") and p.stem.isdigit() and p.stem not in names:
            p.unlink()
    for p in state.glob("*.json"):
        if p.stem not in names:
            p.unlink()
    index = {
        "format": "hybridlm-tokens",
        "version": 1,
        "dtype": "uint16" if dtype.itemsize == 2 else "uint32",
        "vocab_size": vocab,
        "eos_id": eos,
        "append_eos": append_eos,
        "tokenizer": str(Path(tokenizer).resolve()),
        "tokenizer_fingerprint": fp,
        "documents": sum(s["documents"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        "shards": shards,
    }
    if tokenizer_file(tokenizer) is not None:  # the shards carry their tokenizer (a trained model's export gets it)
        copy_tokenizer(tokenizer, out / "tokenizer")
    write_json(out / "index.json", index)
    index["rejected_records"] = rejected
    index["input_lines"] = lines
    assert index["documents"] + rejected == lines  # conservation: every input line is packed or rejected
    return index

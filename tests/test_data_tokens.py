"""Tokenizer training, token counting, packing and the shard reader."""

import json

import numpy as np
import pytest

from hybridlm.data.count import count_tokens
from hybridlm.data.pack import pack
from hybridlm.data.shards import TokenShardDataset
from hybridlm.data.synth import generate_corpus
from hybridlm.data.tokenizer import load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    generate_corpus(d / "c", seed=2, n_web=120, n_hq=80, n_eval=20)
    rep = train_tokenizer([d / "c" / "web.jsonl", d / "c" / "hq.jsonl"], d / "tok", vocab_size=400)
    return d, rep


def texts(path):
    return [json.loads(x)["text"] for x in open(path)]


def test_trained_tokenizer_loads_with_autotokenizer(setup):
    from transformers import AutoTokenizer

    d, rep = setup
    assert rep["documents"] == 200 and rep["vocab_size"] == 400
    tok = AutoTokenizer.from_pretrained(str(d / "tok"))
    s = "Laithvand was founded in 1710. Ünïcode ✓"
    assert tok.decode(tok(s)["input_ids"]) == s  # byte-level: everything round-trips
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id is not None


def test_count_matches_direct_encoding_and_save(setup, tmp_path):
    d, _ = setup
    files = [d / "c" / "web.jsonl", d / "c" / "hq.jsonl"]
    rep = count_tokens(files, d / "tok", output_dir=tmp_path / "o", save=True, batch_size=16)
    tok = load_tokenizer(d / "tok")
    for f, r in zip(files, rep["files"], strict=False):
        ts = texts(f)
        assert r["documents"] == len(ts)
        assert r["tokens"] == sum(len(tok.encode(t, add_special_tokens=False).ids) for t in ts)
        assert r["bytes"] == sum(len(t.encode()) for t in ts)
    assert rep["tokens"] == sum(r["tokens"] for r in rep["files"])
    import datasets

    ds = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "o/tokenized/hq/hq.parquet"), split="train"
    )
    assert ds[3]["input_ids"] == tok.encode(texts(files[1])[3], add_special_tokens=False).ids


def test_pack_round_trip_determinism_and_resume(setup, tmp_path):
    d, _ = setup
    files = [d / "c" / "web.jsonl", d / "c" / "hq.jsonl"]
    idx = pack(files, tmp_path / "p1", d / "tok")
    assert idx["dtype"] == "uint16" and len(idx["shards"]) == 2
    ds = TokenShardDataset(tmp_path / "p1")
    tok = load_tokenizer(d / "tok")
    all_texts = texts(files[0]) + texts(files[1])
    assert len(ds) == len(all_texts) == idx["documents"]
    for i in (0, 1, 119, 120, len(all_texts) - 1):
        assert ds.get_document(i).tolist() == tok.encode(all_texts[i], add_special_tokens=False).ids + [
            idx["eos_id"]
        ]
    assert ds.get_document(0).dtype == np.uint16
    # a slice crossing the shard boundary equals the concatenation of documents
    b = int(ds.doc_offsets[120])
    stream = np.concatenate([ds.get_document(i) for i in range(len(ds))])
    assert len(stream) == ds.total_tokens == idx["tokens"]
    assert (ds.tokens(b - 7, 20) == stream[b - 7 : b + 13]).all()
    with pytest.raises(IndexError):
        ds.tokens(ds.total_tokens - 1, 2)
    # deterministic: a second pack is byte-identical
    pack(files, tmp_path / "p2", d / "tok")
    for name in ("00000.bin", "00000.idx", "00001.bin", "00001.idx", "index.json"):
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes()
    # resumable: finished shards are not redone
    before = (tmp_path / "p1" / "00000.bin").stat().st_mtime_ns
    (tmp_path / "p1" / ".state" / "00001.json").unlink()  # as if interrupted before shard 1 finished
    pack(files, tmp_path / "p1", d / "tok")
    assert (tmp_path / "p1" / "00000.bin").stat().st_mtime_ns == before
    assert (tmp_path / "p1" / ".state" / "00001.json").exists()
    assert TokenShardDataset(tmp_path / "p1").total_tokens == idx["tokens"]

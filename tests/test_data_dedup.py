"""MinHash correctness, LSH clustering quality on planted duplicates, keep rule, cross-dataset mode, resumability."""

import json
import re

import numpy as np
import pytest

from hybridlm.data.clusters import apply_keep_rule, connected_components
from hybridlm.data.dedup import DEDUP_PRESETS, DedupConfig, dedup_texts, parse_memory, run_dedup
from hybridlm.data.errors import DataError
from hybridlm.data.minhash import MinHasher, choose_bands_rows, exact_jaccard, shingle_set
from hybridlm.data.runs import RunSection, merge_runs, sort_records, write_run
from hybridlm.data.synth import generate_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("dedup_corpus")
    generate_corpus(d, seed=7, n_web=600, n_hq=60, n_eval=0, junk_fraction=0.0)
    recs = [json.loads(x) for x in open(d / "web.jsonl")]
    pairs = [json.loads(x) for x in open(d / "web_pairs.jsonl")]
    return d, recs, pairs


def test_signature_is_min_of_universal_hashes():
    h = MinHasher(num_perm=16, ngram=3)
    texts = ["one two three four five six", "a b", "", "one two three four five seven"]
    sig, n = h.signatures(texts)
    assert n.tolist() == [4, 1, 0, 4]
    for t, row in zip(texts[:2], sig, strict=False):
        x = h.shingle_hashes(t)
        ref = ((h._a[:, None] * x[None, :] + h._b[:, None]) >> np.uint64(32)).min(axis=1)
        assert (ref.astype(np.uint32) == row).all()


def test_ground_truth_jaccard_is_exact(corpus):
    _, recs, pairs = corpus
    by_id = {r["id"]: r["text"] for r in recs}
    for p in pairs[:20]:
        a, b = shingle_set(by_id[p["a"]]), shingle_set(by_id[p["b"]])
        assert p["jaccard"] == pytest.approx(len(a & b) / len(a | b))
    # hashed shingle sets give the same Jaccard as the string sets
    h = MinHasher()
    p = pairs[0]
    ha, hb = np.unique(h.shingle_hashes(by_id[p["a"]])), np.unique(h.shingle_hashes(by_id[p["b"]]))
    assert len(np.intersect1d(ha, hb)) / len(np.union1d(ha, hb)) == pytest.approx(p["jaccard"])


def test_signature_agreement_estimates_jaccard():
    words = [f"w{i}" for i in range(400)]
    a = " ".join(words)
    b = " ".join(words[:300] + [f"x{i}" for i in range(100)])
    h = MinHasher(num_perm=512, ngram=5)
    sig, _ = h.signatures([a, b])
    assert (sig[0] == sig[1]).mean() == pytest.approx(exact_jaccard(a, b, 5), abs=0.06)


def test_bands_rows_choice():
    b, r = choose_bands_rows(0.8, 128)
    assert b * r <= 128 and 6 <= r <= 16
    assert DedupConfig(bands=16).bands_rows() == (16, 8)
    assert DedupConfig(bands=8, rows=4).bands_rows() == (8, 4)
    with pytest.raises(ValueError):
        DedupConfig(bands=20, rows=10)


def test_verified_dedup_finds_planted_pairs(corpus):
    _, recs, pairs = corpus
    idx = {r["id"]: i for i, r in enumerate(recs)}
    res = dedup_texts([r["text"] for r in recs], config=DedupConfig(verify=True))
    lab = res.labels
    pos = [(idx[p["a"]], idx[p["b"]]) for p in pairs if p["jaccard"] >= 0.8]
    recall = np.mean([lab[a] == lab[b] for a, b in pos])
    assert len(pos) > 50 and recall >= 0.95
    # every accepted edge truly reaches the threshold (exact Jaccard on the strings)
    for a, b in res.edges.tolist()[:200]:
        assert exact_jaccard(recs[a]["text"], recs[b]["text"]) >= 0.8 - 1e-9
    # no cluster mixes two planted groups or pulls in a clean document
    groups = {}
    for i, r in enumerate(recs):
        if lab[i] != i or (lab == i).sum() > 1:
            groups.setdefault(lab[i], set()).add(r.get("dup_group"))
    assert all(len(g) == 1 and None not in g for g in groups.values())


def test_short_documents_do_not_collapse_into_one_cluster():
    texts = ["", "  ", "hello", "hello world", "a b c", "x", "hello"] + ["!!!"] * 3
    res = dedup_texts(texts, config=DedupConfig(verify=False))
    assert res.keep.tolist() == [True] * 6 + [False] + [True] * 3  # only the exact repeat of "hello" goes
    assert res.kept_for[6] == 2


def test_keep_rule_rank_then_input_order():
    labels = np.array([0, 0, 0, 3, 3])
    rank = np.array([1, 0, 0, 1, 1])
    keep, kept_for = apply_keep_rule(labels, rank)
    assert keep.tolist() == [False, True, False, True, False]
    assert kept_for.tolist() == [1, 1, 1, 3, 3]
    keep, kept_for = apply_keep_rule(labels, rank, cross_only=True)
    assert keep.tolist() == [False, True, True, True, True]
    assert connected_components(5, np.array([[3, 4], [1, 4]])).tolist() == [0, 1, 2, 1, 1]


def _read(d):
    out = {}
    for p in sorted(d.rglob("*.jsonl")):
        out[str(p.relative_to(d))] = p.read_text()
    return out


def test_run_dedup_two_sources_counts_rank_and_cross_only(corpus, tmp_path):
    d, recs, pairs = corpus
    # source "b" holds copies of 30 web documents; "a" is the web set
    b = tmp_path / "b.jsonl"
    b.write_text("".join(json.dumps({"text": r["text"], "copy_of": r["id"]}) + "\n" for r in recs[:30]))
    rep = run_dedup([d / "web.jsonl", b], tmp_path / "o1", config=DedupConfig(verify=True), rank=["b"], workers=1)
    assert rep["kept_documents"] + rep["removed_documents"] == rep["input_documents"] == len(recs) + 30
    assert rep["per_source"]["b"]["removed"] == 0  # the best-ranked source keeps its copies
    removed = [json.loads(x) for x in open(tmp_path / "o1" / "removed" / "web" / "web.jsonl")]
    assert {r["id"] for r in recs[:30]} <= {r["id"] for r in removed}
    r0 = next(r for r in removed if r["id"] == recs[0]["id"])
    assert r0["dedup_kept_id"] == "b/b.jsonl:1" and isinstance(r0["dedup_cluster_id"], int)
    assert rep["largest_clusters"][0]["examples"][0]["text"]
    assert (tmp_path / "o1" / "cluster_sizes.png").stat().st_size > 1000
    hist = rep["cluster_size_histogram"]
    assert sum(int(s) * c for s, c in hist["b"].items()) >= 60
    # cross-only: only web documents that duplicate something in b go (the 30 originals and their close
    # planted variants); other within-web duplicates stay
    rep2 = run_dedup(
        [d / "web.jsonl", b],
        tmp_path / "o2",
        config=DedupConfig(verify=True, cross_only=True),
        rank=["b"],
        workers=1,
    )
    copied = {r["id"] for r in recs[:30]}
    allowed = copied | {p[k] for p in pairs for k in "ab" if p["jaccard"] >= 0.8 and ({p["a"], p["b"]} & copied)}
    gone = {json.loads(x)["id"] for x in open(tmp_path / "o2" / "removed" / "web" / "web.jsonl")}
    assert copied <= gone <= allowed and rep2["per_source"]["b"]["removed"] == 0
    assert rep2["removed_documents"] == len(gone) < rep["removed_documents"]
    # output is identical with 2 worker processes (the multi-process path)
    rep3 = run_dedup([d / "web.jsonl", b], tmp_path / "o3", config=DedupConfig(verify=True), rank=["b"], workers=2)
    assert _read(tmp_path / "o1" / "kept") == _read(tmp_path / "o3" / "kept")
    assert _read(tmp_path / "o1" / "removed") == _read(tmp_path / "o3" / "removed")
    assert rep3["removed_documents"] == rep["removed_documents"]


def test_char_shingles():
    a = "the quick brown fox jumps over the lazy dog near the river bank today"
    b = a.replace("lazy", "lazi")
    res = dedup_texts(
        [a, b, "something else entirely different words here"],
        config=DedupConfig(shingle="char", ngram=5, threshold=0.7, verify=True),
    )
    assert res.keep.tolist() == [True, False, True]


# --- on disk: same decisions as in memory, bounded buffers, resumable tasks ------------------------------------------


def _in_memory_reference(paths, config, rank_order):
    """dedup_texts over the concatenated inputs: removed id -> (cluster index, kept id)."""
    texts, ids, ranks = [], [], []
    for p in paths:
        for line, raw in enumerate(open(p), 1):
            texts.append(json.loads(raw)["text"])
            ids.append(f"{p.stem}/{p.name}:{line}")
            ranks.append(rank_order.index(p.stem))
    res = dedup_texts(texts, ranks, config)
    return {ids[i]: (int(res.labels[i]), ids[res.kept_for[i]]) for i in np.flatnonzero(~res.keep)}


def _on_disk_removed(out):
    got = {}
    for p in sorted((out / "removed").rglob("*.jsonl")):
        for x in open(p):
            r = json.loads(x)
            got[r["_doc"]] = (r["dedup_cluster_id"], r["dedup_kept_id"])
    return got


@pytest.fixture(scope="module")
def two_sources(corpus, tmp_path_factory):
    """web (600 documents with planted groups) and 'copies' (rewritten copies of 40 web documents), every record
    tagged with its own id so outputs can be matched."""
    d, recs, _ = corpus
    t = tmp_path_factory.mktemp("two")
    web = t / "web.jsonl"
    web.write_text("".join(json.dumps({**r, "_doc": f"web/web.jsonl:{i}"}) + "\n" for i, r in enumerate(recs, 1)))
    copies = t / "copies.jsonl"
    rows = [{"text": r["text"].replace(" the ", " a ", 1)} for r in recs[:40]] + [{"text": "short"}, {"text": "!!"}]
    copies.write_text(
        "".join(json.dumps({**r, "_doc": f"copies/copies.jsonl:{i}"}) + "\n" for i, r in enumerate(rows, 1))
    )
    return web, copies


@pytest.mark.parametrize(
    "config,rank",
    [
        (DedupConfig(), ["web", "copies"]),
        (DedupConfig(verify=True), ["copies", "web"]),
        (DedupConfig(verify=True, cross_only=True), ["copies", "web"]),
        (DedupConfig.preset("zyda1"), ["web", "copies"]),
        (DedupConfig.preset("zyda2", ngram=10, bands=16, rows=8, threshold=0.7, verify=True), ["copies", "web"]),
    ],
    ids=["default", "verify", "cross-only", "zyda1", "zyda2-like"],
)
def test_on_disk_matches_in_memory(two_sources, tmp_path, config, rank):
    """Tiny memory budget: many spilled runs per file, chunked merges, spilled pair runs, three band tasks."""
    web, copies = two_sources
    rep = run_dedup([web, copies], tmp_path / "o", config=config, rank=rank, workers=1, memory=16_000, band_tasks=3)
    want = _in_memory_reference([web, copies], config, rank)
    got = _on_disk_removed(tmp_path / "o")
    assert len(want) > 10
    assert got == want
    assert rep["removed_documents"] == len(want)
    sig = [json.loads(p.read_text()) for p in sorted((tmp_path / "o" / ".work" / "done" / "signatures").glob("*"))]
    assert sig[0]["runs"] >= 5  # the budget forced spills
    kept = sum(1 for p in (tmp_path / "o" / "kept").rglob("*.jsonl") for _ in open(p))
    assert kept + len(got) == rep["input_documents"] == 600 + 42


def test_tasks_resume_and_invalidate(two_sources, tmp_path):
    web, copies = two_sources
    out = tmp_path / "o"
    cfg = DedupConfig(verify=True)
    first = run_dedup([web, copies], out, config=cfg, workers=1, band_tasks=2)
    done = out / ".work" / "done"
    stamp = {p: p.stat().st_mtime_ns for p in done.rglob("*.json")}
    # a crash in the bucket stage: its second task and everything after it are missing
    for p in [done / "buckets" / "00001.json", *(done / s for s in ("components", "write", "report"))]:
        if p.is_dir():
            for q in p.iterdir():
                q.unlink()
        else:
            p.unlink()
    again = run_dedup([web, copies], out, config=cfg, workers=1, band_tasks=2)
    assert again["removed_documents"] == first["removed_documents"]
    for p in (done / "signatures").iterdir():
        assert p.stat().st_mtime_ns == stamp[p]  # not recomputed
    assert (done / "buckets" / "00000.json").stat().st_mtime_ns == stamp[done / "buckets" / "00000.json"]
    assert (done / "buckets" / "00001.json").exists()
    # a rerun after a recomputed signature task redoes the later stages too
    (done / "signatures" / "00001.json").unlink()
    run_dedup([web, copies], out, config=cfg, workers=1, band_tasks=2)
    assert (done / "buckets" / "00000.json").stat().st_mtime_ns != stamp[done / "buckets" / "00000.json"]
    # other settings discard the stored work
    run_dedup([web, copies], out, config=DedupConfig(ngram=5), workers=1)
    assert json.loads((out / "report.json").read_text())["params"]["ngram"] == 5


def test_presets_and_overrides():
    z1 = DedupConfig.preset("zyda1")
    assert (z1.shingle, z1.ngram, z1.num_perm, z1.bands_rows()) == ("word", 13, 128, (32, 4))
    z2 = DedupConfig.preset("zyda2")
    assert (z2.shingle, z2.ngram, z2.bands_rows(), z2.cross_only) == ("char", 25, (8, 16), True)
    assert DedupConfig.preset("default") == DedupConfig()
    assert DedupConfig.preset("zyda2", cross_only=False, verify=True).cross_only is False
    assert set(DEDUP_PRESETS) == {"default", "zyda1", "zyda2"}
    with pytest.raises(DataError, match="--preset must be one of default, zyda1, zyda2"):
        DedupConfig.preset("zyda3")


def test_parse_memory():
    assert parse_memory("512M") == 512 * 2**20
    assert parse_memory("1.5GB") == int(1.5 * 2**30)
    assert parse_memory("2gib") == 2 * 2**30
    for bad in ("lots", "10K", "-1G"):
        with pytest.raises(DataError, match="--memory"):
            parse_memory(bad)


def test_merge_runs_gives_sorted_whole_buckets(tmp_path):
    rng = np.random.default_rng(3)
    sections, all_k, all_v = [], [], []
    for r in range(7):
        k = rng.integers(0, 50, size=int(rng.integers(0, 300))).astype(np.uint64)  # many repeated keys
        v = rng.integers(0, 10_000, size=len(k)).astype(np.uint64)
        write_run(tmp_path / f"r{r}.bin", [sort_records(k, v), sort_records(k[::-1].copy(), v)])
        sections.append(RunSection(tmp_path / f"r{r}.bin", len(k), len(k), add=100 * r))
        all_k.append(k[::-1])
        all_v.append(v + np.uint64(100 * r))
    blocks = list(merge_runs(sections, budget_records=40))
    keys = np.concatenate([b[0] for b in blocks])
    vals = np.concatenate([b[1] for b in blocks])
    want_k, want_v = sort_records(np.concatenate(all_k), np.concatenate(all_v))
    assert (keys == want_k).all() and (vals == want_v).all()
    assert len(blocks) > 3
    seen = [set(b[0].tolist()) for b in blocks]
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1 :])  # a key never spans two blocks


def test_split_files_give_the_same_output(two_sources, tmp_path, monkeypatch):
    """Fewer files than workers: a file is read by several shards (line ranges); outputs, ids and reject line
    numbers are those of the unsplit run."""
    import hybridlm.data.dedup as dedup_mod

    web, copies = two_sources
    bad = tmp_path / "web.jsonl"
    lines = web.read_text().splitlines(keepends=True)
    bad.write_text("".join(lines[:300]) + "{not json\n" + "".join(lines[300:]))
    cfg = DedupConfig(verify=True)
    one = run_dedup([bad, copies], tmp_path / "one", config=cfg, workers=1)
    monkeypatch.setattr(dedup_mod, "MIN_SPLIT_LINES", 100)
    split = run_dedup([bad, copies], tmp_path / "split", config=cfg, workers=3)
    plan = json.loads((tmp_path / "split" / ".work" / "plan.json").read_text())
    assert [s["lines"] for s in plan["shards"]] == [[1, 302], [302, 602], None]
    for sub in ("kept", "removed"):
        a = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one" / sub).rglob("*.jsonl")}
        b = {p.relative_to(tmp_path / "split"): p.read_bytes() for p in (tmp_path / "split" / sub).rglob("*.jsonl")}
        assert a == b and len(a) == 2
    strip = lambda r: {k: v for k, v in r.items() if k != "execution"}  # noqa: E731
    assert strip(split) == strip(one)
    assert split["rejected_records"] == 1 and split["reject_examples"][0]["line"] == 301


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_split_compressed_file_and_kept_lines_byte_for_byte(two_sources, tmp_path, monkeypatch, suffix):
    """A compressed input split over several shards: its kept/removed output is one valid stream of the same
    compression holding the unsplit run's records; kept records are the input lines, byte for byte."""
    import gzip

    import zstandard

    import hybridlm.data.dedup as dedup_mod

    web, _ = two_sources
    data = web.read_bytes()
    src = tmp_path / f"web{suffix}"
    src.write_bytes(gzip.compress(data) if suffix.endswith("gz") else zstandard.ZstdCompressor().compress(data))
    unpack = (
        gzip.decompress
        if suffix.endswith("gz")
        else lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)
    )
    cfg = DedupConfig(verify=True)
    run_dedup([src], tmp_path / "one", config=cfg, workers=1)
    monkeypatch.setattr(dedup_mod, "MIN_SPLIT_LINES", 100)
    run_dedup([src], tmp_path / "split", config=cfg, workers=3)
    assert len(json.loads((tmp_path / "split" / ".work" / "plan.json").read_text())["shards"]) == 3
    for sub in ("kept", "removed"):
        one = unpack((tmp_path / "one" / sub / "web" / src.name).read_bytes())
        split = (tmp_path / "split" / sub / "web" / src.name).read_bytes()
        if suffix.endswith("gz"):
            split = gzip.decompress(split)  # three gzip members
        else:
            with zstandard.ZstdDecompressor().stream_reader(split, read_across_frames=True) as r:
                split = r.read()  # three zstd frames
        assert split == one and one
    kept = unpack((tmp_path / "split" / "kept" / "web" / src.name).read_bytes()).splitlines(keepends=True)
    assert set(kept) <= set(data.splitlines(keepends=True))  # verbatim input lines


def test_batch_shingle_hashes_match_an_independent_reference():
    """The vectorised word hashing and n-gram combination equal a plain-Python rendition of the documented
    formulas, on ASCII, Unicode (case folding, multi-byte, astral), long words and short documents."""
    import xxhash

    mask = (1 << 64) - 1

    def mix(x):
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & mask
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    def word_hash(w):
        b = w.encode()
        h = mix(int.from_bytes(b[:8], "little") ^ ((len(b) * 0x9E3779B97F4A7C15) & mask))
        for j in range(8, len(b), 8):
            h = mix(((h * 0xD6E8FEB86659FD93) & mask) ^ int.from_bytes(b[j : j + 8], "little"))
        return h

    def reference(h, text):
        words = re.findall(r"\w+", text.lower())
        if not words:
            return []
        if len(words) < h.ngram:
            return [xxhash.xxh64_intdigest(" ".join(words).encode(), seed=1)]
        units, pos = [word_hash(w) for w in words], [int(p) for p in h._pos]
        return [
            mix(sum(units[i + k] * pos[k] for k in range(h.ngram)) & mask) for i in range(len(units) - h.ngram + 1)
        ]

    texts = [
        "The quick brown fox jumps over the lazy dog near the river bank today and tomorrow again",
        "",
        "  ",
        "a b",
        "Ünïcode WÖRDS ok_ok straße İstanbul K " * 5,
        "😀 emoji 𝔘 astral words " * 4,
        "averyveryverylongwordthatexceedssixteenbytes_and_more abcdefgh abcdefghi " * 6,
        "tabs\tand\nnewlines, punctuation! (brackets) 123 456" * 3,
    ]
    for n in (13, 3, 1):
        h = MinHasher(ngram=n)
        flat, counts = h.batch_hashes(texts)
        ref = [reference(h, t) for t in texts]
        assert counts.tolist() == [len(r) for r in ref]
        assert flat.tolist() == [x for r in ref for x in r]

"""Nothing lost, nothing stale (data stages): colliding input names, reruns after changed inputs or settings,
invalid Unicode, damaged compressed files, oversize records, output locations, locks and dead runs' debris."""

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from hybridlm.data.count import count_tokens
from hybridlm.data.dedup import DedupConfig, run_dedup
from hybridlm.data.errors import DataError
from hybridlm.data.filters import FilterConfig, run_filter
from hybridlm.data.io import expand_inputs, iter_records
from hybridlm.data.pack import pack
from hybridlm.data.partition import partition
from hybridlm.data.shards import TokenShardDataset
from hybridlm.data.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
WORDS = "river mill town stone bridge market garden harbor valley forest meadow castle tower road field lake".split()


def doc(rng: random.Random, n_words: int = 40) -> str:
    """A document that passes the Zyda filters and shares no 13-gram with another (random word order)."""
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "."


def write_jsonl(path: Path, texts, opener=open) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    return path


def records(folder: Path) -> list[dict]:
    out = []
    for f in expand_inputs([folder]):
        out += [r for _, r in iter_records(f, None)]
    return out


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    rng = random.Random(0)
    corpus = write_jsonl(d / "c.jsonl", [doc(rng) for _ in range(60)])
    train_tokenizer([corpus], d / "tok", vocab_size=300)
    return d / "tok"


# --- 1. colliding input names ----------------------------------------------------------------------------------------


def colliding_tree(root: Path) -> dict[str, int]:
    rng = random.Random(1)
    sizes = {"a.jsonl": 5, "a.jsonl.gz": 7, "sub/a.jsonl": 3, "sub__a.jsonl": 4, "a.jsonl.zst": 2}
    for name, n in sizes.items():
        texts = [doc(rng) for _ in range(n)]
        if name.endswith(".gz"):
            write_jsonl(root / name, texts, gzip.open)
        elif name.endswith(".zst"):
            (root / name).write_bytes(zstandard.ZstdCompressor().compress("".join(
                json.dumps({"text": t}) + "\n" for t in texts).encode()))
        else:
            write_jsonl(root / name, texts)
    return sizes


def test_colliding_input_names_keep_every_document(tmp_path):
    mix = tmp_path / "mix"
    sizes = colliding_tree(mix)
    total = sum(sizes.values())
    keys = [f.key for f in expand_inputs([mix])]
    outs = [f.out_relpath for f in expand_inputs([mix])]
    assert len(set(keys)) == len(keys) == 5 and len(set(outs)) == 5
    for workers in (1, 2):
        rep = run_filter([mix], tmp_path / f"f{workers}", workers=workers)
        assert rep["input_documents"] == rep["kept_documents"] == total
        assert len(records(tmp_path / f"f{workers}" / "kept")) == total
        d = run_dedup([mix], tmp_path / f"d{workers}", config=DedupConfig(), workers=workers)
        assert d["kept_documents"] == total == len(records(tmp_path / f"d{workers}" / "kept"))
    # compression suffixes and directories are kept in the output names
    kept = sorted(p.relative_to(tmp_path / "f1" / "kept").as_posix() for p in (tmp_path / "f1" / "kept").rglob("*.*"))
    assert kept == ["mix/a.jsonl", "mix/a.jsonl.gz", "mix/a.jsonl.zst", "mix/sub/a.jsonl", "mix/sub__a.jsonl"]
    with gzip.open(tmp_path / "f1" / "kept" / "mix" / "a.jsonl.gz", "rt") as fh:
        assert len(fh.readlines()) == 7


def test_count_save_names_do_not_collide(tmp_path, tok):
    mix = tmp_path / "mix"
    sizes = colliding_tree(mix)
    rep = count_tokens([mix], tok, output_dir=tmp_path / "c", save=True)
    saved = sorted((tmp_path / "c" / "tokenized").rglob("*.parquet"))
    assert len(saved) == 5 and rep["documents"] == sum(sizes.values())
    import pyarrow.parquet as pq

    assert sum(pq.read_table(p).num_rows for p in saved) == sum(sizes.values())


# --- 2. stale results -----------------------------------------------------------------------------------------------


def test_changed_settings_or_inputs_redo_the_work(tmp_path, tok):
    rng = random.Random(2)
    src = write_jsonl(tmp_path / "in" / "part.jsonl", [doc(rng, 10 + 10 * (i % 5)) for i in range(50)])
    out = tmp_path / "F"
    first = run_filter([src], out, workers=1)
    second = run_filter([src], out, config=FilterConfig(min_length=300), workers=1)
    fresh = run_filter([src], tmp_path / "fresh", config=FilterConfig(min_length=300), workers=1)
    assert second["kept_documents"] == fresh["kept_documents"] < first["kept_documents"]
    assert len(records(out / "kept")) == fresh["kept_documents"]
    # an input that grew is packed again
    p1 = pack([src], tmp_path / "P", tok)
    with open(src, "a") as fh:
        fh.write(json.dumps({"text": doc(rng)}) + "\n")
    p2 = pack([src], tmp_path / "P", tok)
    assert p2["documents"] == p1["documents"] + 1 == TokenShardDataset(tmp_path / "P").num_documents
    # outputs of inputs no longer given are removed
    other = write_jsonl(tmp_path / "in2" / "other.jsonl", [doc(rng) for _ in range(3)])
    run_filter([src, other], tmp_path / "G", workers=1)
    run_filter([src], tmp_path / "G", workers=1)
    assert [p.name for p in (tmp_path / "G" / "kept").rglob("*.jsonl")] == ["part.jsonl"]
    run_filter([src, other], tmp_path / "G", workers=1)  # and come back when given again
    assert sorted(p.name for p in (tmp_path / "G" / "kept").rglob("*.jsonl")) == ["other.jsonl", "part.jsonl"]


def test_partition_rerun_replaces_earlier_partitions(tmp_path):
    rng = random.Random(3)
    src = write_jsonl(tmp_path / "src.jsonl", [doc(rng) for _ in range(40)])
    partition([src], tmp_path / "P", 4)
    rep = partition([src], tmp_path / "P", 2)
    assert sorted(p.name for p in (tmp_path / "P").glob("part-*")) == [
        "part-00000-of-00002.jsonl",
        "part-00001-of-00002.jsonl",
    ]
    assert len(records(tmp_path / "P")) == 40 == rep["input_lines"]


def test_output_inside_input_is_refused(tmp_path):
    rng = random.Random(4)
    write_jsonl(tmp_path / "data" / "a.jsonl", [doc(rng) for _ in range(5)])
    with pytest.raises(DataError, match="inside input directory"):
        run_filter([tmp_path / "data"], tmp_path / "data" / "out")
    assert not (tmp_path / "data" / "out").exists()
    run_filter([tmp_path / "data"], tmp_path / "F", workers=1)
    with pytest.raises(DataError, match="inside output directory"):
        run_filter([tmp_path / "F" / "kept"], tmp_path / "F")
    with pytest.raises(DataError, match="holds the output of 'hybridlm data filter'"):
        run_dedup([tmp_path / "data"], tmp_path / "F")


# --- 3. bad strings, damaged files, oversize records ----------------------------------------------------------------


def test_lone_surrogate_is_a_reject_in_every_stage(tmp_path, tok):
    rng = random.Random(5)
    src = tmp_path / "s.jsonl"
    lines = [json.dumps({"text": doc(rng)}) for _ in range(4)]
    lines.insert(2, '{"text": "a \\ud800 b"}')
    lines.append('{"text": "fine", "meta": "\\udfff"}')
    lines.append('{"text": "' + doc(rng) + ' \\ud83d\\ude00"}')  # a valid surrogate pair is fine
    src.write_text("\n".join(lines) + "\n")

    def check(rej):
        assert [(e["line"], e["reason"]) for e in rej[:2]] == [
            (3, "invalid Unicode: lone surrogate U+D800 in field 'text'"),
            (6, "invalid Unicode: lone surrogate U+DFFF in field 'meta'"),
        ]

    check(count_tokens([src], tok)["rejects"]["examples"])
    check(run_filter([src], tmp_path / "f", workers=1)["reject_examples"])
    check(run_dedup([src], tmp_path / "d", workers=1)["reject_examples"])
    p = pack([src], tmp_path / "p", tok)
    assert p["documents"] == 5 and p["rejected_records"] == 2
    check(partition([src], tmp_path / "q", 2)["reject_examples"])


def test_truncated_and_mislabelled_compressed_files_are_errors_naming_them(tmp_path):
    rng = random.Random(6)
    body = "".join(json.dumps({"text": doc(rng, 200)}) + "\n" for _ in range(300)).encode()
    zst = zstandard.ZstdCompressor().compress(body)
    gz = gzip.compress(body)
    cases = {
        "cut.jsonl.zst": (zst[: len(zst) // 2], "truncated zstd data"),
        "cut.jsonl.gz": (gz[: len(gz) // 2], "truncated gzip data"),
        "plain.jsonl.gz": (body[:2000], "not gzip data"),
        "plain.jsonl.zst": (body[:2000], "not zstd data"),
    }
    for name, (blob, what) in cases.items():
        d = tmp_path / name.replace(".", "_")
        (d / name).parent.mkdir()
        (d / name).write_bytes(blob)
        with pytest.raises(DataError, match=what) as e:
            run_filter([d], tmp_path / f"out_{d.name}", workers=1)
        assert name in str(e.value) and "\n" not in str(e.value)
        assert not list((tmp_path / f"out_{d.name}").rglob("*.jsonl*"))  # no partial output left behind
    # the command line: one line, exit 2, no traceback, not a bare "aborted"
    proc = subprocess.run(
        [sys.executable, "-m", "hybridlm", "data", "filter", str(tmp_path / "cut_jsonl_gz"), "-o", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "truncated gzip data" in lines[0] and "cut.jsonl.gz" in lines[0]


def test_oversize_records_are_rejected_without_being_held(tmp_path, tok, monkeypatch):
    import tracemalloc

    rng = random.Random(7)
    src = tmp_path / "big.jsonl"
    with open(src, "w") as fh:
        fh.write(json.dumps({"text": doc(rng)}) + "\n")
        fh.write(json.dumps({"text": "word " * 1_000_000}) + "\n")  # 5 MB
        fh.write(json.dumps({"text": doc(rng)}) + "\n")
    f = expand_inputs([src])[0]
    from hybridlm.data.io import RejectLog

    rej = RejectLog()
    tracemalloc.start()
    got = [line for line, _ in iter_records(f, "text", rej, max_doc_bytes=64_000)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got == [1, 3] and rej.examples[0]["line"] == 2 and "document too large: 5,000,012 bytes" in (
        rej.examples[0]["reason"]
    )
    assert peak < 4_000_000  # the 5 MB line was never held whole
    # stages take the limit from --max-doc-bytes (the environment, so worker processes see it too)
    monkeypatch.setenv("HYBRIDLM_MAX_DOC_BYTES", "64000")
    rep = run_filter([src], tmp_path / "f", workers=2)
    assert rep["input_lines"] == 3 and rep["rejected_records"] == 1
    assert count_tokens([src], tok)["documents"] == 2
    # a changed limit is a changed setting: the shard is redone
    monkeypatch.setenv("HYBRIDLM_MAX_DOC_BYTES", "0")
    assert run_filter([src], tmp_path / "f", workers=1)["rejected_records"] == 0
    # the command line option
    from typer.testing import CliRunner

    from hybridlm.data.cli import app

    r = CliRunner().invoke(app, ["filter", str(src), "-o", str(tmp_path / "g"), "-j", "1", "--max-doc-bytes", "64000"])
    assert r.exit_code == 0 and "big.jsonl:2: document too large" in r.output.replace("\n", "")


def test_datatrove_engine_reruns_after_changed_settings(tmp_path):
    from hybridlm.data.dt_steps import run_filter_datatrove

    rng = random.Random(9)
    src = write_jsonl(tmp_path / "in" / "part.jsonl", [doc(rng, 10 + 10 * (i % 5)) for i in range(30)])
    first = run_filter_datatrove([src], tmp_path / "D", workers=1)
    second = run_filter_datatrove([src], tmp_path / "D", config=FilterConfig(min_length=300), workers=1)
    local = run_filter([src], tmp_path / "L", config=FilterConfig(min_length=300), workers=1)
    assert second["kept_documents"] == local["kept_documents"] < first["kept_documents"]
    assert len(records(tmp_path / "D" / "kept")) == local["kept_documents"]


# --- 6. locks, dead workers, stale temp files -----------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_workers_die_with_a_killed_run_and_the_rerun_cleans_up(tmp_path):
    rng = random.Random(8)
    for k in range(3):
        write_jsonl(tmp_path / "in" / f"p{k}.jsonl", [doc(rng) for _ in range(5)])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYBRIDLM_FAULT": "shard:hang"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hybridlm", "data", "filter", str(tmp_path / "in"), "-o", str(out), "-j", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    t0 = time.time()
    while len(_children(proc.pid)) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() - t0 < 60
        time.sleep(0.05)
    workers = _children(proc.pid)
    # while it runs, a second run into the directory gets one line naming the holder
    from hybridlm.locks import DirectoryLockedError

    with pytest.raises(DirectoryLockedError, match=f"in use by pid {proc.pid}"):
        run_filter([tmp_path / "in"], out)
    with pytest.raises(DirectoryLockedError, match=f"in use by pid {proc.pid}"):
        run_dedup([tmp_path / "in"], out, config=DedupConfig(ngram=5))
    (out / "kept" / "in").mkdir(parents=True, exist_ok=True)
    (out / "kept" / "in" / "p0.jsonl.tmp").write_text("half a line")  # as a killed writer leaves it
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.time()
    while any(_alive(w) for w in workers):
        assert time.time() - t0 < 10, "worker processes outlived their killed parent"
        time.sleep(0.05)
    rep = run_filter([tmp_path / "in"], out, workers=2)
    assert rep["kept_documents"] == 15 and not list(out.rglob("*.tmp"))

"""Bad input: counted, reported with file and line, written to rejects, and the run continues."""

import json

import pytest
from typer.testing import CliRunner

from hybridlm.data.cli import app
from hybridlm.data.errors import MissingTextColumnError, TokenizerError
from hybridlm.data.filters import run_filter
from hybridlm.data.io import RejectLog, expand_inputs, iter_records
from hybridlm.data.partition import partition
from hybridlm.errors import HybridLMError

GOOD = "The river runs past the old mill and the town. " * 4


def bad_dir(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    lines = [
        json.dumps({"text": GOOD, "n": 1}).encode(),
        b'{"text": "broken',
        json.dumps({"body": "no text field"}).encode(),
        b'{"text": "caf\xe9 latin-1 bytes"}',
        json.dumps({"text": GOOD + " second", "n": 2}).encode(),
        json.dumps({"text": 5}).encode(),
        b"[1, 2]",
    ]
    (d / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (d / "empty.jsonl").write_bytes(b"")
    return d


def test_reader_rejects_with_file_and_line(tmp_path):
    d = bad_dir(tmp_path)
    rej = RejectLog(tmp_path / "rejects.jsonl")
    got = []
    for f in expand_inputs([d]):
        got += [(f.path.name, line, rec["n"]) for line, rec in iter_records(f, "text", rej)]
    rej.close()
    assert got == [("a.jsonl", 1, 1), ("a.jsonl", 5, 2)]
    rows = [json.loads(x) for x in open(tmp_path / "rejects.jsonl")]
    where = [(r["file"].split("/")[-1], r["line"], r["reason"].split(":")[0]) for r in rows]
    assert where == [
        ("a.jsonl", 2, "malformed JSON"),
        ("a.jsonl", 3, "missing text field 'text'"),
        ("a.jsonl", 4, "non-UTF-8 bytes"),
        ("a.jsonl", 6, "text field 'text' is not a string"),
        ("a.jsonl", 7, "record is not a JSON object"),
    ]
    assert [p.split("/")[-1] for p in rej.empty_files] == ["empty.jsonl"]  # listed, but not a rejected line
    assert rej.lines == 7 and rej.count + len(got) == rej.lines  # every non-blank line is accounted for
    assert rows[2]["raw"] == '{"text": "caf\\xe9 latin-1 bytes"}'  # the bad bytes are kept, escaped


def test_filter_run_continues_and_reports_rejects(tmp_path):
    rep = run_filter([bad_dir(tmp_path)], tmp_path / "out", workers=1)
    assert rep["input_documents"] == 2 and rep["kept_documents"] == 2
    assert rep["rejected_records"] == 5 and rep["input_lines"] == 7
    assert {(e["line"]) for e in rep["reject_examples"]} == {2, 3, 4, 6, 7}
    assert [p.split("/")[-1] for p in rep["empty_files"]] == ["empty.jsonl"]


def test_missing_text_column_is_one_clear_error(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("\n".join(json.dumps({"body": f"doc {i}"}) for i in range(5)) + "\n")
    with pytest.raises(MissingTextColumnError, match="--text-key"):
        run_filter([p], tmp_path / "out")
    r = CliRunner().invoke(app, ["filter", str(p), "-o", str(tmp_path / "o2")])
    assert isinstance(r.exception, HybridLMError) and "body" in str(r.exception)


def test_unreadable_tokenizer_is_one_clear_error(tmp_path):
    from hybridlm.data.count import count_tokens

    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(TokenizerError, match="not found"):
        count_tokens([p], tmp_path / "nope")
    (tmp_path / "tok.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read"):
        count_tokens([p], tmp_path / "tok.json")


def test_missing_input_path(tmp_path):
    with pytest.raises(HybridLMError, match="not found"):
        run_filter([tmp_path / "nothing"], tmp_path / "out")


def test_partition_preserves_every_record(tmp_path):
    src = tmp_path / "src.jsonl"
    recs = [{"text": f"doc {i}", "i": i} for i in range(23)] + [{"other": "no text", "i": 23}]
    src.write_text("\n".join(json.dumps(r) for r in recs) + "\n{bad\n")
    rep = partition([src], tmp_path / "parts", 4, compress=True)
    assert rep["input_records"] == 24 and rep["rejected_records"] == 1
    files = sorted((tmp_path / "parts").glob("part-*.jsonl.zst"))
    assert len(files) == 4
    back = [r for f in expand_inputs([tmp_path / "parts"]) for _, r in iter_records(f, None)]
    assert sorted(back, key=lambda r: r["i"]) == recs
    assert [p["records"] for p in rep["partitions"]] == [6, 6, 6, 6]

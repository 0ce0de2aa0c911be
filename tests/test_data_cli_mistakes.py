"""The data commands on a new user's mistakes: one `error:` line and exit 2, never a traceback; no bad value silently
accepted; output names and messages a person reads as meant."""

import json

import pytest
from cli_helpers import one_line_error, run_cli


def _docs(path, n=6, words=40):
    path.write_text("".join(json.dumps({"text": " ".join(f"word{i}x{j}" for j in range(words))}) + "\n"
                            for i in range(n)))
    return path


@pytest.mark.parametrize("content", ["", 'not json\n{"text": 5}\n'])
def test_dedup_of_an_empty_or_all_invalid_input_reports_zero_documents(tmp_path, capsys, content):
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    res = run_cli(capsys, "data", "dedup", src, "-o", tmp_path / "out", "-j", "1")
    assert res.code == 0, res
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["input_documents"] == 0 and report["kept_documents"] == 0
    assert report["rejected_records"] == (2 if content else 0)
    if content:
        assert "2 input records rejected" in res.err and "malformed JSON: Expecting value at column 1" in res.err


def test_filter_config_file_mistakes_are_one_line(tmp_path, capsys):
    src = _docs(tmp_path / "in.jsonl")
    cases = {
        "missing.json": (None, "no such file"),
        "broken.json": ("{{{", "not valid JSON"),
        "list.json": ("[1, 2]", "expected a JSON object"),
        "type.json": ('{"min_length": "abc"}', "min_length must be a whole number"),
        "unknown.json": ('{"min_lenght": 3}', "unknown filter settings"),
        "fraction.json": ('{"pattern_max_fractions": {"<": 2}}', "must be in [0, 1]"),
    }
    for name, (text, why) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        one_line_error(capsys, "data", "filter", src, "-o", tmp_path / f"o-{name}", "--config", tmp_path / name,
                       contains=(why,))


@pytest.mark.parametrize(
    "args, why",
    [
        (["--max-numeric", "-1"], "--max-numeric: max_fraction_numerical must be in [0, 1], got -1.0"),
        (["--max-non-alnum", "1.5"], "--max-non-alnum"),
        (["--min-length", "-100"], "--min-length: min_length must be >= 0, got -100"),
        (["--min-mean-word-length", "9", "--max-mean-word-length", "4"], "is above max_mean_word_length"),
        (["--repeat-run-length", "0"], "repeat_run_length must be >= 1"),
        (["--workers", "-2"], "--workers"),
        (["-j", "0"], "-j"),
    ],
)
def test_filter_refuses_bad_thresholds(tmp_path, capsys, args, why):
    src = _docs(tmp_path / "in.jsonl")
    one_line_error(capsys, "data", "filter", src, "-o", tmp_path / "out", *args, contains=(why,))
    assert not (tmp_path / "out" / "report.json").exists()


def test_python_api_checks_the_same_values():
    from hybridlm.data.engine import run_shards
    from hybridlm.data.errors import DataError
    from hybridlm.data.filters import FilterConfig
    from hybridlm.data.synth import generate_corpus

    with pytest.raises(DataError, match="max_fraction_numerical"):
        FilterConfig(max_fraction_numerical=float("nan"))
    with pytest.raises(DataError, match="workers"):
        run_shards(dict, [], None, workers=-2)
    with pytest.raises(DataError, match="n-web"):
        generate_corpus("unused", n_web=-5)


def test_synth_and_dedup_refuse_negative_counts(tmp_path, capsys):
    one_line_error(capsys, "data", "synth", "-o", tmp_path / "s", "--n-web", "-5", contains=("--n-web", "-5"))
    assert not (tmp_path / "s").exists()
    src = _docs(tmp_path / "in.jsonl")
    one_line_error(capsys, "data", "dedup", src, "-o", tmp_path / "d", "--workers", "-2", contains=("--workers",))


def test_malformed_json_reasons_read_as_english(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "unterminated\n{"text": 1}x\n' + json.dumps({"text": "fine " * 30}) + "\n")
    res = run_cli(capsys, "data", "filter", src, "-o", tmp_path / "out", "-j", "1")
    assert res.code == 0, res
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "out" / "rejects").glob("*.jsonl").__next__()
               .read_text().splitlines()]
    assert reasons == ["malformed JSON: Invalid control character at column 23",
                       "malformed JSON: Extra data at column 12"]
    assert not any(" at at " in r for r in reasons)
    assert "2 input records rejected" in res.err


def test_counts_have_the_right_noun(tmp_path, capsys):
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps({"text": "hello world " * 20}) + "\n")
    res = run_cli(capsys, "data", "train-tokenizer", src, "-o", tmp_path / "tok", "--vocab-size", "300")
    assert res.code == 0, res
    assert "trained on 1 document:" in res.out
    res = run_cli(capsys, "data", "pack", src, "-o", tmp_path / "packed", "-t", tmp_path / "tok")
    assert res.code == 0, res
    assert "1 document, " in res.out and "in 1 shard" in res.out and "documents" not in res.out


def test_a_stage_output_passes_its_sources_on(tmp_path, capsys):
    """filter -> dedup keeps the source names: kept/web/web.jsonl, not kept/kept/web/web.jsonl under 'kept'."""
    _docs(tmp_path / "web.jsonl", n=8)
    _docs(tmp_path / "hq.jsonl", n=3)
    res = run_cli(capsys, "data", "filter", tmp_path / "web.jsonl", tmp_path / "hq.jsonl", "-o", tmp_path / "f",
                  "-j", "1", "--max-numeric", "1")
    assert res.code == 0, res
    for given, out in ((tmp_path / "f" / "kept", "d1"), (tmp_path / "f", "d2")):
        res = run_cli(capsys, "data", "dedup", given, "-o", tmp_path / out, "-j", "1")
        assert res.code == 0, res
        written = sorted(p.relative_to(tmp_path / out / "kept").as_posix()
                         for p in (tmp_path / out / "kept").rglob("*.jsonl"))
        assert written == ["hq/hq.jsonl", "web/web.jsonl"]
        report = json.loads((tmp_path / out / "report.json").read_text())
        assert set(report["per_source"]) == {"web", "hq"} and report["input_documents"] == 11

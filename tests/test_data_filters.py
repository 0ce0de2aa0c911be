"""Zyda-1 filter semantics on crafted documents, the filter stage's report, the synthetic corpus."""

import json

import pytest

from hybridlm.data.filters import FilterConfig, ZydaFilters, run_filter
from hybridlm.data.synth import JUNK_KINDS, generate_corpus

CLEAN = "The river runs past the old mill and the town. " * 4  # 188 chars, mean word length ~3.8


def check(text, **cfg):
    return ZydaFilters(FilterConfig(**cfg)).check(text)


def test_clean_document_passes():
    assert check(CLEAN) is None


def test_min_length_counts_after_collapsing_runs():
    short = "Words and more words here. " * 3  # 81 chars
    assert check(short) == "min_length"
    assert check(short, min_length=50) is None
    # 60 dashes collapse to one: the padded text is long but its collapsed form is not
    padded = short + "-" * 60
    assert len(padded) >= 100 and check(padded) == "min_length"
    # 9 dashes are below the run threshold of 10 and stay
    assert ZydaFilters().collapse("a" + "-" * 9 + "b") == "a" + "-" * 9 + "b"
    assert ZydaFilters().collapse("a" + "-" * 10 + "b" + " " * 40 + "c" + " " * 39) == "a-b c" + " " * 39


def test_mean_word_length_splits_on_separators_and_counts_empty_pieces():
    f = ZydaFilters()
    # "ab-cd" -> pieces ab, cd ; "a..b" -> a, "", b
    assert f.features("ab-cd")["mean_word_length"] == 2.0
    assert f.features("a..b")["mean_word_length"] == pytest.approx(2 / 3)
    long_words = " ".join(["abcdefghijklmn"] * 10)  # 14 chars each
    assert check(long_words, min_length=10) == "mean_word_length"
    assert check(long_words, min_length=10, max_mean_word_length=14) is None
    assert check("a b c d e f g h i j " * 10) == "mean_word_length"  # mean 1


def test_fraction_thresholds_are_inclusive_maxima():
    body = "x" * 70 + "#" * 30  # exactly 0.3 non-alphanumeric: kept (remove only if > 0.3)
    assert ZydaFilters().features(body)["fraction_non_alphanumeric"] == pytest.approx(0.3)
    assert check(body, max_mean_word_length=200) is None
    assert check("x" * 69 + "#" * 31, max_mean_word_length=200) == "fraction_non_alphanumeric"
    assert check("x" * 80 + "1" * 20, max_mean_word_length=200) is None
    assert check("x" * 79 + "1" * 21, max_mean_word_length=200) == "fraction_numerical"


def test_repeated_character_runs():
    doc = CLEAN + " ".join(["zzzzzzz"] * 51)  # 51 runs of 7 identical word characters
    assert check(doc) == "repeated_characters"
    assert check(CLEAN + " ".join(["zzzzzz"] * 51)) is None  # runs of 6 do not count
    assert check(doc, max_repeated_substrings=51) is None


def test_pattern_counts_and_fractions():
    assert check(CLEAN + "lorem ipsum " * 2) is None
    assert check(CLEAN + "lorem ipsum " * 3) == "count:lorem ipsum"
    assert check(CLEAN + "<?xml version= <?xml version=") == "count:<?xml version="
    # https:// more than 0.002 of the collapsed length (1 per 500 chars)
    assert check(CLEAN + " https://a.b") == "fraction:https://"
    assert check(CLEAN * 3 + " https://a.b") is None
    cfg = {"pattern_max_counts": {}, "pattern_max_fractions": {}}
    assert check(CLEAN + "lorem ipsum " * 3 + " https://a.b", **cfg) is None


def test_word_lists():
    from hybridlm.data.filters import WordList

    wl = WordList("bad", ["grue", "zorp"], max_count=2)
    assert check(CLEAN + " grue zorp", word_lists=[wl]) is None
    assert check(CLEAN + " grue zorp grue", word_lists=[wl]) == "wordlist_count:bad"


def test_synth_is_deterministic_and_junk_is_caught(tmp_path):
    m1 = generate_corpus(tmp_path / "a", seed=3, n_web=400, n_hq=20, n_eval=10)
    generate_corpus(tmp_path / "b", seed=3, n_web=400, n_hq=20, n_eval=10)
    for name in ("web.jsonl", "web_pairs.jsonl", "hq.jsonl", "eval.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    recs = [json.loads(x) for x in open(tmp_path / "a" / "web.jsonl")]
    assert len(recs) == m1["web_documents"] == 400
    f = ZydaFilters()
    for r in recs:
        assert f.check(r["text"]) == r.get("junk"), r["id"]
    assert {r["junk"] for r in recs if "junk" in r} == set(JUNK_KINDS)


def test_filter_stage_report_and_outputs(tmp_path):
    generate_corpus(tmp_path / "c", seed=1, n_web=300, n_hq=0, n_eval=0)
    rep = run_filter([tmp_path / "c" / "web.jsonl"], tmp_path / "out", workers=1)
    recs = [json.loads(x) for x in open(tmp_path / "c" / "web.jsonl")]
    n_junk = sum("junk" in r for r in recs)
    assert rep["input_documents"] == 300
    assert rep["removed_documents"] == n_junk == sum(rep["removed_by_filter"].values())
    assert rep["kept_documents"] + rep["removed_documents"] == rep["input_documents"]
    kept = [json.loads(x) for x in open(tmp_path / "out" / "kept" / "web" / "web.jsonl")]
    removed = [json.loads(x) for x in open(tmp_path / "out" / "removed" / "web" / "web.jsonl")]
    assert len(kept) == rep["kept_documents"] and len(removed) == n_junk
    assert all(r["filter_reason"] == r["junk"] for r in removed)
    assert set(kept[0]) >= {"id", "text", "kind"}  # records keep all their fields
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["removed_by_filter"] == rep["removed_by_filter"]

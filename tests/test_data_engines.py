"""The multi-process paths: local worker processes and datatrove's LocalPipelineExecutor give the same output as
one process; the CLI wires everything together."""

import json

import pytest
from typer.testing import CliRunner

from hybridlm.data.cli import app
from hybridlm.data.dedup import DedupConfig, run_dedup
from hybridlm.data.filters import run_filter
from hybridlm.data.partition import partition
from hybridlm.data.synth import generate_corpus


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("eng")
    generate_corpus(d / "c", seed=4, n_web=400, n_hq=0, n_eval=0)
    partition([d / "c" / "web.jsonl"], d / "parts", 3)
    return d


def records(folder):
    return sorted(json.dumps(json.loads(x), sort_keys=True) for p in folder.rglob("*.jsonl") for x in open(p))


def test_filter_local_processes_and_datatrove_agree(parts, tmp_path):
    from hybridlm.data.dt_steps import run_filter_datatrove

    r1 = run_filter([parts / "parts"], tmp_path / "one", workers=1)
    r2 = run_filter([parts / "parts"], tmp_path / "two", workers=2)
    r3 = run_filter_datatrove([parts / "parts"], tmp_path / "dt", workers=2)
    for r in (r2, r3):
        assert r["removed_by_filter"] == r1["removed_by_filter"]
        assert r["kept_documents"] == r1["kept_documents"] and r["input_documents"] == 400
    assert (
        records(tmp_path / "one" / "kept")
        == records(tmp_path / "two" / "kept")
        == records(tmp_path / "dt" / "kept")
    )
    assert records(tmp_path / "one" / "removed") == records(tmp_path / "dt" / "removed")
    # resumable: a second local run does not redo finished shards
    kept = next((tmp_path / "one" / "kept").rglob("*.jsonl"))
    t = kept.stat().st_mtime_ns
    run_filter([parts / "parts"], tmp_path / "one", workers=1)
    assert kept.stat().st_mtime_ns == t


def test_dedup_datatrove_matches_local(parts, tmp_path):
    from hybridlm.data.dt_steps import run_dedup_datatrove

    cfg = DedupConfig(verify=True)
    local = run_dedup([parts / "parts"], tmp_path / "local", config=cfg, workers=2)
    dt = run_dedup_datatrove([parts / "parts"], tmp_path / "dt", config=cfg, workers=2)
    assert dt["removed_documents"] == local["removed_documents"] > 0
    assert records(tmp_path / "local" / "kept") == records(tmp_path / "dt" / "kept")
    strip = lambda f: sorted(json.loads(x)["id"] for p in f.rglob("*.jsonl") for x in open(p))  # noqa: E731
    assert strip(tmp_path / "local" / "removed") == strip(tmp_path / "dt" / "removed")


def test_cli_end_to_end(tmp_path):
    run = CliRunner().invoke
    r = run(app, ["synth", "-o", str(tmp_path / "s"), "--n-web", "150", "--n-hq", "40", "--n-eval", "10"])
    assert r.exit_code == 0, r.output
    r = run(app, ["filter", str(tmp_path / "s" / "web.jsonl"), "-o", str(tmp_path / "f"), "-j", "1"])
    assert r.exit_code == 0, r.output
    assert "min_length" in r.output
    r = run(
        app,
        [
            "dedup",
            str(tmp_path / "f" / "kept"),
            str(tmp_path / "s" / "hq.jsonl"),
            "-o",
            str(tmp_path / "d"),
            "--verify",
            "--rank",
            "hq",
            "--ngram",
            "5",
            "--bands",
            "16",
            "--rows",
            "8",
            "-j",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "d" / "report.json").read_text())
    assert rep["params"]["rank"] == ["hq", "kept"] and rep["params"]["ngram"] == 5
    assert rep["kept_documents"] + rep["removed_documents"] == rep["input_documents"]
    r = run(
        app,
        [
            "train-tokenizer",
            str(tmp_path / "s" / "hq.jsonl"),
            "-o",
            str(tmp_path / "t"),
            "--vocab-size",
            "300",
        ],
    )
    assert r.exit_code == 0, r.output
    r = run(app, ["count", str(tmp_path / "s" / "hq.jsonl"), "-t", str(tmp_path / "t"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["documents"] == 40
    r = run(
        app, ["pack", str(tmp_path / "s" / "hq.jsonl"), "-o", str(tmp_path / "p"), "-t", str(tmp_path / "t")]
    )
    assert r.exit_code == 0 and (tmp_path / "p" / "index.json").exists()
    r = run(app, ["dedup", str(tmp_path / "s"), "-o", str(tmp_path / "x"), "--rank", "nope"])
    assert "unknown source" in str(r.exception)

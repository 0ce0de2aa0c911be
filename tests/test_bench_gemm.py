"""bench gemm: shapes, candidate sizes, suggestions, and a real (tiny) CPU sweep through the CLI."""

import json

import pytest
from typer.testing import CliRunner

from hybridlm.bench.cli import app
from hybridlm.bench.gemm import (
    Gemm,
    alignment,
    gemm_sweep,
    head_dim_candidates,
    hidden_candidates,
    layer_gemms,
    suggest,
    vocab_candidates,
)
from hybridlm.errors import HybridLMError

TINY = dict(hidden=64, ffn=256, heads=4, vocab=100, tokens=16, warmup=0, trials=1)


def test_shapes_and_flops():
    assert Gemm("x", m=3, k=5, n=7, batch=2).flops == 2 * 2 * 3 * 5 * 7
    shapes = {g.name: (g.batch, g.m, g.k, g.n) for g in layer_gemms(tokens=8, hidden=64, ffn=256, heads=4)}
    assert shapes == {
        "qkv": (1, 8, 64, 192),
        "attn_out": (1, 8, 64, 64),
        "ffn_up": (1, 8, 64, 256),
        "ffn_down": (1, 8, 256, 64),
        "attn_scores": (4, 8, 16, 8),
        "attn_values": (4, 8, 8, 16),
    }


def test_candidates():
    assert [alignment(x) for x in (1024, 960, 976, 1000, 1001)] == [128, 64, 16, 8, 1]
    hs = hidden_candidates(1024, heads=16, window=0.1)
    assert hs == list(range(928, 1121, 16)) and 1024 in hs
    assert 1000 in hidden_candidates(1000, heads=8, window=0.05, step=64)  # the request is always there
    assert head_dim_candidates(2560, 32) == [40, 64, 80, 128, 160]
    assert vocab_candidates(50277) == [50277, 50280, 50288, 50304, 50432]


def _rec(sweep, gemm, value, metric_value):
    key = {"hidden": "hidden", "head_dim": "head_dim", "vocab": "vocab"}[sweep]
    metric = "useful_tflops" if sweep == "vocab" else "tflops"
    return {"sweep": sweep, "gemm": gemm, key: value, metric: metric_value, "align": alignment(value)}


def test_suggest_picks_fastest_but_only_beyond_noise():
    records = [
        _rec("hidden", "total", 1000, 1.0),
        _rec("hidden", "total", 1024, 1.5),
        _rec("hidden", "qkv", 1008, 9.0),  # single GEMMs do not count, only the layer total
        _rec("vocab", "logits", 50277, 0.5),
        _rec("vocab", "logits", 50304, 0.9),
    ]
    tips = suggest(records, hidden=1000, heads=8, vocab=50277, min_gain=0.03)
    assert set(tips) == {"hidden", "vocab"}
    assert tips["hidden"]["best"] == 1024 and tips["hidden"]["speedup"] == pytest.approx(1.5)
    assert tips["vocab"]["best"] == 50304 and tips["vocab"]["best_align"] == 128


def test_suggest_keeps_request_within_noise():
    records = [_rec("head_dim", "total", 64, 2.0), _rec("head_dim", "total", 128, 2.02)]  # +1%: noise
    tips = suggest(records, hidden=1024, heads=16, vocab=1)
    assert tips["head_dim"]["best"] == 64 and set(tips) == {"head_dim"}


def test_sweep_records_are_consistent():
    records = gemm_sweep(dtype="auto", device="cpu", window=0.25, **TINY)
    assert {r["sweep"] for r in records} == {"hidden", "head_dim", "vocab"}
    for r in records:
        assert r["dtype"] == "float32" and r["device"] == "cpu" and r["time_s"] > 0
        assert r["tflops"] == pytest.approx(r["flops"] / r["time_s"] / 1e12)
        if r["gemm"] != "total":
            assert r["flops"] == 2 * r["batch"] * r["m"] * r["k"] * r["n"]
    h64 = [r for r in records if r["sweep"] == "hidden" and r["hidden"] == 64]
    total = next(r for r in h64 if r["gemm"] == "total")
    parts = [r for r in h64 if r["gemm"] != "total"]
    assert len(parts) == 6 and total["flops"] == sum(r["flops"] for r in parts)
    assert total["time_s"] == pytest.approx(sum(r["time_s"] for r in parts))
    vocab = [r for r in records if r["sweep"] == "vocab"]
    assert [r["vocab"] for r in vocab] == vocab_candidates(100)
    padded = vocab[-1]  # useful work counts the real vocab only
    assert padded["useful_tflops"] == pytest.approx(padded["tflops"] * 100 / padded["vocab"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden=66), "not divisible by --heads"),
        (dict(tokens=0), "--tokens must be a positive"),
        (dict(window=1.5), "--window"),
        (dict(dtype="bfloat16"), "on CPU"),
        (dict(sweeps=("depth",)), "unknown sweep"),
    ],
)
def test_bad_input(overrides, message):
    with pytest.raises(HybridLMError, match=message):
        gemm_sweep(**{**TINY, "device": "cpu", **overrides})


def test_cli_runs_on_cpu(tmp_path):
    out, csv, plot = tmp_path / "g.json", tmp_path / "g.csv", tmp_path / "g.png"
    args = ["gemm", "--hidden", "64", "--ffn", "256", "--heads", "4", "--vocab", "100", "--tokens", "16"]
    args += ["--warmup", "0", "--trials", "1", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--json", str(out), "--csv", str(csv), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert any(r["gemm"] == "total" and r["hidden"] == 64 for r in records)
    assert "hidden: requested 64" in result.output and "vocab: requested 100" in result.output
    assert len(csv.read_text().splitlines()) == len(records) + 1 and plot.stat().st_size > 0

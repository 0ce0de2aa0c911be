"""bench compare: records of two runs are matched on their non-measured fields."""

import json

import pytest
from typer.testing import CliRunner

from hybridlm.bench.cli import app
from hybridlm.bench.compare import compare_records
from hybridlm.errors import HybridLMError


def _comms(op, nbytes, t, backend="gloo"):
    return {"op": op, "world_size": 2, "bytes": nbytes, "backend": backend, "time_s": t,
            "busbw_gbps": nbytes / t / 1e9, "wrong": 0, "trials": 20}  # fmt: skip


def test_compare_matches_and_computes_speedup():
    a = [_comms("all_reduce", 1024, 2e-3), _comms("all_reduce", 4096, 4e-3), _comms("broadcast", 1024, 1e-3)]
    b = [_comms("all_reduce", 4096, 1e-3, backend="nccl"), _comms("all_reduce", 1024, 4e-3, backend="nccl")]
    rows, unmatched = compare_records(a, b)
    assert [(r["bytes"], r["speedup"]) for r in rows] == [(1024, 0.5), (4096, 4.0)]
    assert unmatched == 1 and rows[0]["busbw_gbps_b"] == pytest.approx(1024 / 4e-3 / 1e9)


def test_compare_blocks_style_records_and_cli(tmp_path):
    a = [{"block": "mamba2", "batch": 1, "seq_len": 512, "d_model": 256, "pass": "fwd", "time_s": 0.02,
          "flops": 1e9, "tflops": 0.05}]  # fmt: skip
    b = [{**a[0], "time_s": 0.01, "tflops": 0.1}]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "2.00" in result.output


def test_compare_unrelated_runs_is_an_error(tmp_path):
    with pytest.raises(HybridLMError, match="no record"):
        compare_records([_comms("all_reduce", 1024, 1.0)], [_comms("all_gather", 1024, 1.0)])
    (tmp_path / "x.json").write_text("{}")
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "x.json"), str(tmp_path / "x.json")])
    assert isinstance(result.exception, HybridLMError)

"""bench comms: nccl-tests formulas, input checks, and real 2- and 4-rank gloo runs (incl. corruption)."""

import json

import pytest
from typer.testing import CliRunner

from hybridlm.bench.cli import app
from hybridlm.bench.comms import CommsConfig, parse_size, run_comms, size_scan
from hybridlm.bench.comms_math import OPS, algbw_gbps, buffer_numels, bus_factor, busbw_gbps, valid_bytes
from hybridlm.errors import HybridLMError

RECORD_KEYS = {"op", "world_size", "bytes", "time_s", "algbw_gbps", "busbw_gbps", "wrong"}


# Hand-computed from nccl-tests doc/PERFORMANCE.md: busbw = algbw * factor.
@pytest.mark.parametrize(
    "op, n, factor",
    [
        ("all_reduce", 2, 1.0),  # 2(n-1)/n
        ("all_reduce", 4, 1.5),
        ("all_reduce", 8, 1.75),
        ("all_gather", 4, 0.75),  # (n-1)/n
        ("reduce_scatter", 8, 0.875),
        ("all_to_all", 2, 0.5),
        ("broadcast", 8, 1.0),
        ("pingpong", 2, 1.0),
        ("p2p_uni", 4, 1.0),
        ("p2p_bidir", 8, 1.0),
    ],
)
def test_bus_factor_matches_nccl_tests(op, n, factor):
    assert bus_factor(op, n) == pytest.approx(factor)


def test_bandwidths_hand_computed():
    # 256 MiB all_reduce on 8 ranks in 10 ms: algbw = 268435456 / 0.01 / 1e9 = 26.8435456 GB/s,
    # busbw = 26.8435456 * 14/8 = 46.9762048 GB/s.
    assert algbw_gbps(268435456, 0.01) == pytest.approx(26.8435456)
    assert busbw_gbps("all_reduce", 268435456, 0.01, 8) == pytest.approx(46.9762048)
    # all_gather: S is the gathered size; 1 GB in 0.5 s on 4 ranks -> algbw 2, busbw 1.5.
    assert busbw_gbps("all_gather", 10**9, 0.5, 4) == pytest.approx(1.5)
    assert busbw_gbps("broadcast", 10**9, 0.5, 4) == pytest.approx(2.0)


def test_buffer_sizes_follow_nccl_tests_size_convention():
    # S = 4096 bytes of float32 on 4 ranks
    assert buffer_numels("all_gather", 4096, 4, 4) == (256, 1024)  # S is the full gathered output
    assert buffer_numels("reduce_scatter", 4096, 4, 4) == (1024, 256)  # S is the full input
    assert buffer_numels("all_reduce", 4096, 4, 4) == (1024, 1024)
    assert buffer_numels("all_to_all", 4096, 4, 4) == (1024, 1024)


def test_size_rules():
    assert valid_bytes("all_gather", 1000, 3, 4, strict=False) == 996  # a scan rounds down
    with pytest.raises(HybridLMError, match="multiple of 12"):
        valid_bytes("all_gather", 1000, 3, 4, strict=True)
    with pytest.raises(HybridLMError, match="positive"):
        valid_bytes("all_reduce", 0, 2, 4, strict=False)
    assert parse_size("4K") == 4096 and parse_size("1m") == 2**20 and parse_size("512") == 512
    assert size_scan(1024, 16384, 4) == [1024, 4096, 16384]
    with pytest.raises(HybridLMError):
        parse_size("four")


@pytest.mark.parametrize(
    "config, nproc, message",
    [
        (CommsConfig(sizes=[1024]), 1, "between 2 and"),
        (CommsConfig(ops=["allreduce"], sizes=[1024]), 2, "unknown op"),
        (CommsConfig(sizes=[-4]), 2, "positive"),
        (CommsConfig(ops=["all_to_all"], sizes=[1028], exact=True), 2, "multiple of 8"),
        (CommsConfig(sizes=[1024], dtype="int8"), 2, "unknown dtype"),
    ],
)
def test_bad_input_is_one_clear_error(config, nproc, message):
    with pytest.raises(HybridLMError, match=message):
        run_comms(config, nproc)


def _check_records(records, world_size, sizes):
    assert {(r["op"], r["bytes"]) for r in records} == {(op, s) for op in OPS for s in sizes}
    for r in records:
        assert RECORD_KEYS <= r.keys()
        assert r["world_size"] == world_size and r["backend"] == "gloo"
        assert r["time_min_s"] <= r["time_s"] <= r["time_p99_s"]
        assert r["algbw_gbps"] == pytest.approx(r["bytes"] / r["time_s"] / 1e9)
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * bus_factor(r["op"], world_size))


def test_cli_two_ranks_clean_run(tmp_path):
    out, plot = tmp_path / "comms.json", tmp_path / "busbw.png"
    args = ["comms", "--nproc", "2", "-b", "1K", "-e", "16K", "-f", "4", "--warmup", "1", "--trials", "3"]
    result = CliRunner().invoke(app, [*args, "--json", str(out), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    _check_records(records, 2, [1024, 4096, 16384])
    assert all(r["wrong"] == 0 for r in records)
    assert "busbw GB/s" in result.output and plot.stat().st_size > 0


def test_four_ranks_clean_run():
    records = run_comms(CommsConfig(sizes=[4096], warmup=1, trials=2, exact=True), nproc=4)
    _check_records(records, 4, [4096])
    assert all(r["wrong"] == 0 for r in records)


def test_corrupted_input_is_detected(tmp_path):
    """Rank 0 adds 1 to one input element; every op must then report wrong elements, and the CLI fails."""
    out = tmp_path / "bad.json"
    args = ["comms", "--nproc", "2", "--size", "2K", "--warmup", "0", "--trials", "2", "--corrupt-rank", "0"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 1
    records = json.loads(out.read_text())
    assert {r["op"] for r in records} == set(OPS)
    assert all(r["wrong"] > 0 for r in records), [(r["op"], r["wrong"]) for r in records]

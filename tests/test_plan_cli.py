"""`hybridlm plan` and `hybridlm plan compare` through typer's CliRunner."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hybridlm import HybridLM, ModelConfig
from hybridlm.cli import app
from hybridlm.errors import ConfigError
from hybridlm.plan import flops, params

runner = CliRunner()


def test_plan_json_has_the_stable_keys():
    res = runner.invoke(app, ["plan", "zamba2-2.7b", "--seq-len", "4096", "--batch", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    cfg = ModelConfig.from_preset("zamba2-2.7b")
    assert out["params"]["total"] == 2662214560 == params(cfg).total
    assert out["params"]["active"] == out["params"]["total"]
    assert out["flops"]["forward_per_token"] == flops(cfg, 4096, batch=2).forward_per_token
    assert out["flops"]["train_per_token"] == 3 * out["flops"]["forward_per_token"]
    kv = out["memory"]["inference_cache_by_kind"]["kv"]
    assert kv == 9 * 2 * 2 * 32 * 160 * 4096 * 2  # 9 shared-attention calls, K and V, 32 heads of 160, bf16
    res = runner.invoke(
        app, ["plan", "zamba2-tiny", "--seq-len", "40", "--batch", "3", "--json", "--dtype-bytes", "4"]
    )
    cache = HybridLM(ModelConfig.from_preset("zamba2-tiny")).allocate_cache(3, 40)
    assert json.loads(res.stdout)["memory"]["inference_cache_bytes"] == cache.nbytes


def test_plan_overrides_reach_the_config():
    res = runner.invoke(
        app,
        [
            "plan",
            "mamba2-tiny",
            "--d-model",
            "128",
            "--layers",
            "m m a f",
            "--set",
            "mamba2.d_state=32",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    cfg = ModelConfig.from_preset("mamba2-tiny").replace(
        d_model=128, layers="m m a f", **{"mamba2.d_state": 32}
    )
    assert out["params"]["total"] == params(cfg).total
    assert out["model"]["d_model"] == 128 and out["model"]["n_layers"] == 3


def test_plan_tables_and_budget():
    res = runner.invoke(
        app,
        [
            "plan",
            "blackmamba-2.8b",
            "--gpus",
            "8",
            "--zero",
            "2",
            "--days",
            "10",
            "--tokens",
            "3e11",
            "--recompute",
            "selective",
        ],
    )
    assert res.exit_code == 0, res.output
    for text in ("Parameters", "active per token", "FLOPs per token", "Memory", "ZeRO 2", "Budget", "sizing"):
        assert text in res.stdout


def test_plan_moe_active_and_run_flops_in_json():
    res = runner.invoke(app, ["plan", "jamba-v0.1", "--seq-len", "8192", "--tokens", "1e9", "--json"])
    out = json.loads(res.stdout)
    assert out["params"]["active"] < out["params"]["total"]
    assert out["flops"]["per_run"]["train"] == pytest.approx(out["flops"]["train_per_token"] * 1e9)


def test_compare_table_json_and_plot(tmp_path):
    png = tmp_path / "cmp.png"
    res = runner.invoke(
        app, ["plan", "compare", "zamba2-2.7b", "llama-2-7b", "mamba2-2.7b", "--plot", str(png)]
    )
    assert res.exit_code == 0, res.output
    assert "zamba2-2.7b" in res.stdout and "llama-2-7b" in res.stdout and "inference cache" in res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(app, ["plan", "compare", "zamba2-tiny", "mamba-tiny", "--json"])
    out = json.loads(res.stdout)
    assert [p["model"]["name"] for p in out] == ["zamba2-tiny", "mamba-tiny"]


@pytest.mark.parametrize(
    "args,msg",
    [
        (["plan", "no-such-model"], "is not a model: no preset"),
        (["plan", "zamba2-tiny", "--d-model", "-4"], "d_model must be >= 1"),
        (["plan", "zamba2-tiny", "--seq-len", "-1"], "seq_len"),
        (["plan", "zamba2-tiny", "--gpus", "6", "--tp", "4"], "multiple of tp"),
        (["plan", "zamba2-tiny", "--set", "oops"], "KEY=VALUE"),
        (["plan", "compare"], "at least one"),
        (["plan", "zamba2-tiny", "--plot", "x.png"], "--plot"),
    ],
)
def test_bad_input_is_a_config_error(args, msg):
    res = runner.invoke(app, args)
    assert isinstance(res.exception, ConfigError) and msg in str(res.exception)


def test_entry_point_prints_one_line_and_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "hybridlm", "plan", "zamba2-tiny", "--zero", "5"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "zero must be 0, 1, 2 or 3" in proc.stderr

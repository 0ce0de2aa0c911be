"""`hybridlm train` / `hybridlm anneal` commands and throughput/MFU reporting."""

import json

import pytest
import yaml
from train_helpers import tiny_config
from typer.testing import CliRunner

from hybridlm.cli import app
from hybridlm.train import run_training
from hybridlm.train.throughput import Throughput, train_flops_per_token

runner = CliRunner()


def test_example_config_prints_and_runs_with_overrides(tmp_path):
    res = runner.invoke(app, ["train", "--example-config"])
    assert res.exit_code == 0 and "train:" in res.output and "checkpoint_every" in res.output
    cfg = tmp_path / "run.yaml"
    cfg.write_text(res.output)
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "train",
            str(cfg),
            "-o",
            str(out),
            "--train.steps",
            "2",
            "--data.seq_len",
            "16",
            "--train.batch_size=2",
            "--train.progress",
            "false",
            "--data.eval_batches",
            "1",
            "--train.plots",
            "false",
            "--train.export",
            "false",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["tokens"] == 2 * 2 * 16
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["steps"] == 2 and saved["data"]["seq_len"] == 16
    # anneal from it, with a run-config override passed through
    res = runner.invoke(
        app,
        [
            "anneal",
            "--from",
            str(out),
            "-o",
            str(tmp_path / "p2"),
            "--steps",
            "1",
            "--data",
            "synth://hq:1",
            "--train.progress",
            "false",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((tmp_path / "p2" / "config.yaml").read_text())["schedule"]["name"] == "anneal"


def test_cli_errors_are_one_line(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()))
    res = runner.invoke(app, ["train", str(cfg), "-o", str(tmp_path / "o"), "--train.steps", "-1"])
    assert res.exit_code != 0 and "steps must be >= 1" in str(res.exception)


def test_mfu_uses_the_planner_flops(tmp_path):
    fpt = train_flops_per_token(__import__("hybridlm").ModelConfig.from_preset("zamba2-tiny"), 32)
    assert fpt is not None and fpt > 0
    r = run_training(tiny_config(**{"train.steps": 3, "train.peak_flops": 1e9}), tmp_path)
    assert r["flops_per_token"] == fpt
    assert r["mfu"] == pytest.approx(r["tokens_per_s"] * fpt / 1e9, rel=0.05)
    m = Throughput(None, None)
    m.update(100)
    m.update(100)
    assert m.tokens_per_s > 0 and m.mfu is None

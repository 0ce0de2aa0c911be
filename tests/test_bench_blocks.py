"""bench blocks: records carry the planner's FLOPs (and the timed code runs exactly those), the CLI
runs on CPU with tiny sizes and writes JSON/CSV/PNG, bad input is one line, compare reads the JSON."""

import json

import pytest
import torch
from _plan_helpers import count_flops
from typer.testing import CliRunner

from hybridlm.bench.blocks import (
    BLOCKS,
    PASSES,
    BlockSweep,
    PassRunner,
    block_config,
    build_block,
    load_sweep,
    run_blocks,
)
from hybridlm.bench.cli import app
from hybridlm.config import ModelConfig
from hybridlm.errors import ConfigError, HybridLMError
from hybridlm.plan import sublayer_flops

TINY = ["--config", "zamba2-tiny", "--seq-len", "8", "--seq-len", "16", "--warmup", "0", "--trials", "1",
        "--threads", "1"]  # fmt: skip
REQUIRED = {"block", "batch", "seq_len", "d_model", "pass", "time_s", "flops", "tflops"}


@pytest.fixture(scope="module")
def records():
    sweep = BlockSweep(config="zamba2-tiny", seq_len=[16], batch=[2], warmup=0, trials=1, threads=[1])
    return run_blocks(sweep)


def test_record_flops_are_the_planners_for_every_block_and_pass(records):
    cfg = ModelConfig.from_preset("zamba2-tiny")
    assert {(r["block"], r["pass"]) for r in records} == {(b, p) for b in BLOCKS for p in PASSES}
    for r in records:
        assert REQUIRED <= set(r)
        f = sublayer_flops(block_config(cfg, r["block"]), BLOCKS[r["block"]], r["batch"], r["seq_len"], device="cpu")
        assert r["flops"] == {"fwd": f["fwd"], "bwd": f["bwd"], "fwd_bwd": f["fwd"] + f["bwd"]}[r["pass"]]
        assert r["flops"] > 0 and r["time_s"] > 0 and r["time_min_s"] <= r["time_s"] <= r["time_max_s"]
        assert r["tflops"] == pytest.approx(r["flops"] / r["time_s"] / 1e12)
        assert r["tokens_per_s"] == pytest.approx(2 * 16 / r["time_s"])
        assert r["mem_bytes"] >= 0 and r["device"] == "cpu" and r["dtype"] == "float32"


@pytest.mark.parametrize("block", list(BLOCKS))
def test_timed_code_runs_exactly_the_planners_flops(block):
    """FlopCounterMode over the very calls that are timed: the planner's count, nothing else."""
    cfg = block_config(ModelConfig.from_preset("zamba2-tiny"), block)
    planner = sublayer_flops(cfg, BLOCKS[block], 2, 24, device="cpu")
    module = build_block(cfg, block)
    for pass_, expected in (("fwd", planner["fwd"]), ("bwd", planner["bwd"]),
                            ("fwd_bwd", planner["fwd"] + planner["bwd"])):  # fmt: skip
        runner = PassRunner(module, 2 if block == "shared" else 1, 2, 24, pass_)
        runner.setup()
        assert count_flops(runner.fn)[0] == expected, pass_


def test_block_config_keeps_the_preset_and_sizes_missing_sections():
    cfg = ModelConfig.from_preset("zamba2-20m")
    m2 = block_config(cfg, "mamba2", 512)
    assert m2.d_model == 512 and m2.mamba2 == cfg.mamba2 and m2.tokens == ["m"]
    assert block_config(cfg, "attention", 512).attention_head_dim == 64  # no attention in zamba2-20m
    assert block_config(cfg, "mlp-gated").mlp.gated and not block_config(cfg, "mlp").mlp.gated
    assert block_config(cfg, "mlp", overrides={"mlp.activation": "silu"}).mlp.activation == "silu"
    with pytest.raises(ConfigError, match="block mamba2 at d_model=100: mamba2.headdim=64 must divide"):
        block_config(cfg, "mamba2", 100)


def test_cli_runs_on_cpu_and_writes_json_csv_png(tmp_path):
    out = [str(tmp_path / n) for n in ("b.json", "b.csv", "b.png")]
    args = ["blocks", *TINY, "--block", "mamba2", "--block", "attention", "--block", "shared",
            "--pass", "fwd", "--pass", "fwd_bwd"]  # fmt: skip
    args += ["--json", out[0], "--csv", out[1], "--plot", out[2]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mamba2" in result.output and "TFLOP/s" in result.output
    recs = json.loads((tmp_path / "b.json").read_text())
    assert len(recs) == 3 * 2 * 2 and all(REQUIRED <= set(r) for r in recs)
    assert (tmp_path / "b.csv").read_text().splitlines()[0].startswith("block,")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_file_and_flags(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("config: zamba2-tiny\nblock: mlp\nseq_len: [8, 16]\npass: fwd\nwarmup: 0\ntrials: 1\n"
                    "set: {mlp.activation: silu}\n")  # fmt: skip
    fields = load_sweep(path)
    assert fields["blocks"] == ["mlp"] and fields["seq_len"] == [8, 16] and fields["passes"] == ["fwd"]
    out = tmp_path / "s.json"
    result = CliRunner().invoke(app, ["blocks", "--sweep", str(path), "--seq-len", "4", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert [(r["block"], r["seq_len"], r["pass"]) for r in json.loads(out.read_text())] == [("mlp", 4, "fwd")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--block", "rnn"], "unknown block 'rnn'; allowed: attention"),
        (["--seq-len", "0"], "seq_len must be a positive integer, got 0"),
        (["--batch", "-2"], "batch must be a positive integer"),
        (["--pass", "both"], "unknown pass 'both'"),
        (["--d-model", "100", "--block", "mamba2"], "block mamba2 at d_model=100: mamba2.headdim"),
        (
            ["--d-model", "72", "--block", "attention", "--set", "attention.n_heads=5"],
            "must divide d_model=72",
        ),
        (["--dtype", "bfloat16"], "dtype bfloat16 on CPU is emulated and ~300x slower"),
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--dtype", "int8"], "cuda|int8"),
        (["--set", "mlp.activation"], "--set expects field=value"),
        (["--config", "no-such-model"], "is not a model: no preset"),
    ],
)
def test_bad_input_is_one_line(args, message):
    result = CliRunner().invoke(app, ["blocks", *TINY, *args])
    assert isinstance(result.exception, HybridLMError), result.output
    text = str(result.exception)
    assert "\n" not in text
    assert __import__("re").search(message, text), text


def test_compare_two_blocks_runs(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    base = ["blocks", *TINY, "--block", "mlp", "--pass", "fwd"]
    for path in (a, b):
        assert CliRunner().invoke(app, [*base, "--json", str(path)]).exit_code == 0
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "c.json").read_text())
    assert [r["seq_len"] for r in rows] == [8, 16] and all(r["speedup"] > 0 and "tflops_a" in r for r in rows)

"""bench decode: tree vs ring vs one device on 2 gloo ranks (one launch); tree's bytes per step do not grow
with the context and stay below ring's; input checks."""

import json

import pytest
from typer.testing import CliRunner

from hybridlm import ModelConfig
from hybridlm.bench.cli import app
from hybridlm.bench.decode import DecodeSweep, parse_tokens
from hybridlm.errors import HybridLMError
from hybridlm.kinds import KINDS


def test_tree_bytes_per_step_stay_flat_and_below_ring(tmp_path):
    out, png = tmp_path / "d.json", tmp_path / "d.png"
    res = CliRunner().invoke(app, ["decode", "--config", "zamba2-tiny", "--context", "64", "--context", "256",
                                   "--nproc", "2", "--steps", "2", "--json", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    records = {(r["mode"], r["context"]): r for r in json.loads(out.read_text())}
    assert set(records) == {(m, c) for m in ("tree", "ring", "single") for c in (64, 256)}
    cfg = ModelConfig.from_preset("zamba2-tiny")
    tree = sum(KINDS[t].call for t in cfg.tokens) * cfg.shared.n_heads * (cfg.shared_head_dim + 2) * 4
    assert records["tree", 64]["bytes_per_step"] == records["tree", 256]["bytes_per_step"] == tree
    for c in (64, 256):
        assert records["tree", c]["bytes_per_step"] < records["ring", c]["bytes_per_step"]
        assert records["single", c]["bytes_per_step"] == 0 and records["tree", c]["nproc"] == 2
    # ring sends the other rank its shard, K and V of every position it holds: at the last step (after 1 warmup
    # and 2 timed steps) the larger shard has ceil((256 + 3) / 2) positions
    per_token = 2 * sum(KINDS[t].call for t in cfg.tokens) * cfg.shared_kv_heads * cfg.shared_head_dim * 4
    assert records["ring", 256]["bytes_per_step"] == per_token * 130
    assert png.stat().st_size > 0


@pytest.mark.parametrize("fields, message", [
    ({"modes": ["star"]}, "unknown mode 'star'"),
    ({"nprocs": [1]}, "--nproc must be between 2 and 64"),
    ({"contexts": [2], "nprocs": [4]}, "at least one token per rank"),
    ({"steps": 0}, "--steps >= 1"),
    ({"config": "no-such-model"}, "no-such-model"),
])
def test_bad_sweeps_are_user_errors(fields, message):
    with pytest.raises(HybridLMError, match=message):
        DecodeSweep(**fields).validate()


def test_context_lengths_read_with_suffixes():
    assert [parse_tokens(t) for t in ("4096", "64k", "256K", "1M")] == [4096, 65536, 262144, 1048576]
    with pytest.raises(HybridLMError, match="context length"):
        parse_tokens("lots")

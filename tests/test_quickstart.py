"""The quickstart (every stage chained) on a shortened run: pretraining beats the unigram entropy by a wide
margin and annealing improves held-out loss on the high-quality part."""

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from hybridlm.cli import app
from hybridlm.errors import HybridLMError
from hybridlm.quickstart import run_quickstart


@pytest.mark.slow
def test_quickstart_learns_and_annealing_helps(tmp_path):
    s = run_quickstart(tmp_path / "qs", pretrain_steps=50, console=Console(quiet=True))
    on_disk = json.loads((tmp_path / "qs" / "summary.json").read_text())
    for key in ("unigram_entropy", "pretrain_final_loss", "anneal_eval_loss_before", "anneal_eval_loss_after"):
        assert on_disk[key] == pytest.approx(s[key])
    assert s["pretrain_final_loss"] < s["unigram_entropy"] - 0.4
    assert s["anneal_eval_loss_after"] < s["anneal_eval_loss_before"] - 0.2
    # the data stages did their jobs and their counts add up
    assert s["filter"]["kept"] < s["filter"]["input"]
    assert s["dedup"]["kept"] + s["dedup"]["removed"] == s["dedup"]["input"] == s["filter"]["kept"]
    assert (tmp_path / "qs" / "plan.json").is_file() and (tmp_path / "qs" / "anneal" / "final").is_dir()
    assert list((tmp_path / "qs" / "pretrain" / "plots").glob("*.png"))


def test_quickstart_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("precious")
    with pytest.raises(HybridLMError, match="not empty"):
        run_quickstart(tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "precious"


def test_quickstart_help():
    assert CliRunner().invoke(app, ["quickstart", "--help"]).exit_code == 0

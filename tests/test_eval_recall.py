"""The in-context recall suite: deterministic generators, their structure, scoring on hand-made answers, the
model runner against a plain forward pass, and `hybridlm eval recall`."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hybridlm import HybridLM, ModelConfig
from hybridlm.cli import app
from hybridlm.errors import HybridLMError
from hybridlm.eval.recall import TASKS, generate, score
from hybridlm.eval.recall.run import evaluate_recall, predict_answers
from hybridlm.eval.recall.tasks import FILLER, MARKER


@pytest.mark.parametrize("task", TASKS)
def test_generators_are_deterministic_per_example(task):
    a = generate(task, 64, 6, vocab=100, seed=3)
    b = generate(task, 64, 6, vocab=100, seed=3)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.answers, b.answers)
    part = generate(task, 64, 2, vocab=100, seed=3, start=4)  # example i does not depend on how many are drawn
    assert np.array_equal(part.tokens, a.tokens[4:])
    assert not np.array_equal(generate(task, 64, 6, vocab=100, seed=4).tokens, a.tokens)
    assert a.tokens.shape == (6, 64) and a.tokens.min() >= 0 and a.tokens.max() < 100


def test_mqar_structure():
    batch = generate("mqar", 128, 20, vocab=64, seed=0)
    n = 128 // 8
    for seq, answers in zip(batch.tokens, batch.answers, strict=True):
        keys, values = seq[0:2 * n:2], seq[1:2 * n:2]
        assert len(set(keys)) == n and keys.max() < 2 + 31 <= values.min()  # distinct keys; keys and values apart
        table = dict(zip(keys, values, strict=True))
        assert len(answers) == n
        assert sorted(seq[answers - 1]) == sorted(keys)  # every key is queried once
        assert all(table[seq[p - 1]] == seq[p] for p in answers)  # each query is followed by its value
        rest = np.ones(128, bool)
        rest[:2 * n], rest[answers], rest[answers - 1] = False, False, False
        assert (seq[rest] == FILLER).all()


def test_needle_and_copy_structure():
    needle = generate("needle", 100, 20, vocab=50, seed=1, needle_len=3)
    depths = []
    for seq, answers in zip(needle.tokens, needle.answers, strict=True):
        (first, last) = np.flatnonzero(seq == MARKER)
        assert last == 100 - 4 and list(answers) == [97, 98, 99]
        assert np.array_equal(seq[first + 1:first + 4], seq[answers])
        depths.append(first)
    assert len(set(depths)) > 10  # the needle moves through the haystack
    copy = generate("copy", 10, 3, vocab=50, seed=2)  # even length: one leading filler
    for seq, answers in zip(copy.tokens, copy.answers, strict=True):
        assert seq[0] == FILLER and seq[5] == MARKER and np.array_equal(seq[1:5], seq[6:]) and list(answers) == [6, 7,
                                                                                                               8, 9]
    odd = generate("copy", 9, 1, vocab=50, seed=2)
    assert odd.tokens[0, 4] == MARKER and np.array_equal(odd.tokens[0, :4], odd.tokens[0, 5:])


def test_labels_mark_only_the_answers():
    batch = generate("copy", 9, 2, vocab=20, seed=0)
    labels = batch.labels()
    assert ((labels != -100).sum(axis=1) == 4).all()
    assert np.array_equal(np.take_along_axis(labels, batch.answers, axis=1), batch.targets)


def test_scoring_on_hand_made_answers():
    targets = [[5, 6, 7], [8, 9, 10]]
    assert score(targets, [[5, 6, 7], [8, 9, 10]]) == {"accuracy": 1.0, "exact": 1.0, "examples": 2, "answers": 6}
    assert score(targets, [[5, 6, 0], [8, 9, 10]]) == {"accuracy": 5 / 6, "exact": 0.5, "examples": 2, "answers": 6}
    assert score(targets, [[0, 0, 0], [8, 0, 0]])["accuracy"] == pytest.approx(1 / 6)
    assert score(targets, [[0, 0, 0], [8, 0, 0]])["exact"] == 0.0
    with pytest.raises(HybridLMError, match="must match"):
        score(targets, [[5, 6, 7]])


def test_bad_settings_are_one_line_errors():
    with pytest.raises(HybridLMError, match="distinct keys"):
        generate("mqar", 256, 1, vocab=40)  # 32 pairs, 19 keys
    with pytest.raises(HybridLMError, match="unknown recall task"):
        generate("parity", 64, 1, vocab=40)
    with pytest.raises(HybridLMError, match="needs length"):
        generate("needle", 6, 1, vocab=40)


def test_predictions_are_the_argmax_of_a_full_forward():
    torch.manual_seed(0)
    model = HybridLM(ModelConfig.from_preset("zamba2-tiny")).eval()
    batch = generate("mqar", 48, 5, vocab=64, seed=0)
    got = predict_answers(model, batch.tokens, batch.answers, batch_size=2)
    with torch.no_grad():
        argmax = model(torch.from_numpy(batch.tokens)).logits[..., :model.config.vocab_size].argmax(-1).numpy()
    assert np.array_equal(got, np.take_along_axis(argmax, batch.answers - 1, axis=1))


class _Oracle(torch.nn.Module):
    """Reads the next token off its input: every answer right."""

    def __init__(self, vocab: int):
        super().__init__()
        self.config = ModelConfig(d_model=8, layers="f", vocab_size=vocab)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, logits_to_keep=0):
        nxt = torch.roll(ids, -1, dims=1)
        logits = torch.nn.functional.one_hot(nxt, self.config.vocab_size).float()
        return type("Out", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits})


def test_evaluate_recall_scores_a_perfect_model_perfectly():
    model = _Oracle(vocab=64)
    rows = evaluate_recall(model, TASKS, [32, 64], examples=4, seed=0)
    assert [(r["task"], r["length"]) for r in rows] == [(t, n) for t in TASKS for n in (32, 64)]
    assert all(r["accuracy"] == 1.0 and r["exact"] == 1.0 and r["examples"] == 4 for r in rows)


def test_cli_recall_writes_json_and_plot(tmp_path):
    out, png = tmp_path / "recall.json", tmp_path / "recall.png"
    res = CliRunner().invoke(app, ["eval", "recall", "mamba2-tiny", "--lengths", "16,32", "--examples", "3",
                                   "--json", str(out), "--plot", str(png), "--threads", "1"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [(r["task"], r["length"]) for r in data["results"]] == [(t, n) for t in TASKS for n in (16, 32)]
    assert all(0 <= r["accuracy"] <= 1 and r["examples"] == 3 for r in data["results"])
    assert data["vocab"] == 500 and png.stat().st_size > 10_000
    torch.manual_seed(0)
    model = HybridLM(ModelConfig.from_preset("mamba2-tiny")).eval()  # the CLI's random weights (seed 0)
    assert data["results"] == evaluate_recall(model, TASKS, [16, 32], examples=3, seed=0)


def test_cli_recall_mistakes_are_one_line():
    proc = subprocess.run([sys.executable, "-m", "hybridlm", "eval", "recall", "mamba2-tiny", "--vocab", "8",
                           "--lengths", "64"], capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "distinct keys" in lines[0], proc.stderr
    for args, message in ((["--tasks", "mqar,parity"], "unknown recall task"), (["--lengths", "16,x"], "integers")):
        res = CliRunner().invoke(app, ["eval", "recall", "mamba2-tiny", *args])
        assert res.exit_code != 0 and message in str(res.exception), (args, res.output)

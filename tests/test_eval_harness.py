"""lm-evaluation-harness: the `hybridlm` model against lm-eval's own `hf` model on the same checkpoint.

The checkpoints are tiny models that transformers loads (Llama, and Zamba2 for Mamba2 layers + shared attention),
trained for a few seconds on the test tasks' own text so that generation hits the stop strings and the metrics
are not all zero. The tasks are the local YAML + JSONL files in tests/eval_tasks (offline).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hybridlm import HybridLM, ModelConfig
from hybridlm.cli import app

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402

from hybridlm.eval.evaluate import go_offline, task_manager  # noqa: E402
from hybridlm.eval.harness import HybridLMEval  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASK_DIR = "tests/eval_tasks"  # the YAMLs name their data relative to the repository root
TASKS = ["hybridlm_tests"]  # the tag of the three tasks: multiple choice, rolling perplexity, generation
LR = 3e-3  # fitted enough to answer, soft enough that fp32 noise stays far below the 1e-4 bound
MAX_LENGTH = 64  # shorter than the longest rolling document: several windows
FAMILIES = {"llama": "transformer-tiny", "zamba2": "zamba2-tiny"}


def _texts() -> list[str]:
    rows = lambda name: [json.loads(x) for x in (REPO / TASK_DIR / name).read_text().splitlines()]  # noqa: E731
    texts = [r["question"] + r["choices"][r["label"]] for r in rows("choice.jsonl")]
    texts += [r["text"] for r in rows("rolling.jsonl")]
    texts += [f"Q: {r['question']}\nA: {r['answer']}." for r in rows("generate.jsonl")]
    return texts


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from hybridlm.data.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    (out / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts()))
    train_tokenizer([out / "corpus.jsonl"], out / "tok", vocab_size=320, min_frequency=1)
    return out / "tok"


def _checkpoint(preset: str, tok_dir: Path, out: Path, steps: int = 40) -> Path:
    """A tiny model fitted briefly to the task text, saved in transformers' layout with the tokenizer's ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    cfg = ModelConfig(**{**ModelConfig.from_preset(preset).to_dict(), "vocab_size": len(tok),
                         "pad_vocab_multiple": 1, "max_seq_len": MAX_LENGTH})
    torch.manual_seed(0)
    model = HybridLM(cfg)
    ids = []
    for t in _texts():
        ids += [tok.eos_token_id, *tok.encode(t)]
    data = torch.tensor(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 49, (8,), generator=gen)
        batch = torch.stack([data[s: s + 48] for s in starts])
        model(batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    config.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def checkpoints(tokenizer_dir, tmp_path_factory):
    """family -> checkpoint directory, each made on first use."""
    made = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = _checkpoint(FAMILIES[family], tokenizer_dir, tmp_path_factory.mktemp(family))
        return made[family]

    return get


def _evaluate(model: str, model_args: dict, batch_size: int) -> dict:
    go_offline()
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=TASKS, batch_size=batch_size,
                                   task_manager=task_manager(TASK_DIR, TASKS), bootstrap_iters=0, log_samples=True)


def _responses(results: dict) -> dict[str, list]:
    """task -> the model's raw answer to every request: loglikelihood, rolling loglikelihood or generated text."""
    out = {}
    for task, samples in results["samples"].items():
        answers = []
        for sample in sorted(samples, key=lambda s: s["doc_id"]):
            for resp in sample["resps"]:
                answers.append(resp[0][0] if isinstance(resp[0], tuple | list) else resp[0])
        out[task] = answers
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hybridlm_matches_lm_eval_hf_model(family, checkpoints, tokenizer_dir, monkeypatch):
    monkeypatch.chdir(REPO)
    checkpoint = checkpoints(family)
    args = {"pretrained": str(checkpoint), "tokenizer": str(tokenizer_dir), "max_length": MAX_LENGTH}
    ref = _evaluate("hf", {**args, "device": "cpu", "dtype": "float32"}, batch_size=1)  # unbatched reference
    ours = _evaluate("hybridlm", args, batch_size=4)  # batched, sorted by length, right-padded
    ref_resps, our_resps = _responses(ref), _responses(ours)
    assert set(ref_resps) == {"hybridlm_test_choice", "hybridlm_test_rolling", "hybridlm_test_generate"}
    for task, expected in ref_resps.items():
        got = our_resps[task]
        assert len(got) == len(expected) > 0
        if task == "hybridlm_test_generate":
            assert got == expected  # same greedy tokens, same cut at the stop strings
            assert any(text.strip() for text in got)
        else:
            worst = max(abs(a - b) for a, b in zip(got, expected, strict=True))
            assert worst <= 1e-4, (task, worst)
    for task, metrics in ref["results"].items():
        for key, value in metrics.items():
            if isinstance(value, float):
                assert ours["results"][task][key] == pytest.approx(value, rel=1e-5), (task, key)
    assert ref["results"]["hybridlm_test_choice"]["acc_norm,none"] > 0.25  # fitted: better than chance


def _generate(lm: HybridLMEval, contexts: list[str], **gen_kwargs) -> list[str]:
    return lm.generate_until([Instance("generate_until", {}, (c, {"do_sample": False, **gen_kwargs}), i)
                              for i, c in enumerate(contexts)], disable_tqdm=True)


def test_generate_until_cuts_at_stop_strings_and_batches_with_left_padding(tokenizer_dir, tmp_path):
    torch.set_num_threads(1)
    lm = HybridLMEval(pretrained="zamba2-tiny", tokenizer=str(tokenizer_dir), batch_size=3, max_length=64)
    contexts = ["Q: What is the capital of Zorland?\nA:", "The river", "Brim is an old", "Cats"]
    full = _generate(lm, contexts, until=[], max_gen_toks=12)
    assert all(full)
    stop = full[0][len(full[0]) // 2: len(full[0]) // 2 + 2]  # a piece from the middle of the first text
    cut = _generate(lm, contexts, until=[stop], max_gen_toks=12)
    assert cut == [t.split(stop)[0] for t in full] and cut[0] != full[0]
    one_by_one = [_generate(HybridLMEval(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=1,
                                         max_length=64), [c], until=[], max_gen_toks=12)[0] for c in contexts]
    assert one_by_one == full  # prompts of different lengths, left-padded in batches of 3
    prompts = [[1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert list(lm._generation_batches(prompts, ["greedy"] * 4)) == [[1, 0, 2], [3]]  # longest first
    lm.pad_prompts = False  # the alternative: one prompt length per batch, no padding
    assert sorted(map(sorted, lm._generation_batches(prompts, ["greedy"] * 4))) == [[0, 2, 3], [1]]


def test_loglikelihood_is_unchanged_by_batching(tokenizer_dir):
    """Right padding in a batch leaves every request's score as computed alone, for every kind of layer."""
    torch.set_num_threads(1)
    requests = [Instance("loglikelihood", {}, (c, x), i) for i, (c, x) in enumerate([
        ("The capital of Zorland is", " Brim"), ("A cat", " sat on the mat"), ("", "Rain falls"),
        ("Ships that sail the Tarn river carry glass and copper from the", " northern mines")])]
    for preset in ("mamba-tiny", "mamba2-tiny", "jamba-tiny", "zamba2-tiny"):
        alone = HybridLMEval(pretrained=preset, tokenizer=str(tokenizer_dir), batch_size=1, max_length=16)
        batched = HybridLMEval(pretrained=alone.model, tokenizer=alone.tokenizer, batch_size=4, max_length=16)
        a, b = alone.loglikelihood(requests, disable_tqdm=True), batched.loglikelihood(requests, disable_tqdm=True)
        assert [g for _, g in a] == [g for _, g in b]
        assert max(abs(x - y) for (x, _), (y, _) in zip(a, b, strict=True)) <= 1e-5, preset


def test_cli_eval_writes_the_python_api_results(checkpoints, tokenizer_dir, tmp_path, monkeypatch):
    from hybridlm.eval.evaluate import run_tasks

    monkeypatch.chdir(REPO)
    checkpoint = checkpoints("zamba2")
    out = tmp_path / "res.json"
    res = CliRunner().invoke(app, ["eval", str(checkpoint), "--tasks", "hybridlm_test_choice,hybridlm_test_rolling",
                                   "--include-path", TASK_DIR, "--tokenizer", str(tokenizer_dir), "--batch-size", "3",
                                   "--json", str(out), "--bootstrap-iters", "0"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    api = run_tasks(str(checkpoint), ["hybridlm_test_choice", "hybridlm_test_rolling"], tokenizer=tokenizer_dir,
                    include_path=TASK_DIR, batch_size=2)
    rows = {(r["task"], r["metric"]): r["value"] for r in data["metrics"]}
    assert rows[("hybridlm_test_choice", "acc")] == api["results"]["hybridlm_test_choice"]["acc,none"]
    assert rows[("hybridlm_test_rolling", "bits_per_byte")] == pytest.approx(
        api["results"]["hybridlm_test_rolling"]["bits_per_byte,none"], rel=1e-6)
    assert data["settings"]["batch_size"] == 3 and data["source"] == str(checkpoint)


def test_lm_eval_command_line_runs_the_hybridlm_model(checkpoints, tokenizer_dir, tmp_path):
    """`python -m hybridlm.eval` is lm-eval's own command line with `--model hybridlm` available."""
    checkpoint = checkpoints("llama")
    out = tmp_path / "lm_eval_out"
    proc = subprocess.run(
        [sys.executable, "-m", "hybridlm.eval", "--model", "hybridlm", "--model_args",
         f"pretrained={checkpoint},tokenizer={tokenizer_dir},max_length={MAX_LENGTH}",
         "--tasks", "hybridlm_test_choice", "--include_path", TASK_DIR, "--batch_size", "4",
         "--output_path", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result_file,) = out.rglob("results_*.json")
    acc = json.loads(result_file.read_text())["results"]["hybridlm_test_choice"]["acc,none"]
    ref = _evaluate("hybridlm", {"pretrained": str(checkpoint), "tokenizer": str(tokenizer_dir),
                                 "max_length": MAX_LENGTH}, batch_size=1)
    assert acc == ref["results"]["hybridlm_test_choice"]["acc,none"]


def test_user_mistakes_are_one_line(tokenizer_dir, monkeypatch):
    monkeypatch.chdir(REPO)
    runner = CliRunner()
    cases = [
        (["eval", "zamba2-tiny", "--tasks", "nope", "--include-path", TASK_DIR, "--tokenizer", str(tokenizer_dir)],
         "unknown lm-eval task(s): nope"),
        (["eval", "zamba2-tiny", "--tasks", "x", "--include-path", "nowhere", "--tokenizer", str(tokenizer_dir)],
         "no such directory"),
        (["eval", "zamba2-tiny", "--tasks", "hybridlm_test_choice"], "--tokenizer is needed"),
        # options first, and the explicit sub-command: both reach `eval run`
        (["eval", "--tasks", "x", "zamba2-tiny", "--include-path", "nowhere", "--tokenizer", str(tokenizer_dir)],
         "no such directory"),
        (["eval", "run", "zamba2-tiny", "--tasks", "x", "--include-path", "nowhere", "--tokenizer",
          str(tokenizer_dir)], "no such directory"),
    ]
    for args, message in cases:
        res = runner.invoke(app, args)
        assert res.exit_code != 0 and message in str(res.exception), (args, res.output)
    with pytest.raises(Exception, match="batch_size must be a positive integer"):
        HybridLMEval(pretrained="zamba2-tiny", tokenizer=str(tokenizer_dir), batch_size="auto")
    with pytest.raises(Exception, match="not supported by hybridlm"):
        lm = HybridLMEval(pretrained="zamba2-tiny", tokenizer=str(tokenizer_dir), max_length=32)
        _generate(lm, ["hi"], until=["."], max_gen_toks=4, repetition_penalty=1.2)

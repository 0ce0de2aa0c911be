"""Training and output mistakes a new user makes: output paths that are files, read-only or missing, bad numbers,
a parallel mode without torchrun, a corpus read many times over; and what a resume for more steps does to the LR."""

import json

import pytest
from cli_helpers import one_line_error, run_cli
from train_helpers import tiny_config

from hybridlm.errors import ConfigError

READ_ONLY = "/sys/kernel"  # an existing directory even root cannot write in (sysfs)


def _yaml(tmp_path, **overrides):
    import yaml

    path = tmp_path / "run.yaml"
    cfg = tiny_config(**{"train.steps": 2, "train.export": False, "train.plots": False, **overrides})
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_output_paths_that_cannot_be_used_are_one_line(tmp_path, capsys, monkeypatch):
    run = _yaml(tmp_path)
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, "train", run, "-o", tmp_path / "file", contains=("is a file",))
    one_line_error(capsys, "quickstart", "-o", tmp_path / "file", contains=("is a file",))
    one_line_error(capsys, "train", run, "-o", f"{READ_ONLY}/run", contains=("cannot create output directory",))
    one_line_error(capsys, "train", run, "-o", READ_ONLY, contains=("cannot write in output directory",))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "a " * 80}) + "\n")
    one_line_error(capsys, "data", "filter", src, "-o", f"{READ_ONLY}/f", contains=("cannot create",))
    # benchmark outputs are checked before anything is measured
    import hybridlm.bench.cli as bench_cli

    monkeypatch.setattr(bench_cli, "run_blocks", lambda *a, **k: pytest.fail("the benchmark ran"))
    for option in ("--json", "--csv", "--plot"):
        one_line_error(capsys, "bench", "blocks", "--block", "mlp", option, tmp_path / "no" / "dir" / "x",
                       contains=(option, "does not exist"))
    one_line_error(capsys, "bench", "blocks", "--block", "mlp", "--json", f"{READ_ONLY}/x.json",
                   contains=("cannot write in",))
    # a file the OS refuses anywhere else is one line too
    one_line_error(capsys, "plan", "compare", "zamba2-tiny", "mamba2-tiny", "--plot", f"{READ_ONLY}/x.png",
                   contains=(f"{READ_ONLY}/x.png",))


def test_bad_numbers_are_one_line(tmp_path, capsys):
    run = _yaml(tmp_path)
    one_line_error(capsys, "train", run, "-o", tmp_path / "a", "--train.threads", "-1", contains=("threads",))
    one_line_error(capsys, "train", run, "-o", tmp_path / "b", "--schedule.lr", ".nan",
                   contains=("schedule.lr: must be a finite number",))
    one_line_error(capsys, "train", run, "-o", tmp_path / "c", "--data.sources", "[{path: ''}]",
                   contains=("path is empty",))
    one_line_error(capsys, "quickstart", "-o", tmp_path / "q", "--threads", "-1", contains=("--threads",))
    one_line_error(capsys, "anneal", "--from", tmp_path, "-o", tmp_path / "d", "--steps", "0", contains=("--steps",))
    from hybridlm.train import anneal_config

    with pytest.raises(ConfigError, match="steps must be a whole number >= 1"):
        anneal_config(tmp_path, steps=0)


def test_a_parallel_mode_needs_torchrun(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for mode in ("ddp", "fsdp2"):
        one_line_error(capsys, "train", _yaml(tmp_path), "-o", tmp_path / mode, "--distributed.mode", mode,
                       contains=(f"distributed.mode {mode}", "torchrun"))
        assert not (tmp_path / mode / "checkpoints").exists()


def test_a_corpus_read_many_times_is_warned_about(tmp_path, capsys):
    from hybridlm.data.pack import pack
    from hybridlm.train.synthetic import synthetic_dir

    src = tmp_path / "small.jsonl"
    src.write_text("".join(json.dumps({"text": f"a short document number {i}"}) + "\n" for i in range(3)))
    index = pack([src], tmp_path / "small", synthetic_dir() / "tokenizer")
    run = _yaml(tmp_path, **{"data.sources": [{"path": str(tmp_path / "small")}], "data.seq_len": 16,
                             "data.eval_path": None, "train.steps": 6, "train.batch_size": 4})
    res = run_cli(capsys, "train", run, "-o", tmp_path / "out")
    assert res.code == 0, res
    epochs = 6 * 4 * 16 / index["tokens"]
    assert f"would be read {epochs:.1f} times over 6 steps" in " ".join(res.err.split())
    assert index["tokens"] < 6 * 4 * 16 / 4  # more than 4 epochs: the warning's threshold


def test_resume_keeps_the_schedule_unless_asked_to_replan(tmp_path, capsys):
    from hybridlm.train.config import RunConfig
    from hybridlm.train.schedules import lr_at

    run = _yaml(tmp_path, **{"train.steps": 6, "train.checkpoint_every": 3, "schedule.name": "cosine",
                             "schedule.warmup_steps": 1, "schedule.lr": 1e-2, "schedule.min_lr": 1e-3})
    for name in ("kept", "replanned"):
        assert run_cli(capsys, "train", run, "-o", tmp_path / name).code == 0
    base = RunConfig.from_yaml(run)
    res = run_cli(capsys, "train", run, "-o", tmp_path / "kept", "--resume", "--train.steps", "10")
    assert res.code == 0, res
    assert "the cosine LR schedule keeps its 6 steps" in " ".join(res.err.split())
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "kept" / "metrics.jsonl").open())}
    assert [lrs[s] for s in range(7, 11)] == [pytest.approx(1e-3)] * 4  # the schedule's end, no jump
    assert lrs[6] == pytest.approx(lr_at(5, base.schedule, 6))
    res = run_cli(capsys, "train", run, "-o", tmp_path / "replanned", "--resume", "--train.steps", "10",
                  "--replan-schedule")
    assert res.code == 0, res
    text = " ".join(res.err.split())
    assert "re-planned over 10 steps" in text and f"to {lr_at(6, base.schedule, 10):.3g}" in text
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "replanned" / "metrics.jsonl").open())}
    assert lrs[7] == pytest.approx(lr_at(6, base.schedule, 10)) and lrs[7] > 2e-3
    saved = RunConfig.from_yaml(tmp_path / "kept" / "config.yaml")
    assert saved.schedule.total_steps == 6 and saved.train.steps == 10  # the next resume keeps it too

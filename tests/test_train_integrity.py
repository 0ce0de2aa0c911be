"""Nothing lost, nothing stale (training): damaged checkpoints, runs into used directories, --resume against a
changed config, concurrent runs, and token data from mixed tokenizers."""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from train_helpers import losses, tiny_config

from hybridlm.data.errors import DataError
from hybridlm.errors import CheckpointError, ConfigError, HybridLMError
from hybridlm.train import run_anneal, run_training
from hybridlm.train.checkpoint import find_checkpoint, list_checkpoints
from hybridlm.train.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::hybridlm.train.anneal.AnnealWarning")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished 6-step run with checkpoints at steps 3 and 6."""
    out = tmp_path_factory.mktemp("base") / "run"
    run_training(tiny_config(**{"train.steps": 6, "train.checkpoint_every": 3}), out)
    return out


def copy_run(base, dest):
    shutil.copytree(base, dest)
    return dest


def flip_bytes(path, n=64):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n] = bytes(b ^ 0xFF for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


# --- 4. damaged checkpoints ------------------------------------------------------------------------------------------

DAMAGE = {
    "flipped model.pt": (lambda c: flip_bytes(c / "model.pt"), "model.pt does not match its checksum"),
    "truncated model.pt": (
        lambda c: (c / "model.pt").write_bytes((c / "model.pt").read_bytes()[:1000]),
        "model.pt has 1,000 bytes",
    ),
    "empty model.pt": (lambda c: (c / "model.pt").write_bytes(b""), "model.pt has 0 bytes"),
    "missing rng.pt": (lambda c: (c / "rng.pt").unlink(), "rng.pt is missing"),
    "broken meta.json": (lambda c: (c / "meta.json").write_text('{"step": 6, "form'), "meta.json is not valid JSON"),
    "edited meta.json": (
        lambda c: (c / "meta.json").write_text((c / "meta.json").read_text().replace('"tokens": 768', '"tokens": 9')),
        "meta.json does not match its checksum",
    ),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_checkpoint_is_detected(base, tmp_path, kind):
    out = copy_run(base, tmp_path / "run")
    damage, why = DAMAGE[kind]
    damage(out / "checkpoints" / "step_00000006")
    from hybridlm.train.checkpoint import newest_valid

    found, skipped = newest_valid(out / "checkpoints")
    assert found.name == "step_00000003"
    assert [(p.name, w.split(" (")[0][: len(why)]) for p, w in skipped] == [("step_00000006", why)]
    with pytest.raises(CheckpointError, match="step_00000006 is not usable: " + why.split(" (")[0][:20]):
        find_checkpoint(out / "checkpoints" / "step_00000006")


def test_resume_skips_a_damaged_checkpoint_and_says_so(base, tmp_path, capfd):
    out = copy_run(base, tmp_path / "run")
    flip_bytes(out / "checkpoints" / "step_00000006" / "model.pt")
    r = run_training(tiny_config(**{"train.steps": 6, "train.checkpoint_every": 3}), out, resume=True)
    err = capfd.readouterr().err
    assert "checkpoint step_00000006 is not usable (model.pt does not match its checksum" in err
    assert "resuming from step 3 (step_00000003)" in err
    assert r["start_step"] == 3 and losses(out) == losses(base)  # the same losses as the undamaged run
    assert (out / "checkpoints" / "invalid-step_00000006").is_dir()  # set aside, not deleted
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_00000003", "step_00000006"]
    # anneal --from a run directory uses its newest valid checkpoint too
    flip_bytes(out / "checkpoints" / "step_00000006" / "optim.pt")
    assert find_checkpoint(out).name == "step_00000003"
    assert "step_00000006 is not usable (optim.pt" in capfd.readouterr().err
    # nothing valid left: one line, no silent fresh start over the old run
    flip_bytes(out / "checkpoints" / "step_00000003" / "rng.pt")
    with pytest.raises(CheckpointError, match="no valid checkpoint") as e:
        run_training(tiny_config(**{"train.steps": 6, "train.checkpoint_every": 3}), out, resume=True)
    assert "\n" not in str(e.value) and "step_00000003: rng.pt" in str(e.value)


# --- 5. a new run into a used output directory; --resume with another config -----------------------------------------


def test_new_run_into_a_used_directory_is_refused_or_overwritten(base, tmp_path):
    out = copy_run(base, tmp_path / "run")
    before = {p: p.read_bytes() for p in (out / "metrics.jsonl", out / "config.yaml", out / "summary.json")}
    new = tiny_config(**{"train.steps": 4, "train.seed": 1, "train.checkpoint_every": 2})
    with pytest.raises(ConfigError, match="holds another run .*--resume.*--overwrite"):
        run_training(new, out)
    assert all(p.read_bytes() == b for p, b in before.items())  # nothing was touched
    r = run_training(new, out, overwrite=True)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_00000002", "step_00000004"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoint"].endswith("step_00000004") and sorted(losses(out)) == [1, 2, 3, 4]
    assert r["start_step"] == 0 and np.isfinite(r["final_loss"])
    # a later --resume continues this run, not the old one
    r = run_training(new, out, resume=True)
    assert r["start_step"] == 4 and np.isfinite(r["final_loss"]) and r["final_loss"] == losses(out)[4]


def test_resume_compares_the_run_config(base, tmp_path, capfd):
    out = copy_run(base, tmp_path / "run")
    saved = (out / "config.yaml").read_bytes()
    changed_model = tiny_config(**{"train.steps": 8, "train.checkpoint_every": 3, "model.d_model": 96})
    with pytest.raises(ConfigError, match=r"the model differs .*model\.d_model 64 -> 96") as e:
        run_training(changed_model, out, resume=True)
    assert "\n" not in str(e.value)
    assert (out / "config.yaml").read_bytes() == saved and not (out / "checkpoints" / "step_00000008").exists()
    for key, value, shown in [
        ("train.batch_size", 8, "train.batch_size 4 -> 8"),
        ("train.seed", 3, "train.seed 0 -> 3"),
        ("data.seq_len", 16, "data.seq_len 32 -> 16"),
        ("schedule.lr", 1e-3, "schedule.lr 0.003 -> 0.001"),
    ]:
        with pytest.raises(ConfigError, match="--allow-changes") as e:
            run_training(tiny_config(**{"train.steps": 8, key: value}), out, resume=True)
        assert shown in str(e.value)
    with pytest.raises(ConfigError, match="train.steps=4 is below the checkpoint's step 6"):
        run_training(tiny_config(**{"train.steps": 4, "train.checkpoint_every": 3}), out, resume=True)
    capfd.readouterr()
    # the documented way to extend a run needs no flag; changes with --allow-changes are listed
    r = run_training(tiny_config(**{"train.steps": 7, "train.checkpoint_every": 3}), out, resume=True)
    assert r["start_step"] == 6 and "resuming from step 6" in capfd.readouterr().err
    r = run_training(
        tiny_config(**{"train.steps": 8, "train.checkpoint_every": 3, "schedule.lr": 1e-3}),
        out,
        resume=True,
        allow_changes=True,
    )
    assert r["start_step"] == 7 and "with changes: schedule.lr 0.003 -> 0.001" in capfd.readouterr().err
    # resuming a finished run reports its last loss, not NaN
    r = run_training(tiny_config(**{"train.steps": 8, "train.checkpoint_every": 3, "schedule.lr": 1e-3}), out,
                     resume=True)
    assert r["final_loss"] == losses(out)[8]
    # no checkpoint at all: says so
    run_training(tiny_config(**{"train.steps": 1}), tmp_path / "fresh", resume=True)
    assert "no checkpoint: starting at step 0" in capfd.readouterr().err


def test_resume_with_another_model_on_the_command_line_is_one_line(base, tmp_path):
    out = copy_run(base, tmp_path / "run")
    saved = (out / "config.yaml").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "hybridlm", "train", str(out / "config.yaml"), "-o", str(out), "--resume",
         "--model.d_model=96"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: --resume: the model differs")
    assert (out / "config.yaml").read_bytes() == saved


def test_leftover_export_debris_does_not_break_the_export(tmp_path):
    from hybridlm import HybridLM, ModelConfig

    model = HybridLM(ModelConfig.from_preset("zamba2-tiny"))
    model.save_pretrained(tmp_path / "final")
    (tmp_path / ".final.old").mkdir()  # a save killed between its two renames leaves this
    (tmp_path / ".final.old" / "model.safetensors").write_bytes(b"old")
    model.save_pretrained(tmp_path / "final")
    assert not (tmp_path / ".final.old").exists() and HybridLM.from_pretrained(tmp_path / "final") is not None


# --- 6. concurrent runs ----------------------------------------------------------------------------------------------


def test_a_second_run_into_a_locked_directory_is_refused(tmp_path):
    from hybridlm.locks import DirectoryLockedError

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hybridlm.locks import output_lock\n"
         "with output_lock(sys.argv[1], 'hybridlm train run.yaml'):\n    print('held', flush=True); time.sleep(60)",
         str(out)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryLockedError, match=f"in use by pid {holder.pid} .*hybridlm train run.yaml"):
            run_training(tiny_config(**{"train.steps": 1}), out)
        assert not (out / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    t0 = time.time()
    run_training(tiny_config(**{"train.steps": 1}), out)  # the lock died with its holder
    assert time.time() - t0 < 60 and (out / "metrics.jsonl").exists()


# --- 7. token data from mixed tokenizers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """Two packed datasets of the same text with two different tokenizers (both within the model's 512 ids)."""
    from hybridlm.data.pack import pack
    from hybridlm.data.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("mixed")
    rng = random.Random(0)
    words = "river mill town stone bridge market garden harbor valley forest meadow castle".split()
    docs = [" ".join(rng.choice(words) for _ in range(60)) for _ in range(120)]
    (d / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    out = {}
    for name, vocab in (("a", 300), ("b", 320)):
        train_tokenizer([d / "c.jsonl"], d / f"tok_{name}", vocab_size=vocab)
        pack([d / "c.jsonl"], d / f"packed_{name}", d / f"tok_{name}")
        out[name] = d / f"packed_{name}"
    return out


def test_sources_eval_and_anneal_must_share_the_tokenizer(packed, tmp_path, capfd):
    from hybridlm.train.data import BatchStream

    sources = [{"path": str(packed["a"])}, {"path": str(packed["b"])}]
    both = RunConfig.from_dict(tiny_config(**{"data.sources": sources}))
    with pytest.raises(ConfigError, match="data.sources were packed with different tokenizers") as e:
        BatchStream(both.data, both.train, vocab_size=512)
    assert "tok_a" in str(e.value) and "tok_b" in str(e.value)
    # own data, default eval (auto): no evaluation on another tokenizer's synthetic ids
    own = tiny_config(**{"data.sources": [{"path": str(packed["a"])}], "data.eval_path": "auto", "train.steps": 2})
    r = run_training(own, tmp_path / "own")
    assert r["eval"] is None and "no held-out evaluation" in capfd.readouterr().err
    with pytest.raises(ConfigError, match="the training data and the evaluation data were packed with different"):
        run_training({**own, "data": {**own["data"], "eval_path": "synth://eval"}}, tmp_path / "own2")
    # annealing: no default synth://hq for a run on other data; --data of another tokenizer is refused
    with pytest.raises(ConfigError, match="give --data"):
        run_anneal(tmp_path / "own", tmp_path / "p2", steps=1)
    with pytest.raises(ConfigError, match="different tokenizers"):
        run_anneal(tmp_path / "own", tmp_path / "p2", data=[str(packed["b"])], steps=1)
    r = run_anneal(tmp_path / "own", tmp_path / "p2", data=[str(packed["a"])], steps=1, progress=False)
    assert np.isfinite(r["final_loss"])


def test_bad_token_data_is_one_line(packed, tmp_path):
    from hybridlm.train.data import BatchStream, open_dataset

    bad = tmp_path / "bad"
    shutil.copytree(packed["a"], bad)
    ids = np.memmap(bad / "00000.bin", dtype="<u2", mode="r+")
    ids[500] = 600  # beyond zamba2-tiny's 512 ids
    ids.flush()
    del ids
    cfg = RunConfig.from_dict(tiny_config(**{"data.sources": [{"path": str(bad)}], "train.batch_size": 64}))
    stream = BatchStream(cfg.data, cfg.train, vocab_size=512)
    with pytest.raises(DataError, match=r"00000\.bin holds token id 600, outside the model's vocabulary"):
        for step in range(200):
            stream.micro_batches(step)
    from hybridlm import HybridLM, ModelConfig
    from hybridlm.train import evaluate_loss

    with pytest.raises(DataError, match="holds token id 600"):
        evaluate_loss(HybridLM(ModelConfig.from_preset("zamba2-tiny")), open_dataset(str(bad)), seq_len=32)
    # a truncated shard names its file
    with open(bad / "00000.bin", "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(DataError, match=r"00000\.bin holds 1,000 bytes but its index says"):
        open_dataset(str(bad))
    # seq_len beyond the model's context
    with pytest.raises(ConfigError, match="data.seq_len 2048 exceeds the model's max_seq_len 1024") as e:
        RunConfig.from_dict(tiny_config(**{"data.seq_len": 2048}))
    assert "\n" not in str(e.value)
    assert isinstance(e.value, HybridLMError)


def test_example_config_uses_auto_eval():
    from hybridlm.train.example import EXAMPLE_CONFIG

    assert yaml.safe_load(EXAMPLE_CONFIG)["data"]["eval_path"] == "auto"

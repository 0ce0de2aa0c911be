"""Exact resume after a real SIGKILL, and atomic checkpoint writes (a kill during a save)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import losses, tiny_config

from hybridlm.model import HybridLM
from hybridlm.train import run_training
from hybridlm.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from hybridlm.train.config import RunConfig
from hybridlm.train.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]


def _launch(cfg_path, out, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "hybridlm", "train", str(cfg_path), "-o", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(pred, proc, timeout=60.0):
    t0 = time.time()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(
                f"run ended early (rc {proc.returncode}): {proc.stderr.read().decode()[-2000:]}"
            )
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.005)


def _steps_logged(out):
    p = Path(out) / "metrics.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    cfg = tiny_config(
        **{
            "train.steps": 36,
            "train.checkpoint_every": 10,
            "train.keep_last": 2,
            "train.grad_accum": 2,
            "data.sources": [{"path": "synth://web", "weight": 0.7}, {"path": "synth://hq", "weight": 0.3}],
        }
    )
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    killed = tmp_path / "killed"
    proc = _launch(cfg_path, killed)
    # kill at an arbitrary step after the second checkpoint, mid-interval
    _wait_for(lambda: _steps_logged(killed) >= 23, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(killed / "checkpoints").name == "step_00000020"
    assert _steps_logged(killed) < 36

    resumed = run_training(RunConfig.from_yaml(cfg_path), killed, resume=True)
    assert resumed["start_step"] == 20
    full = tmp_path / "full"
    run_training(RunConfig.from_yaml(cfg_path), full)
    a, b = losses(killed), losses(full)
    assert sorted(a) == list(range(1, 37))
    assert a == b  # bit-identical floats at every step, before and after the kill


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(**{"train.steps": 6, "train.checkpoint_every": 3})))
    out = tmp_path / "out"
    proc = _launch(cfg_path, out, {"HYBRIDLM_FAULT": "save@6:hang"})
    partial = out / "checkpoints" / ".tmp-step_00000006" / "model.pt"
    _wait_for(partial.exists, proc)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the interrupted save is invisible; the previous checkpoint is complete and loads
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_00000003"]
    assert not (out / "checkpoints" / "step_00000006").exists()
    cfg = RunConfig.from_yaml(cfg_path)
    model = HybridLM(cfg.model_config_obj())
    opt = build_optimizer(model, cfg.optim, cfg.schedule.lr)
    meta = load_checkpoint(out / "checkpoints" / "step_00000003", model, opt)
    assert meta["step"] == 3 and meta["tokens"] == 3 * 4 * 32 and len(opt.state) > 0
    # a kill (not a hang) at the same point leaves the same state, and resuming completes the run
    r = run_training(cfg, out, resume=True)
    assert r["start_step"] == 3 and latest_checkpoint(out / "checkpoints").name == "step_00000006"
    assert not list((out / "checkpoints").glob(".tmp-*"))
    ref = tmp_path / "ref"
    run_training(cfg, ref)
    assert losses(out) == losses(ref)


def test_checkpoint_holds_everything(tmp_path):
    run_training(tiny_config(**{"train.steps": 3}), tmp_path)
    ck = latest_checkpoint(tmp_path / "checkpoints")
    import json

    meta = json.loads((ck / "meta.json").read_text())
    assert meta["step"] == 3 and meta["config"]["train"]["steps"] == 3 and meta["format"] == "torch"
    rng = torch.load(ck / "rng.pt", weights_only=False)
    assert {"torch", "numpy", "python"} <= set(rng)
    assert {"state", "param_groups"} <= set(torch.load(ck / "optim.pt", weights_only=False))


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    r = run_training(tiny_config(**{"train.steps": 2}), tmp_path, resume=True)
    assert r["start_step"] == 0


@pytest.mark.parametrize("bad", ["nothing-here"])
def test_init_from_missing_checkpoint_is_one_line(tmp_path, bad):
    from hybridlm.errors import CheckpointError

    with pytest.raises(CheckpointError, match="train.init_from: .* is not a model"):
        run_training(tiny_config(**{"train.init_from": str(tmp_path / bad)}), tmp_path / "o")

"""Tensor, expert and data parallelism on one mesh (gloo, CPU, fp32) against the single-process run, on a model
with every layer kind: per-step losses over 10 steps, gradients after one step (on rows of three packed
documents, so the segment paths run inside the split regions), the initial weights
(each rank computing only its shards), checkpoints that reshard (tp=2 -> one process and one process ->
tp=2, bit for bit; a tp=2 run resumed in one process), and the planner's per-rank memory against the bytes
measured on the split model. One launch per world size; each runs several layouts."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import every_kind_config, losses

from hybridlm import HybridLM
from hybridlm.plan import memory
from hybridlm.train import run_training
from hybridlm.train.checkpoint import latest_checkpoint, load_checkpoint
from hybridlm.train.config import RunConfig
from hybridlm.train.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
ZERO = {"none": 0, "ddp": 0, "zero1": 1, "fsdp2": 3}
PLAN_TABLE = []  # rows for the report: layout, measured and planned bytes


def _launch(n: int, root: Path, base: dict, layouts: dict, *extra: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           str(ROOT / "tests" / "parallel_worker.py"), str(root), json.dumps(base), json.dumps(layouts),
           *map(str, extra)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-4000:])


def _reports(root: Path, name: str, n: int) -> list[dict]:
    return [json.loads((root / name / f"rank{r}.json").read_text()) for r in range(n)]


def _check_layout(root: Path, name: str, n: int, base: dict, overrides: dict, ref: dict) -> None:
    got = losses(root / name)
    assert got.keys() == ref.keys() == set(range(1, 11)), name
    worst = max(abs(got[s] - ref[s]) / ref[s] for s in ref)
    assert worst < 1e-5, (name, worst)
    reports = _reports(root, name, n)
    for r in reports:
        assert r["init_equal"], name  # every rank computed exactly its part of the single-process init
        assert r["grad_rel_err"] < 1e-5, (name, r["grad_rel_err"])
        assert r["grad_norm"] == pytest.approx(r["ref_grad_norm"], rel=1e-6), name
    cfg = RunConfig.from_dict(base, overrides)
    d = cfg.distributed
    plan = memory(cfg.model_config_obj(), batch=1, seq_len=16, gpus=n, tp=d.tp, ep=d.ep, zero=ZERO[d.mode],
                  dtype_bytes=4, master_weights=False)
    measured = {k: max(r["bytes"][k] for r in reports) for k in ("params", "grads", "optimizer")}
    planned = {"params": plan.train_weights_bytes, "grads": plan.train_grads_bytes,
               "optimizer": plan.train_optimizer_bytes}
    PLAN_TABLE.append((name, measured, planned, worst))
    print(f"\n{name}: loss rel err {worst:.1e}, grad rel err {max(r['grad_rel_err'] for r in reports):.1e}, "
          f"per-rank bytes measured {measured} planned {planned}")
    assert measured == planned, name


def _check_reshard_to_one_process(root: Path, name: str, n: int, base: dict) -> None:
    """The checkpoint a split layout wrote after one step loads into one process (no process group) with
    exactly the weights and Adam moments the ranks held."""
    cfg = RunConfig.from_dict(base)
    plain = HybridLM(cfg.model_config_obj())
    opt = build_optimizer(plain, cfg.optim, cfg.schedule.lr)
    load_checkpoint(root / name / "reshard" / "step_00000001", plain, opt, restore_rng=False)
    params = dict(plain.named_parameters())
    for r in range(n):
        for pname, shard in torch.load(root / name / f"shards{r}.pt", weights_only=True).items():
            p = params[pname]
            assert torch.equal(p.detach().flatten()[shard["index"]], shard["weight"]), (name, r, pname)
            assert torch.equal(opt.state[p]["exp_avg"].flatten()[shard["index"]], shard["exp_avg"]), (name, pname)


@pytest.mark.slow
def test_tensor_expert_and_data_parallel_layouts_match_one_process(tmp_path):
    base = every_kind_config(ngroups=1)
    ref_run = run_training(base, tmp_path / "single")
    ref = losses(ref_run["output_dir"])
    single_ckpt = tmp_path / "single" / "checkpoints" / "step_00000005"
    two = {"tp2": {"distributed.tp": 2}, "ep2": {"distributed.mode": "ddp", "distributed.ep": 2},
           "zero1": {"distributed.mode": "zero1"}}
    _launch(2, tmp_path, base, two, single_ckpt)
    for name, overrides in two.items():
        _check_layout(tmp_path, name, 2, base, overrides, ref)
    # a one-process checkpoint loads into tp=2 (and experts over 2 ranks) bit for bit, Adam state included
    for name in ("tp2", "ep2"):
        for r in _reports(tmp_path, name, 2):
            assert r["from_single_equal"] and r["from_single_adam_steps"] == [5.0], name
    _check_reshard_to_one_process(tmp_path, "tp2", 2, base)
    _check_reshard_to_one_process(tmp_path, "ep2", 2, base)

    # the tp=2 run's step-5 checkpoint resumes in one process and continues as the single-process run
    resumed = tmp_path / "tp2_resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "tp2" / "checkpoints" / "step_00000005", resumed / "checkpoints" / "step_00000005")
    run_training(base, resumed, resume=True)
    got = losses(resumed)
    assert min(got) == 6 and all(abs(got[s] - ref[s]) / ref[s] < 1e-5 for s in got), (got, ref)

    # four ranks: FSDP2 x tp 2 x ep 2, and FSDP2 x tp 2 with sequence parallelism; ngroups 2 splits B and C
    base4 = every_kind_config(ngroups=2)
    ref4 = losses(run_training(base4, tmp_path / "single4")["output_dir"])
    four = {"fsdp2_tp2_ep2": {"distributed.mode": "fsdp2", "distributed.tp": 2, "distributed.ep": 2,
                              "train.export": True},
            "fsdp2_tp2_sp": {"distributed.mode": "fsdp2", "distributed.tp": 2, "distributed.sequence_parallel": True}}
    _launch(4, tmp_path / "four", base4, four)
    for name, overrides in four.items():
        _check_layout(tmp_path / "four", name, 4, base4, overrides, ref4)
    _check_reshard_to_one_process(tmp_path / "four", "fsdp2_tp2_ep2", 4, base4)
    assert latest_checkpoint(tmp_path / "four" / "fsdp2_tp2_ep2" / "checkpoints").name == "step_00000010"
    assert (tmp_path / "four" / "fsdp2_tp2_ep2" / "final" / "model.safetensors").exists()

"""Checks that need a CUDA GPU (marked `cuda`: skipped without one; benchmarks/gpu_check.sh runs them): the real
mamba_ssm kernels (when installed) against the PyTorch path under bf16 autocast, the MoE grouped matmul in
bf16, a split model (FSDP2 with bf16 mixed precision) stepping with NCCL collectives, and a short bf16
training run."""

import socket

import pytest
import torch
import torch.distributed as dist
from train_helpers import losses, tiny_config

from hybridlm.layers import kernels
from hybridlm.layers.mamba1 import Mamba1
from hybridlm.layers.mamba2 import Mamba2
from hybridlm.layers.moe import MoE, _grouped_mm_applies

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("make, lookup", [
    (lambda: Mamba1(256, d_state=16), kernels.selective_scan_kernel),
    (lambda: Mamba2(256, d_state=64, headdim=64, ngroups=1, chunk_size=128), kernels.ssd_kernel),
], ids=["mamba1", "mamba2"])
def test_mamba_ssm_kernels_match_the_pytorch_path_under_bf16(make, lookup, monkeypatch):
    torch.manual_seed(0)
    layer = make().to(CUDA)
    u = torch.randn(2, 512, 256, device=CUDA, requires_grad=True)
    if lookup(u) is None:
        pytest.skip("mamba_ssm kernels are not installed")
    runs = []
    for enabled in (True, False):
        monkeypatch.setattr(kernels, "_enabled", lambda t, on=enabled: on and t.is_cuda)
        u.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = layer(u)
        y.float().pow(2).mean().backward()
        runs.append((y.detach(), u.grad.clone()))
    (y_kernel, g_kernel), (y_torch, g_torch) = runs
    assert _rel(y_kernel, y_torch) < 2e-2 and _rel(g_kernel, g_torch) < 5e-2


def test_moe_grouped_matmul_in_bf16(monkeypatch):
    from hybridlm.layers import moe as moe_module

    torch.manual_seed(0)
    moe = MoE(256, 512, n_experts=8, top_k=2).to(CUDA)
    x = torch.randn(4, 128, 256, device=CUDA)
    assert _grouped_mm_applies(x.bfloat16(), moe.up.bfloat16())  # the grouped kernel, not the fallback loop
    outs = []
    for grouped in (True, False):  # the same bf16 routing, experts by grouped_mm and by the per-expert loop
        monkeypatch.setattr(moe_module, "_grouped_mm_applies", lambda a, w, on=grouped: on)
        moe.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y, aux = moe(x)
        y.float().sum().backward()
        outs.append((y.detach(), moe.up.grad.clone(), aux.detach()))
    (y1, g1, a1), (y2, g2, a2) = outs
    assert _rel(y1, y2) < 1e-2 and _rel(g1, g2) < 1e-2 and torch.equal(a1, a2)


def test_split_model_steps_with_nccl_collectives():
    """FSDP2 (bf16 compute, fp32 master) on a one-rank NCCL group: every collective of the trainer's split
    model (gradient completion, global norm, loss sum, checkpoint) runs on device tensors."""
    from hybridlm import ModelConfig
    from hybridlm.parallel import checkpoint as pc
    from hybridlm.parallel.mesh import ParallelDims, ParallelMesh
    from hybridlm.parallel.model import ParallelModel
    from hybridlm.train.distributed import DistContext, all_reduce_sum

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        pmesh = ParallelMesh.build(ParallelDims(1), "cuda")
        cfg = ModelConfig.from_preset("jamba-tiny")
        pm = ParallelModel.build(cfg, pmesh, "fsdp2", CUDA, torch.bfloat16)
        ids = torch.randint(0, cfg.vocab_size, (2, 65), device=CUDA)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = pm.wrapped(ids[:, :-1], shift_labels=ids[:, 1:]).loss
        loss.backward()
        pm.finish_grads()
        assert 0 < pm.clip_grad_norm_(1.0) < float("inf")
        assert all_reduce_sum([float(loss)], DistContext("fsdp2", world=2, device=CUDA))[0] == pytest.approx(
            float(loss))
        state = pc.state_view(pm.model, pm.layouts)
        before = {k: v.boxes[0][1].clone() for k, v in state.items()}
        pc.save("/tmp/hybridlm_gpu_check_dcp", pc.state_view(pm.model, pm.layouts, owned=pm.owned_boxes))
        for v in state.values():
            v.boxes[0][1].zero_()
        pc.load("/tmp/hybridlm_gpu_check_dcp", state)
        assert all(torch.equal(v.boxes[0][1], before[k]) for k, v in state.items())
    finally:
        dist.destroy_process_group()


def test_short_bf16_training_run(tmp_path):
    from hybridlm.train import run_training

    cfg = tiny_config(**{"train.steps": 30, "train.device": "cuda", "train.dtype": "bf16", "data.seq_len": 64,
                         "schedule.warmup_steps": 5})
    result = run_training(cfg, tmp_path)
    got = losses(tmp_path)
    assert all(torch.isfinite(torch.tensor(v)) for v in got.values())
    assert got[30] < got[1] - 0.5
    assert result["tokens_per_s"] > 0 and 0 < result["mfu"] < 1

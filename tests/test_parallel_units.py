"""One-process checks of the pieces under hybridlm.parallel and the trainer: collectives get tensors on the
training device (what NCCL requires), layout-independent init, the parameter layouts, the kinds' plans,
weight decay by name, and the launcher's one-line errors."""

import pytest
import torch
import torch.distributed as dist
from train_helpers import every_kind_config

from hybridlm import HybridLM, ModelConfig
from hybridlm.config.presets import tiny_presets
from hybridlm.errors import ConfigError
from hybridlm.init import DtBias, LogPosition, Normal, Uniform, fill_, flat_index
from hybridlm.kinds import KINDS
from hybridlm.parallel.mesh import ParallelDims
from hybridlm.parallel.shards import module_plans, param_layouts, validate
from hybridlm.train.config import OptimConfig, RunConfig
from hybridlm.train.distributed import DistContext, all_reduce_sum
from hybridlm.train.optim import param_groups


class _Recorded(Exception):
    pass


def test_collectives_get_tensors_on_the_training_device(monkeypatch):
    """With NCCL a host tensor in a collective fails the first step. `meta` stands in for the GPU here: the
    trainer's collective helpers must build their tensors on the training device, not on the CPU."""
    seen = []

    def collective(tensor, *args, **kwargs):
        seen.append(tensor.device)
        raise _Recorded  # a meta tensor has no data to reduce; the device is what is checked

    monkeypatch.setattr(dist, "all_reduce", collective)
    ctx = DistContext(mode="ddp", world=2, device=torch.device("meta"))
    with pytest.raises(_Recorded):
        all_reduce_sum([1.0, 2.0], ctx)
    from hybridlm.parallel.mesh import ParallelMesh
    from hybridlm.parallel.model import ParallelModel

    model = HybridLM(ModelConfig.from_preset("mamba-tiny")).to("meta")
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    pm = ParallelModel(model, model, ParallelMesh.single(), "ddp", param_layouts(model))
    with pytest.raises(_Recorded):
        pm.clip_grad_norm_(1.0)
    assert seen == [torch.device("meta")] * 2


def test_init_of_a_shard_equals_the_slice_of_the_whole_init():
    shape = (300, 500)  # 150,000 elements: three tiles of the stream
    for rule in (Normal(0.02), Uniform(0.5), DtBias(1e-3, 0.1, 1e-4), LogPosition(1)):
        whole = torch.empty(shape)
        fill_(whole, rule, 7, "w")
        pieces = ((slice(10, 290), slice(250, 500)), (slice(0, 300), slice(3, 4)), (slice(299, 300), slice(None)))
        for rows, cols in pieces:
            part = torch.empty(whole[rows, cols].shape)
            fill_(part, rule, 7, "w", flat_index(shape)[rows, cols], shape)
            assert torch.equal(part, whole[rows, cols]), rule
    normal = torch.empty(shape)
    fill_(normal, Normal(0.02), 1, "a")
    assert abs(float(normal.mean())) < 2e-4 and float(normal.std()) == pytest.approx(0.02, rel=0.01)
    other = torch.empty(shape)
    fill_(other, Normal(0.02), 1, "b")  # another name: another stream
    assert abs(float(torch.corrcoef(torch.stack([normal.flatten(), other.flatten()]))[0, 1])) < 0.01
    fill_(other, LogPosition(1), 0, "A")
    torch.testing.assert_close(other[5], torch.log(torch.arange(1, 501).double()).float())


def test_model_init_is_reproducible_and_seeded_by_torch():
    cfg = ModelConfig.from_preset("zamba2-tiny")
    torch.manual_seed(3)
    a = HybridLM(cfg)
    torch.manual_seed(3)
    with torch.device("meta"):
        m = HybridLM(cfg)  # the meta build draws the same seed: split models initialize from it
    assert m.init_seed == a.init_seed
    torch.manual_seed(4)
    b = HybridLM(cfg)
    assert not torch.equal(a.embed.weight, b.embed.weight)
    mamba = a.layers[0].mixer
    torch.testing.assert_close(mamba.A_log.detach(), torch.log(torch.arange(1, mamba.n_heads + 1).double()).float())
    dt = torch.nn.functional.softplus(mamba.dt_bias.detach())
    assert float(dt.min()) >= 1e-3 * 0.999 and float(dt.max()) <= 0.1 * 1.001


@pytest.mark.parametrize("tp,ep", [(2, 1), (2, 2), (1, 2)])
def test_layouts_cover_every_element_once_or_replicate_it(tp, ep):
    cfg = ModelConfig(**{k: v for k, v in every_kind_config(ngroups=1)["model"].items()})
    validate(cfg, tp, ep)
    with torch.device("meta"):
        model = HybridLM(cfg)
    ranks = [param_layouts(model, tp, t, ep, e) for t in range(tp) for e in range(ep)]
    for name, p in model.named_parameters():
        counts = torch.zeros(p.numel(), dtype=torch.int64)
        for layouts in ranks:
            held = layouts[name].local_index().flatten()
            counts.index_add_(0, held, torch.ones_like(held))
        layout = ranks[0][name]
        if layout.tp_whole and not layout.expert:
            assert (counts == tp * ep).all(), name
        else:  # split elements exactly once per replica group; Mamba2's B/C rows (ngroups 1) on every tp rank
            assert set(counts.tolist()) <= {ep if not layout.expert else 1, tp * (ep if not layout.expert else 1)}
            assert counts.min() >= 1, name
    in_proj = ranks[0]["layers.0.mixer.in_proj.weight"]  # [z | x | B | C | dt] split part by part
    assert [r.length for r in in_proj.runs[0]] == [64 // tp, 64 // tp, 16, 16, 8 // tp]
    assert in_proj.partial == (tp > 1)  # B and C (one group) on every tp rank: their gradients are partial
    last = ranks[-1]["layers.0.mixer.in_proj.weight"].runs[0]
    assert [r.start for r in last] == [32 * (tp - 1), 64 + 32 * (tp - 1), 128, 144, 160 + 4 * (tp - 1)]


@pytest.mark.parametrize("name", tiny_presets())
def test_every_kind_has_a_plan_whose_names_exist(name):
    cfg = ModelConfig.from_preset(name)
    with torch.device("meta"):
        model = HybridLM(cfg)
    sizes = [size for t in set(cfg.tokens) for _, size in KINDS[t].tp_splits(cfg)] + [cfg.padded_vocab_size]
    tp = 2 if all(size % 2 == 0 for size in sizes) else 1

    names = dict(model.named_parameters())
    for prefix, _, plan in module_plans(model, tp).entries:
        for rel in [*plan.cuts, *plan.partial, *plan.experts]:
            if rel.endswith("bias") and prefix + rel not in names:
                continue  # conditional biases are listed when the config has them
            assert prefix + rel in names, (name, prefix + rel)
    param_layouts(model, tp)  # part sizes add up and split evenly


def test_impossible_splits_are_one_line_errors():
    cfg = ModelConfig.from_preset("zamba2-tiny")
    with pytest.raises(ConfigError, match="tp=3 must divide"):
        validate(cfg, 3, 1)
    z7 = ModelConfig.from_preset("zamba2-7b")  # ngroups 2
    with pytest.raises(ConfigError, match="ngroups=2"):
        validate(z7, 4, 1)
    with pytest.raises(ConfigError, match="no experts"):
        validate(cfg, 1, 2)
    with pytest.raises(ConfigError, match="multiple of"):
        ParallelDims(world=6, tp=4)
    with pytest.raises(ConfigError, match="moe.bias"):
        validate(ModelConfig.from_preset("moe-tiny").replace(**{"moe.bias": True}), 2, 1)


@pytest.mark.parametrize("name", [n for n in tiny_presets() if "mamba" in n or "zamba" in n or "jamba" in n])
def test_ssm_parameters_get_no_weight_decay_in_every_family(name):
    model = HybridLM(ModelConfig.from_preset(name))
    decay, no_decay = (g["names"] for g in param_groups(model, OptimConfig()))
    ssm = [n for n in decay + no_decay if n.rsplit(".", 1)[-1] in ("A_log", "D", "dt_bias", "dt_proj_bias")]
    assert ssm and all(n in no_decay for n in ssm), name  # Mamba1's are 2-d and 3-d: not exempt by shape
    assert any(n.endswith("in_proj.weight") for n in decay)


def test_train_nproc_checks_the_layout_before_launching(tmp_path):
    from typer.testing import CliRunner

    from hybridlm.cli import app

    cfg = tmp_path / "run.yaml"
    RunConfig.from_dict(every_kind_config()).save(cfg)
    runner = CliRunner()
    for args, msg in ((["--nproc", "4"], "data-parallel ranks"), (["--nproc", "3", "--distributed.tp", "2"],
                                                                   "multiple of")):
        res = runner.invoke(app, ["train", str(cfg), "-o", str(tmp_path / "o"), *args], standalone_mode=False)
        assert isinstance(res.exception, ConfigError) and msg in str(res.exception), (args, res.exception)


@pytest.mark.slow
def test_train_nproc_starts_the_processes(tmp_path):
    """`hybridlm train CONFIG --nproc 2` runs torchrun itself: one summary (rank 0), a tp=2 run."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    cfg = tmp_path / "run.yaml"
    RunConfig.from_dict(every_kind_config(**{"train.steps": 2})).save(cfg)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, "-m", "hybridlm", "train", str(cfg), "-o", str(tmp_path / "out"),
                          "--nproc", "2", "--distributed.tp", "2", "--json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    summaries = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["world"] == 2 and summaries[0]["tp"] == 2
    assert summaries[0]["steps"] == 2


def test_plan_splits_experts_over_ep():
    from hybridlm.plan import memory

    cfg = ModelConfig.from_preset("blackmamba-tiny")
    one, four = (memory(cfg, batch=1, seq_len=64, gpus=4, ep=ep) for ep in (1, 4))
    experts = 3 * 4 * (64 * 2 * 96 + 96 * 64)  # 3 MoE layers x 4 experts x (gated up + down)
    assert one.ep == 1 and four.ep == 4
    assert one.train_weights_bytes - four.train_weights_bytes == 2 * experts * 3 / 4
    with pytest.raises(ConfigError, match="ep=3"):
        memory(cfg, batch=1, seq_len=64, gpus=4, ep=3)

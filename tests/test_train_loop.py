"""The training loop: outputs, grad-accumulation equivalence, non-finite steps, evaluation, config."""

import json

import pytest
import torch
from train_helpers import losses, tiny_config

from hybridlm.errors import ConfigError
from hybridlm.train import TrainingError, evaluate_loss, run_training
from hybridlm.train.config import RunConfig, parse_cli_overrides
from hybridlm.train.optim import param_groups


def test_outputs_metrics_checkpoints_export_plots(tmp_path):
    cfg = tiny_config(
        **{
            "train.steps": 4,
            "train.checkpoint_every": 1,
            "train.keep_last": 2,
            "train.export": True,
            "train.plots": True,
            "train.eval_every": 2,
            "data.eval_path": "synth://eval-qa",
            "data.eval_batches": 2,
        }
    )
    r = run_training(cfg, tmp_path)
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs] == [1, 2, 3, 4]
    assert all({"step", "loss", "lr", "tokens"} <= set(x) for x in recs)
    assert recs[-1]["tokens"] == 4 * 4 * 32
    assert "eval_loss" in recs[1] and "eval_loss" not in recs[0]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000003", "step_00000004"]
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 1000 and (
        tmp_path / "plots" / "lr.png"
    ).exists()
    from hybridlm import HybridLM

    m = HybridLM.from_pretrained(tmp_path / "final")
    ev = evaluate_loss(m, "synth://eval-qa", seq_len=32, batch_size=4, max_batches=2)
    assert ev["loss"] == pytest.approx(r["eval"]["loss"], rel=1e-5)
    assert ev["ppl"] == pytest.approx(torch.tensor(ev["loss"]).exp().item(), rel=1e-5)


def test_grad_accumulation_is_equivalent(tmp_path):
    ref = losses(run_training(tiny_config(), tmp_path / "a1")["output_dir"])
    for accum in (2, 4):
        got = losses(
            run_training(tiny_config(**{"train.grad_accum": accum}), tmp_path / f"a{accum}")["output_dir"]
        )
        assert got.keys() == ref.keys()
        for s in ref:
            assert got[s] == pytest.approx(ref[s], abs=1e-5), (accum, s)
    assert ref[6] < ref[1]  # it learns


def test_activation_checkpointing_same_losses(tmp_path, monkeypatch):
    import hybridlm.model as hm

    calls = []
    real = hm.checkpoint
    monkeypatch.setattr(hm, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    ref = losses(run_training(tiny_config(**{"train.steps": 2}), tmp_path / "plain")["output_dir"])
    assert not calls
    ckpt = losses(
        run_training(
            tiny_config(**{"train.steps": 2, "train.activation_checkpointing": True}), tmp_path / "ckpt"
        )["output_dir"]
    )
    assert calls  # the layers really ran under torch.utils.checkpoint
    assert ckpt.keys() == ref.keys() and all(ckpt[s] == pytest.approx(ref[s], abs=1e-6) for s in ref)


def test_nonfinite_steps_are_skipped_then_abort(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDLM_FAULT_NAN", "2")
    r = run_training(tiny_config(**{"train.steps": 2}), tmp_path / "skip")
    recs = [json.loads(x) for x in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert recs[1].get("skipped") is True and "skipped" not in recs[0] and r["skipped_steps"] == 1
    # the skipped step left the weights alone: they equal those of a clean 1-step run
    monkeypatch.delenv("HYBRIDLM_FAULT_NAN")
    run_training(tiny_config(**{"train.steps": 1}), tmp_path / "one")
    a = torch.load(tmp_path / "skip/checkpoints/step_00000002/model.pt")
    b = torch.load(tmp_path / "one/checkpoints/step_00000001/model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    monkeypatch.setenv("HYBRIDLM_FAULT_NAN", "2,3,4")
    with pytest.raises(TrainingError, match="3 non-finite steps in a row"):
        run_training(tiny_config(**{"train.steps": 6, "train.max_bad_steps": 3}), tmp_path / "abort")


def test_param_groups_no_decay(tmp_path):
    from hybridlm import HybridLM

    cfg = RunConfig.from_dict(tiny_config())
    model = HybridLM(cfg.model_config_obj())
    groups = param_groups(model, cfg.optim)
    decay, nodecay = groups[0]["names"], groups[1]["names"]
    assert "embed.weight" in nodecay and "norm_f.weight" in nodecay
    assert any(n.endswith("A_log") for n in nodecay) and all("norm" not in n for n in decay)
    assert any(n.endswith("in_proj.weight") for n in decay)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    everything = RunConfig.from_dict(tiny_config(**{"optim.no_decay_embeddings": False}))
    assert "embed.weight" in param_groups(model, everything.optim)[0]["names"]


def test_config_overrides_and_one_line_errors(tmp_path):
    ov = parse_cli_overrides(["--train.steps", "7", "--optim.betas", "[0.8, 0.9]", "--data.seq_len=16"])
    assert ov == {"train.steps": 7, "optim.betas": [0.8, 0.9], "data.seq_len": 16}
    cfg = RunConfig.from_dict(tiny_config(), ov)
    assert cfg.train.steps == 7 and cfg.optim.betas == (0.8, 0.9) and cfg.data.seq_len == 16
    for bad, field in [
        ({"train.steps": 0}, "train"),
        ({"train.bogus": 1}, "train.bogus"),
        ({"schedule.name": "nope"}, "schedule.name"),
        ({"model.d_model": 63}, "model."),
    ]:
        with pytest.raises(ConfigError) as e:
            RunConfig.from_dict(tiny_config(), bad)
        assert str(e.value).startswith(field) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="--section.key"):
        parse_cli_overrides(["steps", "3"])


def test_example_config_is_complete_and_valid():
    import yaml

    from hybridlm.train.example import EXAMPLE_CONFIG

    data = yaml.safe_load(EXAMPLE_CONFIG)
    cfg = RunConfig.from_dict(data)
    # complete: every field of every section appears in the example
    defaults = RunConfig().to_dict()
    for section in ("data", "optim", "schedule", "train", "distributed"):
        assert set(data[section]) == set(defaults[section]), section
    assert cfg.data.sources[0].path.startswith("synth://")
    assert cfg == RunConfig()  # the example shows the defaults

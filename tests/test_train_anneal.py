"""Annealing: cookbook defaults, every one overridable, warnings, blend counted from the phase start."""

import math
import warnings

import pytest
from train_helpers import losses, tiny_config

from hybridlm.train import AnnealWarning, anneal_config, run_anneal, run_training
from hybridlm.train.data import BatchStream
from hybridlm.train.schedules import lr_at

pytestmark = pytest.mark.filterwarnings("ignore::hybridlm.train.anneal.AnnealWarning")


@pytest.fixture(scope="module")
def phase1(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase1")
    run_training(tiny_config(**{"train.steps": 10, "train.checkpoint_every": 5, "schedule.lr": 4e-3}), out)
    return out


def test_defaults(phase1):
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnealWarning)  # the defaults stay inside the recommendations
        run, plan = anneal_config(phase1)
    assert [(s.path, s.weight) for s in run.data.sources] == [("synth://web", 0.6), ("synth://hq", 0.4)]
    s = run.schedule
    assert (s.name, s.peak_fraction, s.decay_shape, s.min_lr, s.lr) == ("anneal", 0.75, "cosine", 0.0, 4e-3)
    t = run.train
    assert t.phase == 1 and t.init_from.endswith("step_00000010") and t.steps == 1  # 10% of phase 1
    assert plan["warnings"] == [] and plan["phase1_tokens"] == 10 * 4 * 32
    # LR: linear warmup to 0.75 x the phase-1 max, then cosine to 0
    with pytest.warns(AnnealWarning):  # 20 steps > 15% of phase 1
        run20, _ = anneal_config(phase1, steps=20, warmup_steps=4, overrides={"train.batch_size": 1})
    lrs = [lr_at(i, run20.schedule, 20) for i in range(21)]
    assert lrs[3] == pytest.approx(0.75 * 4e-3) and max(lrs) == pytest.approx(3e-3) and lrs[20] == 0.0
    assert lrs[12] == pytest.approx(1.5e-3)  # halfway through the cosine


def test_everything_overridable(phase1):
    with pytest.warns(AnnealWarning):
        run, _ = anneal_config(
            phase1,
            data=[{"path": "synth://hq", "weight": 1}, {"path": "synth://eval-web", "weight": 3}],
            replay_fraction=0.5,
            lr_fraction=0.5,
            steps=2,
            warmup_steps=0,
            decay_shape="linear",
            overrides={"train.batch_size": 8, "schedule.min_lr": 0.0},
        )
    assert [s.weight for s in run.data.sources] == [0.5, 0.125, 0.375]
    assert (run.schedule.peak_fraction, run.schedule.decay_shape, run.train.batch_size) == (0.5, "linear", 8)


def test_warnings(phase1):
    with pytest.warns(AnnealWarning, match="of the phase-1"):
        _, plan = anneal_config(phase1, steps=3)  # 3 steps = 30% of phase-1 tokens
    assert len(plan["warnings"]) == 1 and plan["token_fraction"] == pytest.approx(0.3)
    with pytest.warns(AnnealWarning) as rec:
        _, plan = anneal_config(phase1, steps=600, overrides={"train.batch_size": 64})
    msgs = [str(w.message) for w in rec]
    assert any("repeated" in m and "epochs" in m for m in msgs)
    assert plan["epochs"]["synth://hq"] > 2


def test_blend_counts_from_phase_start(phase1):
    run, _ = anneal_config(phase1, steps=3)
    stream = BatchStream(run.data, run.train)
    # the first samples of the phase follow the 0.6 / 0.4 rule from index 0
    assert stream.blend.sources(5).tolist() == [0, 1, 0, 1, 0]
    # phase 1 draws its own data order (phase is part of the seed)
    p0 = BatchStream(run.data, run.train.model_copy(update={"phase": 0}))
    assert not (stream.micro_batches(0)[0] == p0.micro_batches(0)[0]).all()


def test_run_anneal_starts_from_phase1_weights(phase1, tmp_path):
    r = run_anneal(phase1, tmp_path, steps=3, warmup_steps=1, progress=False)
    p1, p2 = losses(phase1), losses(tmp_path)
    assert r["steps"] == 3 and sorted(p2) == [1, 2, 3]
    # it continues the trained model (loss near the end of phase 1, far below the random-init loss)
    assert p2[1] < p1[1] - 0.3 and abs(p2[1] - p1[10]) < 0.5
    recs = [__import__("json").loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["lr"] == pytest.approx(0.75 * 4e-3) and recs[-1]["lr"] < recs[0]["lr"]
    assert math.isfinite(r["final_loss"])


def test_curriculum_in_both_phases(phase1):
    cur = [{"step": 0, "weights": [1.0, 0.0]}, {"step": 2, "weights": [0.0, 1.0]}]
    run, _ = anneal_config(phase1, steps=4, overrides={"data.curriculum": cur, "train.batch_size": 4})
    src = BatchStream(run.data, run.train).blend.sources(16).tolist()
    assert src[:4] == [0, 0, 0, 0] and src[8:] == [1] * 8
    p1 = run.replace(**{"train.phase": 0})
    assert BatchStream(p1.data, p1.train).blend.sources(16).tolist() == src

"""LR schedules against golden values computed by hand from the documented formulas."""

import math

import pytest

from hybridlm.train.config import ScheduleConfig
from hybridlm.train.schedules import decay_shape, lr_at


def S(**kw):
    return ScheduleConfig(**{"lr": 1.0, "warmup_steps": 10, "min_lr": 0.1, **kw})


@pytest.mark.parametrize("step,expected", [(0, 0.1), (4, 0.5), (9, 1.0)])
def test_warmup_linear_from_zero(step, expected):
    assert lr_at(step, S(name="cosine"), 110) == pytest.approx(expected)


def test_constant():
    assert [lr_at(s, S(name="constant"), 100) for s in (10, 50, 99)] == [1.0, 1.0, 1.0]


def test_cosine_golden():
    c = S(name="cosine")
    assert lr_at(10, c, 110) == pytest.approx(1.0)
    assert lr_at(60, c, 110) == pytest.approx(0.55)  # halfway: min + (max - min) / 2
    assert lr_at(35, c, 110) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_at(110, c, 110) == pytest.approx(0.1)
    assert lr_at(500, c, 110) == pytest.approx(0.1)


def test_linear_golden():
    c = S(name="linear")
    assert lr_at(35, c, 110) == pytest.approx(0.1 + 0.9 * 0.75)
    assert lr_at(60, c, 110) == pytest.approx(0.55)


@pytest.mark.parametrize(
    "shape,q,expected",
    [
        ("linear", 0.25, 0.75),
        ("cosine", 0.5, 0.5),
        ("1-sqrt", 0.25, 0.5),
        ("1-sqrt", 1.0, 0.0),
        ("exponential", 0.0, 1.0),
        ("exponential", 1.0, 0.0),
        ("exponential", 0.2, (math.exp(-1) - math.exp(-5)) / (1 - math.exp(-5))),
    ],
)
def test_decay_shapes(shape, q, expected):
    assert decay_shape(shape, q) == pytest.approx(expected, abs=1e-12)


def test_wsd_golden():
    c = S(name="wsd", warmup_steps=0, min_lr=0.0, decay_fraction=0.2, decay_shape="1-sqrt")
    # 100 steps: stable through step 79, decay over steps 80..100
    assert lr_at(0, c, 100) == 1.0 and lr_at(79, c, 100) == 1.0
    assert lr_at(80, c, 100) == pytest.approx(1.0)
    assert lr_at(85, c, 100) == pytest.approx(1 - math.sqrt(0.25))
    assert lr_at(90, c, 100) == pytest.approx(1 - math.sqrt(0.5))


def test_anneal_golden():
    c = ScheduleConfig(
        name="anneal", lr=0.004, warmup_steps=10, peak_fraction=0.75, min_lr=0.0, decay_shape="cosine"
    )
    assert lr_at(0, c, 110) == pytest.approx(0.0003)  # 0.003 * 1/10
    assert lr_at(9, c, 110) == pytest.approx(0.003)  # peak = 0.75 * 0.004
    assert lr_at(60, c, 110) == pytest.approx(0.0015)
    assert lr_at(110, c, 110) == pytest.approx(0.0)
    lin = c.model_copy(update={"decay_shape": "linear"})
    assert lr_at(35, lin, 110) == pytest.approx(0.003 * 0.75)


def test_schedule_is_pure():
    c = S(name="wsd", decay_shape="exponential")
    assert [lr_at(s, c, 50) for s in range(50)] == [lr_at(s, c, 50) for s in range(50)]

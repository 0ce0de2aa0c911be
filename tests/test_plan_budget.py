"""Budgets, Chinchilla-style sizing and GEMM-friendly sizing advice."""

import pytest

from hybridlm import ModelConfig
from hybridlm.errors import ConfigError
from hybridlm.plan import flops
from hybridlm.plan.budget import (
    chinchilla_optimal,
    flop_budget,
    model_budget,
    size_token_pairs,
    tokens_affordable,
    training_days,
)
from hybridlm.plan.sizing import nearest_multiples, sizing_advice


def test_flop_budget_is_throughput_times_count_times_days():
    assert flop_budget("h100", 8, 2, mfu=0.5) == 989e12 * 8 * 2 * 86400 * 0.5
    assert flop_budget(1e15, 1, 1, mfu=1.0) == 1e15 * 86400


def test_tokens_affordable_uses_the_models_exact_train_flops():
    cfg = ModelConfig.from_preset("zamba2-1.2b")
    c = 1e21
    assert tokens_affordable(cfg, c, 4096) == pytest.approx(c / flops(cfg, 4096).train_per_token)
    full = tokens_affordable(cfg, c, 4096, recompute="full")
    assert full < tokens_affordable(cfg, c, 4096)
    days = training_days(cfg, 1e11, 4096, "a100", 64, mfu=0.5)
    assert days == pytest.approx(1e11 * flops(cfg, 4096).train_per_token / (312e12 * 64 * 86400 * 0.5))


def test_chinchilla_pairs_spend_the_budget():
    c = 5.76e23  # Chinchilla's own budget: ~70B params x 1.4T tokens
    opt = chinchilla_optimal(c)
    assert opt["tokens"] == pytest.approx(20 * opt["params"])
    assert 6 * opt["params"] * opt["tokens"] == pytest.approx(c)
    assert 65e9 < opt["params"] < 75e9
    for pair in size_token_pairs(c):
        assert 6 * pair["params"] * pair["tokens"] == pytest.approx(c)
    mb = model_budget(ModelConfig.from_preset("blackmamba-2.8b"), c, 2048)
    assert mb["chinchilla_tokens"] == 20 * 628_770_832  # active parameters for MoE (BlackMamba as released)


def test_sizing_flags_bad_dims_and_suggests_neighbours():
    cfg = ModelConfig.from_preset("mamba-130m")  # vocab 50280 is padded to 8, not 64
    adv = {a.field: a for a in sizing_advice(cfg)}
    assert adv["d_model"].ok
    assert not adv["vocab (padded)"].ok and adv["vocab (padded)"].suggest == [50304]
    odd = ModelConfig.from_preset("transformer-tiny").replace(
        d_model=100, **{"attention.rope": False, "mlp.ffn_dim": 300}
    )
    adv = {a.field: a for a in sizing_advice(odd)}
    assert adv["d_model"].suggest == [64, 128]
    assert adv["mlp.ffn_dim"].suggest == [256, 320]
    assert not adv["attention head_dim"].ok  # 25
    assert nearest_multiples(128) == [128]


@pytest.mark.parametrize(
    "call,msg",
    [
        (lambda: flop_budget("tpu-x", 1, 1), "unknown accelerator"),
        (lambda: flop_budget("h100", 0, 1), "gpus"),
        (lambda: flop_budget("h100", 1, -1), "days"),
        (lambda: flop_budget("h100", 1, 1, mfu=2), "mfu"),
        (lambda: chinchilla_optimal(-1), "budget"),
    ],
)
def test_bad_budget_inputs_name_the_problem(call, msg):
    with pytest.raises(ConfigError, match=msg):
        call()

"""The analytic parameter count equals the instantiated model's, for every preset and random configs."""

import pytest
import torch
from _plan_helpers import random_config
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hybridlm import HybridLM, ModelConfig, presets
from hybridlm.plan import params
from hybridlm.plan.params import moe_expert_params


def _meta_count(cfg):
    with torch.device("meta"):
        return HybridLM(cfg).num_parameters()


@pytest.mark.parametrize("name", presets())
def test_preset_total_equals_model(name):
    cfg = ModelConfig.from_preset(name)
    report = params(cfg)
    assert report.total == _meta_count(cfg)
    assert sum(report.by_component.values()) == report.total


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.integers(0, 10**9))
def test_random_config_total_equals_model(seed):
    cfg = random_config(seed)
    assume(cfg is not None)
    assert params(cfg).total == _meta_count(cfg), cfg.to_dict()


def test_by_component_matches_module_groups():
    cfg = ModelConfig.from_preset("zamba2-tiny")
    model = HybridLM(cfg)
    comp = params(cfg).by_component
    count = lambda mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
    assert comp["shared_proj"] == count(c.proj for c in model.calls)
    lora = [m for c in model.calls for m in (c.lora_q, c.lora_k, c.lora_v, c.lora_mlp)]
    assert comp["lora"] == count(lora)
    assert comp["shared_attention"] == count(b.attn for b in model.shared)
    assert comp["shared_mlp"] == count(b.mlp for b in model.shared)
    assert comp["mamba2"] == count(layer.mixer for layer in model.layers)
    assert comp["embedding"] == model.embed.weight.numel()


def test_per_layer_matches_each_block():
    cfg = ModelConfig.from_preset("jamba-tiny")
    model = HybridLM(cfg)
    rows = [r for r in params(cfg).per_layer if r["kind"] != "g"]
    assert [r["params"] for r in rows] == [sum(p.numel() for p in blk.parameters()) for blk in model.layers]


@pytest.mark.parametrize("name", ["blackmamba-2.8b", "jamba-v0.1", "moe-tiny"])
def test_active_params_count_top_k_experts(name):
    cfg = ModelConfig.from_preset(name)
    r = params(cfg)
    n_moe = cfg.tokens.count("e")
    assert r.total - r.active == n_moe * (cfg.moe.n_experts - cfg.moe.top_k) * moe_expert_params(cfg)
    assert (
        sum(row["active"] for row in r.per_layer) + r.total - sum(row["params"] for row in r.per_layer)
        == r.active
    )


def test_published_active_counts():
    assert round(params(ModelConfig.from_preset("jamba-v0.1")).active / 1e9) == 12
    assert round(params(ModelConfig.from_preset("blackmamba-2.8b")).active / 1e6, -1) == 630
    dense = ModelConfig.from_preset("llama-2-7b")
    assert params(dense).active == params(dense).total

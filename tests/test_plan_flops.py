"""Analytic FLOPs against torch's FlopCounterMode on the real model (forward, forward+backward,
full recomputation), for every architecture and for random configs."""

import pytest
import torch
from _plan_helpers import count_flops, random_config

from hybridlm import HybridLM, ModelConfig
from hybridlm.config.presets import tiny_presets
from hybridlm.errors import ConfigError
from hybridlm.plan import flops, sublayer_flops
from hybridlm.plan.flops import ssd_flops

TINY = tiny_presets()
VARIANTS = {  # GQA in the shared block, LoRA off, ngroups > 1, LayerNorm + biases, plain MLP/MoE
    "zamba2-gqa-ngroups": (
        "zamba2-tiny",
        {"shared.n_kv_heads": 2, "mamba2.ngroups": 2, "shared.lora_qkv": False},
    ),
    "zamba2-no-lora": (
        "zamba2-tiny",
        {"shared.lora_rank": 0, "shared.lora_qkv": False, "shared.lora_mlp": False},
    ),
    "transformer-bias-layernorm": (
        "transformer-tiny",
        {
            "norm": "layernorm",
            "attention.qkv_bias": True,
            "attention.out_bias": True,
            "mlp.gated": False,
            "mlp.bias": True,
        },
    ),
    "moe-top1-ungated": ("moe-tiny", {"moe.top_k": 1, "moe.gated": False, "moe.bias": True}),
}


def _config(name):
    if name in VARIANTS:
        base, overrides = VARIANTS[name]
        return ModelConfig.from_preset(base).replace(**overrides)
    return ModelConfig.from_preset(name)


def _measure(cfg, batch, seq_len, checkpointing=False):
    torch.manual_seed(0)
    model = HybridLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    with torch.no_grad():
        fwd, _ = count_flops(lambda: model(ids))
    model.train()
    model.gradient_checkpointing = checkpointing
    train, ops = count_flops(lambda: model(ids).logits.sum().backward())
    return fwd, train, ops


@pytest.mark.parametrize("seq_len", [37, 48])  # 37: not a multiple of any chunk size (padding path)
@pytest.mark.parametrize("name", TINY + sorted(VARIANTS))
def test_forward_and_backward_match_flop_counter(name, seq_len):
    cfg = _config(name)
    batch = 2
    fwd, train, _ = _measure(cfg, batch, seq_len)
    r = flops(cfg, seq_len, batch=batch, device="cpu")
    tokens = batch * seq_len
    assert r.forward_per_token * tokens == pytest.approx(fwd, rel=1e-9)
    assert r.train_per_token * tokens == pytest.approx(train, rel=1e-9)
    assert r.backward_per_token * tokens == pytest.approx(train - fwd, rel=1e-9)


@pytest.mark.parametrize("seed", range(10))
def test_random_configs_match_flop_counter(seed):
    cfg = None
    while cfg is None:
        cfg = random_config(1000 + seed, small=True)
        seed += 100
    fwd, train, _ = _measure(cfg, 1, 21)
    r = flops(cfg, 21, device="cpu")
    assert r.forward_per_token * 21 == pytest.approx(fwd, rel=1e-9), cfg.to_dict()
    assert r.train_per_token * 21 == pytest.approx(train, rel=1e-9), cfg.to_dict()


@pytest.mark.parametrize("name", ["zamba2-tiny", "jamba-tiny", "moe-tiny"])
def test_full_recompute_matches_gradient_checkpointing(name):
    cfg = _config(name)
    _, train, _ = _measure(cfg, 2, 24, checkpointing=True)
    r = flops(cfg, 24, batch=2, recompute="full", device="cpu")
    assert r.train_per_token_with_recompute * 48 == pytest.approx(train, rel=1e-9)
    assert r.train_per_token_with_recompute > r.train_per_token


def test_attention_core_is_counted_by_the_sdpa_op():
    cfg = _config("transformer-tiny")
    _, _, ops = _measure(cfg, 2, 40)
    r = flops(cfg, 40, batch=2, device="cpu")
    core = r.by_component["attention_core"] * 80
    assert ops["aten._scaled_dot_product_flash_attention_for_cpu"] == core
    assert ops["aten._scaled_dot_product_flash_attention_for_cpu_backward"] == 2 * core


def test_mamba_convs_are_elementwise_so_count_zero():
    """The depthwise causal conv runs as shifted multiply-adds, which the planner leaves out; if a layer
    switched to a real convolution op, this fails and the planner must count it."""
    for name in ("mamba2-tiny", "mamba-tiny"):
        cfg = _config(name)
        model = HybridLM(cfg)
        ids = torch.randint(0, cfg.vocab_size, (2, 30))
        _, ops = count_flops(lambda model=model, ids=ids: model(ids, labels=ids).loss.backward())
        assert not any("convolution" in op for op in ops)
        assert not any("conv" in term for term in flops(cfg, 30, batch=2).by_component)


def test_ssd_terms_depend_on_chunk_size_and_padding():
    cfg = ModelConfig.from_preset("mamba2-tiny")
    small = sum(ssd_flops(cfg.replace(**{"mamba2.chunk_size": 8}), 1, 64).values())
    large = sum(ssd_flops(cfg.replace(**{"mamba2.chunk_size": 32}), 1, 64).values())
    assert large > small  # the intra-chunk quadratic part grows with the chunk
    padded = ssd_flops(cfg, 1, 17)  # chunk 16: 17 tokens are computed as 32
    assert padded == ssd_flops(cfg, 1, 32)


def test_causal_ideal_halves_attention_core():
    cfg = ModelConfig.from_preset("llama-2-7b")
    kernel = flops(cfg, 4096).by_component["attention_core"]
    causal = flops(cfg, 4096, attention="causal").by_component["attention_core"]
    assert causal == pytest.approx(kernel * 4097 / 8192)


def test_recompute_ordering_and_per_run():
    cfg = ModelConfig.from_preset("zamba2-2.7b")
    none, sel, full = (flops(cfg, 4096, recompute=r) for r in ("none", "selective", "full"))
    assert none.train_per_token_with_recompute == none.train_per_token
    assert none.train_per_token < sel.train_per_token_with_recompute < full.train_per_token_with_recompute
    extra = sel.by_component["mamba2_ssd"] + sel.by_component["shared_attention_core"]
    assert sel.train_per_token_with_recompute == pytest.approx(sel.train_per_token + extra)
    assert none.per_run(1e9)["train"] == pytest.approx(none.train_per_token * 1e9)


def test_sublayer_flops_sum_to_model():
    cfg = ModelConfig.from_preset("jamba-tiny")
    total = sum(sublayer_flops(cfg, k, 2, 64)["fwd"] for k in cfg.tokens)
    r = flops(cfg, 64, batch=2)
    assert total + r.by_component["logits"] * 128 == pytest.approx(r.forward_per_token * 128)
    one = sublayer_flops(cfg, "e", 2, 64)
    assert one["bwd"] == 2 * one["fwd"] and set(one["terms"]) == {"moe_router", "moe_experts"}


def test_known_cookbook_errors_are_not_repeated():
    cfg = ModelConfig.from_preset("mamba2-2.7b")
    t = sublayer_flops(cfg, "m", 1, 4096)["terms"]
    # out_proj is 2 * d_inner * d per token, not multiplied by d_state
    assert t["mamba2_proj"] == 2 * 4096 * 2560 * (2 * 5120 + 2 * 128 + 80) + 2 * 4096 * 5120 * 2560
    assert sublayer_flops(cfg, "m", 1, 4096)["bwd"] == 2 * sublayer_flops(cfg, "m", 1, 4096)["fwd"]
    z = ModelConfig.from_preset("zamba2-2.7b")
    g1, g2 = (sublayer_flops(z, "g", 1, n)["terms"]["shared_proj"] for n in (100, 200))
    assert g2 == 2 * g1  # the per-call d x d projection is per token


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"seq_len": 0}, "seq_len"),
        ({"seq_len": 8, "batch": -1}, "batch"),
        ({"seq_len": 8, "recompute": "some"}, "recompute"),
        ({"seq_len": 8, "attention": "flash"}, "attention"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        flops(ModelConfig.from_preset("mamba-tiny"), **kwargs)


def test_cpu_path_caps_the_chunk_and_the_planner_follows():
    """Published Zamba2 configs say chunk 256 (GPU kernels); the CPU path runs min(256, cpu_chunk_size)."""
    cfg = _config("mamba2-tiny").replace(**{"mamba2.chunk_size": 256, "mamba2.cpu_chunk_size": 16})
    assert cfg.mamba2.chunk_for("cpu") == 16 and cfg.mamba2.chunk_for("cuda") == 256
    fwd, train, _ = _measure(cfg, 2, 40)
    cpu, gpu = flops(cfg, 40, batch=2, device="cpu"), flops(cfg, 40, batch=2, device="cuda")
    assert cpu.forward_per_token * 80 == pytest.approx(fwd, rel=1e-9)
    assert gpu.forward_per_token > cpu.forward_per_token  # 40 tokens padded to one 256-chunk on GPU

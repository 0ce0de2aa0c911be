"""Inference cache bytes equal the real cache tensors; training memory follows the stated conventions."""

import pytest
import torch

from hybridlm import HybridLM, ModelConfig
from hybridlm.config.presets import tiny_presets
from hybridlm.errors import ConfigError
from hybridlm.plan import memory
from hybridlm.plan.memory import activation_bytes, cache_bytes_by_kind

TINY = tiny_presets()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", TINY)
def test_cache_bytes_equal_allocated_tensors(name, dtype):
    cfg = ModelConfig.from_preset(name)
    model = HybridLM(cfg).to(dtype)
    for batch, max_len in ((1, 7), (3, 50)):
        cache = model.allocate_cache(batch, max_len)
        rep = memory(cfg, batch=batch, seq_len=max_len, dtype_bytes=dtype.itemsize)
        assert rep.inference_cache_bytes == cache.nbytes
        real = cache.bytes_by_kind()
        by_kind = rep.inference_cache_by_kind
        assert by_kind["kv"] == real.get("k", 0) + real.get("v", 0)
        assert by_kind["conv"] == real.get("conv", 0) and by_kind["ssm"] == real.get("ssm", 0)


@pytest.mark.parametrize("name", ["zamba2-tiny", "jamba-tiny"])
def test_cache_bytes_equal_what_generate_allocates(name, monkeypatch):
    cfg = ModelConfig.from_preset(name)
    model = HybridLM(cfg)
    seen = []
    original = model.allocate_cache

    def spy(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(model, "allocate_cache", spy)
    model.generate(torch.tensor([[1, 2, 3, 4, 5]] * 2), max_new_tokens=6)
    assert memory(cfg, batch=2, seq_len=11, dtype_bytes=4).inference_cache_bytes == seen[0].nbytes


def test_kv_grows_with_length_ssm_states_do_not():
    cfg = ModelConfig.from_preset("zamba2-2.7b")
    short, long = cache_bytes_by_kind(cfg, 1, 1000), cache_bytes_by_kind(cfg, 1, 2000)
    assert long["kv"] == 2 * short["kv"]
    assert long["ssm"] == short["ssm"] and long["conv"] == short["conv"]
    assert cache_bytes_by_kind(ModelConfig.from_preset("mamba2-2.7b"), 1, 10**6)["kv"] == 0


def test_kv_cache_is_gqa_aware_with_factor_two():
    cfg = ModelConfig.from_preset("jamba-v0.1")  # 4 attention layers, 8 KV heads of 128
    assert cache_bytes_by_kind(cfg, 1, 4096, 2)["kv"] == 4 * 2 * 8 * 128 * 4096 * 2


def test_sixteen_bytes_per_parameter_and_zero_divides_by_dp_only():
    cfg = ModelConfig.from_preset("llama-2-7b")
    n = 6738415616
    r0 = memory(cfg, batch=1, seq_len=2048, gpus=8)
    assert r0.train_weights_bytes + r0.train_grads_bytes + r0.train_optimizer_bytes == 16 * n
    # 16 GPUs = tp 2 x pp 2 x dp 4: ZeRO divides by 4, not 16. A tp rank holds half of every split matrix
    # and all of the replicated norms (65 of d = 4096)
    elements = memory(cfg, batch=1, seq_len=2048, gpus=16, tp=2, pp=2).train_weights_bytes / 2 * 2  # x pp
    assert elements == (n - 65 * 4096) / 2 + 65 * 4096
    per_gpu = elements / 2  # pp 2
    biggest = 32000 * 4096 / 2 / 2  # the largest tensor (embedding / head) per tp rank and pipeline stage
    for stage, sharded in {0: 0, 1: 12, 2: 14, 3: 16}.items():  # bytes per parameter ZeRO shards over dp
        r = memory(cfg, batch=1, seq_len=2048, gpus=16, tp=2, pp=2, zero=stage)
        total = r.train_weights_bytes + r.train_grads_bytes + r.train_optimizer_bytes
        assert r.dp == 4
        even = (16 - sharded) * per_gpu + sharded * per_gpu / 4
        # ZeRO 1/2 partition whole tensors (as ZeroRedundancyOptimizer): at most one largest tensor above even
        assert even <= total + 1 <= even + sharded * biggest + 16 * 4, (stage, total, even)
        assert (total == pytest.approx(even, rel=1e-4)) == (stage in (0, 3))


def test_activations_shrink_with_recomputation_and_tp():
    cfg = ModelConfig.from_preset("zamba2-1.2b")
    a = {
        r: memory(cfg, batch=2, seq_len=4096, recompute=r).train_activation_bytes
        for r in ("none", "selective", "full")
    }
    assert a["none"] > a["selective"] > a["full"] > 0
    assert memory(cfg, batch=2, seq_len=4096, gpus=2, tp=2).train_activation_bytes == pytest.approx(
        a["none"] / 2
    )
    assert memory(cfg, batch=4, seq_len=4096).train_activation_bytes == pytest.approx(2 * a["none"])


def test_attention_activation_quadratic_term_only_without_recompute():
    cfg = ModelConfig.from_preset("transformer-tiny")
    none = lambda s: activation_bytes(cfg, 1, s, "none")["attention"] / s  # noqa: E731
    sel = lambda s: activation_bytes(cfg, 1, s, "selective")["attention"] / s  # noqa: E731
    assert none(2048) - none(1024) == 4 * 4 * 1024 * 2  # 4 layers x 4 heads x 1024 more keys x 2 bytes
    assert sel(2048) == sel(1024)


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"gpus": 6, "tp": 4}, "multiple of tp"),
        ({"gpus": 2, "tp": 2, "zero": 4}, "zero"),
        ({"gpus": 3, "tp": 3}, "tp=3 must divide"),
        ({"batch": 0}, "batch"),
        ({"recompute": "half"}, "recompute"),
        ({"gpus": 64, "pp": 64}, "pp=64"),
    ],
)
def test_bad_parallel_layouts_name_the_problem(kwargs, msg):
    args = {"batch": 1, "seq_len": 128} | kwargs
    with pytest.raises(ConfigError, match=msg):
        memory(ModelConfig.from_preset("transformer-tiny"), **args)

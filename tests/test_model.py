import pytest
import torch
import torch.nn.functional as F

from hybridlm import HybridLM, HybridLMError, ModelConfig
from hybridlm.config.presets import tiny_presets

TINY = tiny_presets()


def tiny(name):
    return HybridLM(ModelConfig.from_preset(name))


@pytest.mark.parametrize("name", TINY)
def test_incremental_decoding_reproduces_full_forward(name):
    model = tiny(name).eval()
    prompt = torch.randint(0, model.config.vocab_size, (2, 21))
    ids, scores = model.generate(prompt, max_new_tokens=11, return_scores=True)
    with torch.no_grad():
        full = model(ids).logits[:, 20:-1, :model.config.vocab_size]
    assert (full - scores).abs().max().item() <= 1e-4
    assert torch.equal(ids[:, 21:], full.argmax(-1))  # greedy = argmax of the full forward


@pytest.mark.parametrize("name", TINY)
def test_loss_and_every_parameter_gets_a_gradient(name):
    model = tiny(name)
    ids = torch.randint(0, model.config.vocab_size, (4, 33))
    out = model(ids, labels=ids)
    ce = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), ids[:, 1:].reshape(-1))
    expected = ce + (model.config.moe.aux_loss_coef * out.aux_loss if out.aux_loss is not None else 0)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert (out.aux_loss is not None) == ("e" in model.config.tokens)
    out.loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_ignore_index_and_padded_vocab():
    model = tiny("mamba-tiny")  # vocab 500 padded to 504
    assert model.embed.weight.shape[0] == 504
    ids = torch.randint(0, 500, (1, 10))
    labels = ids.clone()
    labels[:, 5:] = -100
    out = model(ids, labels=labels)
    ref = F.cross_entropy(out.logits[0, :4], ids[0, 1:5])
    assert torch.allclose(out.loss, ref, atol=1e-6)
    gen = model.generate(ids, max_new_tokens=20)
    assert gen.max() < 500  # padded ids are never produced


def test_gradient_checkpointing_gives_same_gradients():
    ids = torch.randint(0, 512, (2, 24))
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = tiny("zamba2-tiny")
        model.gradient_checkpointing = ckpt
        model(ids, labels=ids).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model = tiny("zamba2-tiny")
    prompt = torch.randint(0, 512, (2, 5))
    a = model.generate(prompt, 16, do_sample=True, seed=3)
    b = model.generate(prompt, 16, do_sample=True, seed=3)
    c = model.generate(prompt, 16, do_sample=True, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(model.generate(prompt, 16, do_sample=True, top_k=1, seed=5), model.generate(prompt, 16))
    assert torch.equal(model.generate(prompt, 16, do_sample=True, top_p=1e-6, seed=5), model.generate(prompt, 16))


def test_eos_stops_and_pads_with_eos():
    model = tiny("mamba2-tiny")
    prompt = torch.randint(0, 500, (1, 6))
    greedy = model.generate(prompt, 8)
    eos = int(greedy[0, 8])  # the third generated token
    out = model.generate(prompt, 8, eos_token_id=eos)
    assert out.shape[1] == 6 + 3 and int(out[0, -1]) == eos


def test_cache_is_constant_size_for_ssm_and_kv_only_for_attention():
    model = tiny("zamba2-tiny")  # 7 Mamba2 layers, 3 shared-attention calls
    cfg = model.config
    b, max_len = 3, 50
    cache = model.allocate_cache(b, max_len)
    m = cfg.mamba2
    conv = b * (cfg.mamba2_d_inner + 2 * m.ngroups * m.d_state) * (m.d_conv - 1) * 4
    ssm = b * cfg.mamba2_n_heads * m.headdim * m.d_state * 4
    kv = 2 * b * cfg.shared_kv_heads * max_len * cfg.shared_head_dim * 4
    assert cache.nbytes == 7 * (conv + ssm) + 3 * kv
    longer = model.allocate_cache(b, 2 * max_len)
    assert longer.nbytes - cache.nbytes == 3 * kv  # only the KV caches grow with context


def test_user_errors_are_clear():
    model = tiny("mamba2-tiny")
    with pytest.raises(HybridLMError, match="batch, length"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(HybridLMError, match=r"\[0, 499\]"):
        model.generate(torch.tensor([[1, 600]]), 4)
    cache = model.allocate_cache(1, 4)
    with pytest.raises(HybridLMError, match="do not fit"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
    with pytest.raises(HybridLMError, match="ModelConfig"):
        HybridLM({"d_model": 4})


def test_ssd_chunk_size_changes_speed_not_results():
    base = ModelConfig.from_preset("mamba2-tiny")
    torch.manual_seed(0)
    a = HybridLM(base.replace(**{"mamba2.chunk_size": 256, "mamba2.cpu_chunk_size": None})).eval()
    b = HybridLM(base.replace(**{"mamba2.chunk_size": 256})).eval()  # CPU path: chunk 64
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 500, (2, 150))
    with torch.no_grad():
        assert torch.allclose(a(ids).logits, b(ids).logits, atol=1e-4)

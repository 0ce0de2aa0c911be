"""Each layer against an independent reference: a plain per-token recurrence, an explicit formula, or
transformers' own function."""

import math

import pytest
import torch
import torch.nn.functional as F

from hybridlm.layers.attention import Attention, apply_rope, rope_cos_sin
from hybridlm.layers.mamba1 import Mamba1
from hybridlm.layers.mamba2 import Mamba2
from hybridlm.layers.moe import MoE
from hybridlm.layers.norms import GatedRMSNorm
from hybridlm.layers.selective_scan import selective_scan
from hybridlm.layers.ssd import ssd_chunked, ssd_step


def ssd_reference(x, dt, A, B, C, state=None):
    """state_t = exp(dt_t A) state_{t-1} + dt_t x_t B_t^T ; y_t = state_t C_t, token by token in float64."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    x, dt, A, B, C = (t.double() for t in (x, dt, A, B, C))
    s = torch.zeros(b, h, p, n, dtype=torch.float64) if state is None else state.double().clone()
    ys = []
    for t in range(l):
        for head in range(h):
            grp = head // (h // g)
            s[:, head] = torch.exp(dt[:, t, head] * A[head])[:, None, None] * s[:, head] + \
                (dt[:, t, head, None] * x[:, t, head])[:, :, None] * B[:, t, grp][:, None, :]
        ys.append(torch.stack([s[:, hd] @ C[:, t, hd // (h // g)][..., None] for hd in range(h)], 1)[..., 0])
    return torch.stack(ys, 1), s


@pytest.mark.parametrize("l, chunk, g", [(13, 4, 1), (16, 16, 2), (7, 64, 2), (9, 1, 1), (20, 3, 4)])
def test_ssd_chunked_matches_recurrence(l, chunk, g):
    b, h, p, n = 2, 4, 3, 5
    x = torch.randn(b, l, h, p)
    dt = F.softplus(torch.randn(b, l, h))
    A = -torch.rand(h) * 3
    B, C = torch.randn(b, l, g, n), torch.randn(b, l, g, n)
    init = torch.randn(b, h, p, n)
    y, final = ssd_chunked(x, dt, A, B, C, chunk, init)
    y_ref, final_ref = ssd_reference(x, dt, A, B, C, init)
    assert torch.allclose(y.double(), y_ref, atol=1e-4)
    assert torch.allclose(final.double(), final_ref, atol=1e-4)
    # the recurrent step reproduces the same outputs token by token
    state = init.clone()
    steps = torch.stack([ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t]) for t in range(l)], 1)
    assert torch.allclose(steps.double(), y_ref, atol=1e-4)


def test_selective_scan_matches_closed_form():
    """y_t = sum_{s<=t} C_t . (prod_{s<u<=t} exp(dt_u A)) dt_s B_s x_s, evaluated directly in float64."""
    b, l, h, p, n = 2, 9, 2, 3, 4
    x, dt = torch.randn(b, l, h, p), F.softplus(torch.randn(b, l, h, p))
    A = -torch.rand(h, p, n) * 2
    B, C = torch.randn(b, l, h, n), torch.randn(b, l, h, n)
    y, final = selective_scan(x, dt, A, B, C)
    xd, dtd, Ad, Bd, Cd = (t.double() for t in (x, dt, A, B, C))
    y_ref = torch.zeros(b, l, h, p, dtype=torch.float64)
    for t in range(l):
        for s in range(t + 1):
            decay = torch.exp((dtd[:, s + 1:t + 1, ..., None] * Ad).sum(1))  # (b, h, p, n)
            contrib = decay * (dtd[:, s] * xd[:, s])[..., None] * Bd[:, s, :, None, :]
            y_ref[:, t] += (contrib * Cd[:, t, :, None, :]).sum(-1)
    assert torch.allclose(y.double(), y_ref, atol=1e-5)


def test_attention_matches_explicit_softmax_with_gqa_and_rope():
    torch.manual_seed(1)
    att = Attention(24, 16, n_heads=4, n_kv_heads=2, head_dim=6, rope=True, rope_theta=500.0, scale=0.3)
    x = torch.randn(2, 7, 24)
    y = att(x)
    q = att.q_proj(x).view(2, 7, 4, 6).transpose(1, 2)
    k = att.k_proj(x).view(2, 7, 2, 6).transpose(1, 2).repeat_interleave(2, dim=1)
    v = att.v_proj(x).view(2, 7, 2, 6).transpose(1, 2).repeat_interleave(2, dim=1)
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    cos, sin = rope_cos_sin(torch.arange(7), 6, 500.0, torch.float32)
    q, k = apply_rotary_pos_emb(q, k, cos[None], sin[None])
    scores = (q @ k.transpose(-1, -2)) * 0.3 + torch.full((7, 7), float("-inf")).triu(1)
    ref = att.o_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 7, 24))
    assert torch.allclose(y, ref, atol=1e-5)


def test_rope_is_a_rotation_by_relative_position():
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def dot(i, j):
        cq, sq = rope_cos_sin(torch.tensor([i]), 8, 10000.0, torch.float32)
        ck, sk = rope_cos_sin(torch.tensor([j]), 8, 10000.0, torch.float32)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()
    assert torch.allclose(dot(5, 2), dot(13, 10), atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: Mamba2(32, d_state=8, headdim=8, ngroups=2, chunk_size=4),
    lambda: Mamba1(32, d_state=6, n_heads=2, dt_rank=4, inner_norms=True),
    lambda: Attention(32, 32, 4, 2, 8, rope=True),
])
def test_mixer_prefill_in_chunks_then_steps_equals_full(make):
    mixer = make()
    x = torch.randn(2, 19, 32)
    full = mixer(x)
    cache = mixer.allocate_cache(2, 19, torch.float32, "cpu")
    parts = [mixer(x[:, :7], cache, 0), mixer(x[:, 7:15], cache, 7)]
    parts += [mixer(x[:, t:t + 1], cache, t) for t in range(15, 19)]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


def test_moe_matches_per_token_reference_and_balances():
    torch.manual_seed(2)
    moe = MoE(16, 24, n_experts=4, top_k=2, activation="silu", gated=True, bias=True, normalize_topk=True)
    with torch.no_grad():
        moe.up_bias.normal_()
        moe.down_bias.normal_()
    x = torch.randn(3, 5, 16)
    y, aux = moe(x)
    ref = torch.zeros_like(x)
    for i in range(3):
        for t in range(5):
            probs = moe.router(x[i, t]).softmax(-1)
            w, e = probs.topk(2)
            w = w / w.sum()
            for weight, expert in zip(w, e, strict=True):
                h = moe.up[expert] @ x[i, t] + moe.up_bias[expert]
                gate, up = h.chunk(2)
                ref[i, t] += weight * (moe.down[expert] @ (F.silu(gate) * up) + moe.down_bias[expert])
    assert torch.allclose(y, ref, atol=1e-5)
    # a router that sends everything to one expert has aux = E (maximal imbalance)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.bias = torch.nn.Parameter(torch.tensor([10.0, 0.0, 0.0, 0.0]))
    moe.top_k = 1
    _, aux = moe(x)
    assert math.isclose(aux.item(), 4 * 1.0 * torch.softmax(torch.tensor([10.0, 0, 0, 0]), 0)[0].item(), rel_tol=1e-4)


def test_gated_rmsnorm_matches_transformers():
    from transformers.models.mamba2.modeling_mamba2 import MambaRMSNormGated

    ours, theirs = GatedRMSNorm(12, 4, eps=1e-5), MambaRMSNormGated(12, group_size=4, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
    y, z = torch.randn(3, 12), torch.randn(3, 12)
    assert torch.allclose(ours(y, z), theirs(y, z), atol=1e-6)


def test_kernel_dispatch_picks_importable_kernels_and_says_which_path_runs(monkeypatch, caplog):
    import types

    from hybridlm.layers import kernels

    x = torch.zeros(1)
    assert kernels.ssd_kernel(x) is None  # CPU tensors always take the PyTorch path
    monkeypatch.setattr(kernels, "_enabled", lambda t: True)
    monkeypatch.setattr(kernels, "_announced", set())
    fake = types.SimpleNamespace(mamba_chunk_scan_combined=lambda *a, **k: "fast")
    monkeypatch.setattr(kernels, "_module", lambda name: fake if name.endswith("ssd_combined") else None)
    with caplog.at_level("WARNING", logger="hybridlm"):
        assert kernels.ssd_kernel(x)() == "fast"
        assert kernels.ssd_kernel(x)() == "fast"
        assert kernels.selective_scan_kernel(x) is None  # not importable: PyTorch path, announced as slow
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["hybridlm: mamba2 uses mamba_ssm Triton kernels",
                        "hybridlm: mamba1 uses the PyTorch selective scan on CUDA "
                        "(slow: pip install mamba-ssm causal-conv1d)"]

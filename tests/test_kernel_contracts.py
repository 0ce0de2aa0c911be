"""The mamba_ssm kernel paths of Mamba1 and Mamba2, exercised on CPU through stand-ins that enforce the real
kernels' argument contracts (tests/fake_mamba_ssm.py): under bf16 autocast the layers hand the kernels
consistent dtypes (Mamba1's selective scan rejects mixed ones) and Mamba2's chunk scan gets bf16 inputs;
in fp32 the kernel path computes what the PyTorch path does (raw dt, fp32 bias and softplus in the kernel)."""

import pytest
import torch
from fake_mamba_ssm import ContractError, FakeMambaSSM

from hybridlm import HybridLM, ModelConfig
from hybridlm.layers import kernels
from hybridlm.layers.mamba1 import Mamba1
from hybridlm.layers.mamba2 import Mamba2


@pytest.fixture
def fake(monkeypatch):
    stand_in = FakeMambaSSM()
    modules = stand_in.modules()
    monkeypatch.setattr(kernels, "_enabled", lambda t: True)  # as if the tensors were on CUDA
    monkeypatch.setattr(kernels, "_module", lambda name: modules.get(name))
    monkeypatch.setattr(kernels, "_announced", set())
    return stand_in


@pytest.mark.parametrize("preset", ["mamba-tiny", "mamba2-tiny", "zamba2-tiny", "blackmamba-tiny"])
def test_kernels_get_contract_dtypes_under_bf16_autocast(fake, preset):
    torch.manual_seed(0)
    model = HybridLM(ModelConfig.from_preset(preset))
    ids = torch.randint(0, 100, (2, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(ids[:, :-1], shift_labels=ids[:, 1:]).loss
    loss.backward()  # the backward runs through the stand-ins too
    assert torch.isfinite(loss)
    assert fake.calls, "no kernel was called"
    for kind, dtypes in fake.calls:
        assert set(dtypes.values()) == {torch.bfloat16}, (kind, dtypes)  # bf16 compute, one input dtype
    with torch.no_grad():
        fp32 = model(ids[:, :-1], shift_labels=ids[:, 1:]).loss
    assert float(loss.detach()) == pytest.approx(float(fp32), rel=0.02)


def test_the_stand_ins_reject_what_the_real_kernels_reject(fake):
    u = torch.randn(1, 4, 6)
    A = -torch.rand(4, 3)
    with pytest.raises(ContractError, match="B dtype"):  # fp32 inputs with bf16 B: Mamba1's bug under autocast
        fake.selective_scan_fn(u, u.clone(), A, torch.randn(1, 3, 6).bfloat16(), torch.randn(1, 3, 6))
    with pytest.raises(ContractError, match="A must be fp32"):
        fake.selective_scan_fn(u, u.clone(), A.bfloat16(), torch.randn(1, 3, 6), torch.randn(1, 3, 6))
    x, B = torch.randn(1, 6, 2, 4), torch.randn(1, 6, 1, 3)
    with pytest.raises(ContractError, match="one dtype"):
        fake.mamba_chunk_scan_combined(x, torch.rand(1, 6, 2), -torch.rand(2), B.bfloat16(), B.bfloat16(), 4)


@pytest.mark.parametrize("make", [
    lambda: Mamba1(32, d_state=8),
    lambda: Mamba2(32, d_state=16, headdim=8, ngroups=2, chunk_size=8),
], ids=["mamba1", "mamba2"])
def test_kernel_path_computes_what_the_pytorch_path_does(fake, monkeypatch, make):
    torch.manual_seed(0)
    layer = make()
    u = torch.randn(2, 20, 32, requires_grad=True)
    y_kernel = layer(u)
    (y_kernel * torch.linspace(-1, 1, 32)).sum().backward()
    g_kernel = [p.grad.clone() for p in layer.parameters()] + [u.grad.clone()]
    assert fake.calls
    layer.zero_grad()
    u.grad = None
    monkeypatch.setattr(kernels, "_enabled", lambda t: False)
    y_torch = layer(u)
    (y_torch * torch.linspace(-1, 1, 32)).sum().backward()
    g_torch = [p.grad for p in layer.parameters()] + [u.grad]
    torch.testing.assert_close(y_kernel, y_torch, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_kernel, g_torch, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

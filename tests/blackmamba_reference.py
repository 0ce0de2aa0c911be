"""An independent BlackMamba forward, written from Zyphra's published model code (github.com/Zyphra/BlackMamba:
mamba_model.py, mamba_block.py, mamba_layer.py, switch_mlp.py, mlp.py, mamba_config.py) and not from
hybridlm's modules: the same module tree, so the same state-dict names; their from_pretrained's reading
of config.json and pytorch_model.bin; their slow (non-kernel) forward paths.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


def config(fields: dict, activation=F.gelu) -> SimpleNamespace:
    """MambaConfig as their from_pretrained builds it: the named config.json fields, the rest at their
    defaults (activation_func stays F.gelu unless given: their loader never sets it)."""
    return SimpleNamespace(
        num_layers=fields["num_layers"], hidden_size=fields["hidden_size"], state_size=fields["state_size"],
        conv_dimension=fields["conv_dimension"], vocab_size=fields["vocab_size"],
        expansion_factor=fields["expansion_factor"], mamba_moe_layers=fields["mamba_moe_layers"],
        ffn_hidden_size=fields["ffn_hidden_size"], bias=fields["add_bias_linear"],
        add_bias_linear=fields["add_bias_linear"], gated_linear_unit=fields["swiglu"],
        routing_mode=fields.get("routing_mode", "sinkhorn"), layernorm_epsilon=1e-5, conv_bias=True, dt_rank="auto",
        activation_func=activation, max_sequence_length=fields["max_sequence_length"])


class RMSNorm(nn.Module):  # ops/triton/layernorm.py's reference: normalize in fp32, times weight, cast back
    def __init__(self, hidden, eps):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(hidden))

    def forward(self, x):
        xf = x.float()
        out = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return out.to(x.dtype)


class MambaLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.d_state, self.d_conv = c.hidden_size, c.state_size, c.conv_dimension
        self.d_inner = c.expansion_factor * d
        self.dt_rank = math.ceil(d / 16) if c.dt_rank == "auto" else c.dt_rank
        self.in_proj = nn.Linear(d, 2 * self.d_inner, bias=c.bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, self.d_conv, groups=self.d_inner, bias=c.conv_bias,
                                padding=self.d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, self.d_state + 1).float().repeat(self.d_inner, 1)))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d, bias=c.add_bias_linear)

    def forward(self, hidden):
        b, l, _ = hidden.shape
        xz = (self.in_proj.weight @ hidden.reshape(b * l, -1).t()).reshape(-1, b, l).permute(1, 0, 2)  # b d l
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias[:, None]
        A = -torch.exp(self.A_log.float())
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :l])
        x_dbl = self.x_proj(x.permute(0, 2, 1).reshape(b * l, -1))
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (self.dt_proj.weight @ dt.t()).reshape(-1, b, l).permute(1, 0, 2)
        B = B.reshape(b, l, -1).permute(0, 2, 1)
        C = C.reshape(b, l, -1).permute(0, 2, 1)
        y = selective_scan_ref(x, dt, A, B, C, self.D.float(), z, self.dt_proj.bias.float())
        return self.out_proj(y.permute(0, 2, 1))


def selective_scan_ref(u, delta, A, B, C, D, z, delta_bias):
    """mamba_ssm's selective_scan_ref with delta_softplus=True and input-dependent B, C (b, n, l)."""
    dtype = u.dtype
    u, delta = u.float(), delta.float()
    delta = F.softplus(delta + delta_bias[..., None])
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B.float(), u)
    x = A.new_zeros(u.shape[0], A.shape[0], A.shape[1])
    ys = []
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i].float()))
    out = torch.stack(ys, dim=2) + u * D[:, None]
    return (out * F.silu(z.float())).to(dtype)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        f = c.ffn_hidden_size
        self.glu, self.act = c.gated_linear_unit, c.activation_func
        self.linear_fc1 = nn.Linear(c.hidden_size, 2 * f if self.glu else f, bias=c.add_bias_linear)
        self.linear_fc2 = nn.Linear(f, c.hidden_size, bias=c.add_bias_linear)

    def forward(self, h):
        h = self.linear_fc1(h)
        if self.glu:
            h = torch.chunk(h, 2, dim=-1)
            h = self.act(h[0]) * h[1]
        else:
            h = self.act(h)
        return self.linear_fc2(h)


class SwitchMLP(nn.Module):
    def __init__(self, c, n_experts):
        super().__init__()
        self.n, self.routing = n_experts, c.routing_mode
        self.router = nn.Linear(c.hidden_size, n_experts)
        self.local_experts = nn.ModuleList([MLP(c) for _ in range(n_experts)])

    def forward(self, hidden):
        shape = hidden.shape
        route = self.router(hidden).view(-1, self.n)
        route = torch.sigmoid(route) if self.routing == "sinkhorn" else torch.softmax(route, dim=1)
        max_prob, max_ind = torch.max(route, dim=1)
        hidden = hidden.view(-1, shape[-1])
        total = torch.zeros_like(hidden)
        for e, expert in enumerate(self.local_experts):
            idx = (max_ind == e).nonzero()
            total[idx, :] = expert(hidden[idx, :])
        return (total * max_prob[:, None]).view(shape)


class Block(nn.Module):
    def __init__(self, c, mixer):
        super().__init__()
        self.mixer, self.norm = mixer, RMSNorm(c.hidden_size, c.layernorm_epsilon)

    def forward(self, hidden, residual):  # residual_in_fp32, no fused add-norm
        residual = hidden + residual if residual is not None else hidden
        hidden = self.norm(residual.to(self.norm.weight.dtype))
        return self.mixer(hidden), residual.float()


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        blocks = []
        for entry in c.mamba_moe_layers:
            if entry == "r":
                blocks.append(Block(c, MambaLayer(c)))
            elif entry == "1":
                blocks.append(Block(c, MLP(c)))
            else:
                blocks.append(Block(c, SwitchMLP(c, int(entry[-1]))))
        self.layers = nn.ModuleList(blocks)
        self.final_layernorm = nn.LayerNorm(c.hidden_size, eps=c.layernorm_epsilon, bias=True)

    def forward(self, hidden):
        residual = None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        residual = hidden + residual
        return self.final_layernorm(residual.to(self.final_layernorm.weight.dtype))


class MambaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embedding = nn.Embedding(c.vocab_size, c.hidden_size)
        self.decoder = Decoder(c)
        self.output_layer = nn.Linear(c.hidden_size, c.vocab_size, bias=c.add_bias_linear)
        self.output_layer.weight = self.embedding.weight  # share_embeddings_and_output_weights

    def forward(self, ids):
        return self.output_layer(self.decoder(self.embedding(ids)))

    @torch.no_grad()
    def greedy(self, ids, n):
        for _ in range(n):
            ids = torch.cat([ids, self(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
        return ids


def load(directory: Path, activation=F.gelu) -> MambaModel:
    """Their from_pretrained(checkpoint_name=..., config_name=...): config.json fields, torch.load,
    loaded["model"], word embeddings copied to embedding and output_layer, strict load_state_dict."""
    fields = json.loads((directory / "config.json").read_text())
    model = MambaModel(config(fields, activation))
    state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)["model"]
    state["embedding.weight"] = state["embedding.word_embeddings.weight"].clone()
    state["output_layer.weight"] = state.pop("embedding.word_embeddings.weight").clone()
    model.load_state_dict(state)  # strict: every name must match
    return model.eval()


def save_released(model: MambaModel, fields: dict, directory: Path) -> None:
    """The released layout: config.json with the fields their loader reads, {"model": state dict} with the
    embeddings as embedding.word_embeddings.weight and no output layer."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if k not in ("embedding.weight", "output_layer.weight")}
    state["embedding.word_embeddings.weight"] = model.embedding.weight.detach()
    torch.save({"model": state}, directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps(fields))

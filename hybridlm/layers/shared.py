"""Zamba's shared transformer block and the per-invocation parts that go with each call.

    h = norm_2d(concat([x, x0]))                     # hidden first, original embeddings second
    a = attention(h, lora_qkv_j)                     # 2d -> d, scale (head_dim / 2) ** -0.5
    m = mlp(norm_d(a), lora_mlp_j)                   # no residual inside the block
    t = proj_j(m)                                    # d x d, owned by call j
The caller then runs its own Mamba layer as x = x + mamba(norm(x + t)).
"""

from __future__ import annotations

import torch
from torch import nn

from hybridlm.config import ModelConfig
from hybridlm.layers.attention import Attention
from hybridlm.layers.lora import LoRA
from hybridlm.layers.mlp import MLP
from hybridlm.layers.norms import make_norm


class SharedBlock(nn.Module):
    """The weights that every call of this block shares."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        s, d, width = cfg.shared, cfg.d_model, cfg.shared_input_dim
        head_dim = cfg.shared_head_dim
        scale = (head_dim / 2) ** -0.5 if s.attn_scale == "half_head_dim" else head_dim ** -0.5
        self.concat_embeddings = s.concat_embeddings
        self.attn_norm = make_norm(cfg.norm, width, cfg.norm_eps)
        self.attn = Attention(width, d, s.n_heads, cfg.shared_kv_heads, head_dim, rope=s.rope,
                              rope_theta=s.rope_theta, scale=scale)
        self.mlp_norm = make_norm(cfg.norm, d, cfg.norm_eps)
        self.mlp = MLP(d, cfg.shared_ffn_dim, s.activation, s.gated)

    def forward(self, x: torch.Tensor, x0: torch.Tensor, call: SharedCall,
                cache: dict[str, torch.Tensor] | None = None, offset: int = 0, segments=None) -> torch.Tensor:
        h = torch.cat([x, x0], dim=-1) if self.concat_embeddings else x
        a = self.attn(self.attn_norm(h), cache, offset, lora=call.qkv_lora(), segments=segments)
        m = self.mlp(self.mlp_norm(a), lora=call.lora_mlp)
        return call.proj(m)


class SharedCall(nn.Module):
    """What one 'g' token owns: its d x d output projection and its LoRA adapters."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        s, d, width = cfg.shared, cfg.d_model, cfg.shared_input_dim
        self.proj = nn.Linear(d, d, bias=False)
        if s.lora_qkv:
            q_out = s.n_heads * cfg.shared_head_dim
            kv_out = cfg.shared_kv_heads * cfg.shared_head_dim
            self.lora_q = LoRA(width, q_out, s.lora_rank)
            self.lora_k = LoRA(width, kv_out, s.lora_rank)
            self.lora_v = LoRA(width, kv_out, s.lora_rank)
        else:
            self.lora_q = self.lora_k = self.lora_v = None
        ffn_rows = (2 if s.gated else 1) * cfg.shared_ffn_dim
        self.lora_mlp = LoRA(d, ffn_rows, s.lora_rank) if s.lora_mlp else None

    def qkv_lora(self):
        return (self.lora_q, self.lora_k, self.lora_v) if self.lora_q is not None else None


class SharedUnit(nn.Module):
    """One call as a standalone unit (for benchmarks): the shared block with one call's projection and
    adapters, t = shared(x, x0)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.d_model = cfg.d_model
        self.shared = SharedBlock(cfg)
        self.call = SharedCall(cfg)

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.shared(x, x0, self.call)

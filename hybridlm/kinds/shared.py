"""`g`: a call of Zamba's shared transformer block, section `shared`; modules `SharedBlock` (the
weights every call of a block shares, built once per block) and `SharedCall` (what one call owns: its
d x d projection and LoRA adapters) in `hybridlm.layers.shared`.

A call is not a residual sub-layer: it computes t = proj_j(shared_{j % n_blocks}(x, x0)) and the next
token, a Mamba mixer, runs as x = x + mamba(norm(x + t))."""

from __future__ import annotations

from hybridlm.kinds.attention import (
    attention_activation_bytes,
    attention_core_flops,
    attention_params,
    attention_proj_flops,
    attention_tp_plan,
    kv_cache_bytes,
)
from hybridlm.kinds.base import LayerKind
from hybridlm.kinds.counting import linear_flops, mlp_flops, mlp_params, norm_params
from hybridlm.kinds.mlp import mlp_tp_plan
from hybridlm.kinds.tp import Cut, TPPlan, split_parts


class SharedKind(LayerKind):
    token, name, section = "g", "shared", "shared"
    call = True
    core_terms = ("shared_attention_core",)
    bench = {"shared": {}}  # the shared block with one call's projection and LoRA
    bench_inputs = 2  # x and the embeddings x0

    def validate(self, cfg):
        s, width = cfg.shared, cfg.shared_input_dim
        if width % s.n_heads:
            raise ValueError(f"shared.n_heads={s.n_heads} must divide the shared block input width {width}")
        if s.rope and cfg.shared_head_dim % 2:
            raise ValueError(f"shared head_dim={cfg.shared_head_dim} must be even with RoPE")
        if s.lora_rank > min(cfg.d_model, width):
            raise ValueError(f"shared.lora_rank={s.lora_rank} must be <= the adapted width {min(cfg.d_model, width)}")

    # ----- model -----
    def build(self, cfg):
        from hybridlm.layers.shared import SharedCall

        return SharedCall(cfg)

    def build_blocks(self, cfg):
        """The shared blocks, used round-robin by the calls."""
        from hybridlm.layers.shared import SharedBlock

        return [SharedBlock(cfg) for _ in range(cfg.shared.n_blocks)]

    def allocate_cache(self, module, batch, max_len, dtype, device):
        """`module` is the SharedBlock the call runs: each call keeps its own KV cache."""
        return module.attn.allocate_cache(batch, max_len, dtype, device)

    def allocate_sharded_cache(self, module, batch, max_len, dtype, device, cp):
        """Each call's shard of the positions, like a full attention layer's."""
        return cp.sharded_kv(module.attn.allocate_cache(batch, cp.shard_capacity(max_len), dtype, device))

    # ----- planner -----
    def params(self, cfg):
        """What one call owns: the d x d projection and its LoRA pairs (A: in -> r, B: r -> out)."""
        s, d, w, hd, kv, r = cfg.shared, cfg.d_model, cfg.shared_input_dim, cfg.shared_head_dim, cfg.shared_kv_heads, \
            cfg.shared.lora_rank
        lora = 0
        if s.lora_qkv:
            lora += r * (w + s.n_heads * hd) + 2 * r * (w + kv * hd)
        if s.lora_mlp:
            lora += r * (d + (2 if s.gated else 1) * cfg.shared_ffn_dim)
        return {"shared_proj": d * d, "lora": lora}

    def shared_params(self, cfg):
        """Each shared block once: 2d norm, 2d -> d attention, d norm, MLP."""
        s, d, w, nb = cfg.shared, cfg.d_model, cfg.shared_input_dim, cfg.shared.n_blocks
        attn = attention_params(w, d, s.n_heads, cfg.shared_kv_heads, cfg.shared_head_dim)
        return {"shared_attention": nb * attn,
                "shared_mlp": nb * mlp_params(d, cfg.shared_ffn_dim, s.gated, False),
                "norms": nb * (norm_params(cfg.norm, w) + norm_params(cfg.norm, d))}

    def flops(self, cfg, batch, seq_len, attention, device):
        s, d, w, hd, kv = cfg.shared, cfg.d_model, cfg.shared_input_dim, cfg.shared_head_dim, cfg.shared_kv_heads
        t, r = batch * seq_len, s.lora_rank
        rows = (2 if s.gated else 1) * cfg.shared_ffn_dim
        lora = 0
        if s.lora_qkv:
            lora += linear_flops(t, w, r) + linear_flops(t, r, s.n_heads * hd)
            lora += 2 * (linear_flops(t, w, r) + linear_flops(t, r, kv * hd))
        if s.lora_mlp:
            lora += linear_flops(t, d, r) + linear_flops(t, r, rows)
        return {
            "shared_attention_proj": attention_proj_flops(t, w, d, s.n_heads, kv, hd),
            "shared_attention_core": attention_core_flops(batch, seq_len, s.n_heads, hd, attention),
            "shared_mlp": mlp_flops(t, d, cfg.shared_ffn_dim, s.gated),
            "lora": lora,
            "shared_proj": linear_flops(t, d, d),  # per call and per token, not a constant
        }

    def final_projection_width(self, cfg):
        return cfg.d_model  # the call's d x d projection

    def cache_bytes(self, cfg, batch, max_len, dtype_bytes):
        return {"kv": kv_cache_bytes(batch, cfg.shared_kv_heads, max_len, cfg.shared_head_dim, dtype_bytes)}

    def activation_bytes_per_token(self, cfg, seq_len, recompute, dtype_bytes):
        """The attention part on the 2d concat (concat, norm out, q k v, attention out, probabilities);
        then MLP norm in/out, up and activation outputs, the projection's input; LoRA A outputs."""
        s, d, a, f = cfg.shared, cfg.d_model, dtype_bytes, cfg.shared_ffn_dim
        keep = attention_activation_bytes(cfg.shared_input_dim, s.n_heads, cfg.shared_kv_heads, cfg.shared_head_dim,
                                          seq_len, recompute, a)
        keep += a * (2 * d + (2 if s.gated else 1) * f + f + d)
        keep += a * s.lora_rank * (3 * int(s.lora_qkv) + int(s.lora_mlp))
        return keep

    def tp_splits(self, cfg):
        return [("shared heads", cfg.shared.n_heads), ("shared kv heads", cfg.shared_kv_heads)]

    def tp_plan(self, cfg, tp):
        """What a call owns: the LoRA B matrices split like the projections they adapt; the A matrices see
        the region's input and are replicated with partial gradients; the d x d projection replicated."""
        s, cuts, partial = cfg.shared, {}, []
        if s.lora_qkv:
            for name in ("lora_q", "lora_k", "lora_v"):
                cuts[f"{name}.b.weight"] = Cut(0)
                partial.append(f"{name}.a.weight")
        if s.lora_mlp:
            f = cfg.shared_ffn_dim
            cuts["lora_mlp.b.weight"] = split_parts(0, f, f) if s.gated else Cut(0)
            partial.append("lora_mlp.a.weight")
        return TPPlan(cuts=cuts, partial=tuple(partial), enter=())

    def block_tp_plan(self, cfg, tp):
        """A shared block: its attention and its MLP, each its own region."""
        attn = attention_tp_plan(cfg.shared.n_heads, cfg.shared_kv_heads, tp, prefix="attn.")
        mlp = mlp_tp_plan(cfg.shared_ffn_dim, cfg.shared.gated, False, prefix="mlp.")
        return TPPlan(cuts={**attn.cuts, **mlp.cuts}, enter=attn.enter + mlp.enter, leave=attn.leave + mlp.leave,
                      local=attn.local)

    def sizing(self, cfg, multiple):
        div = f"divisible by {multiple}"
        return [("shared head_dim", cfg.shared_head_dim, multiple, f"head dim {div}"),
                ("shared.ffn_dim", cfg.shared_ffn_dim, multiple, div)]

    # ----- bench -----
    def bench_config(self, cfg, d_model):
        from hybridlm.kinds import KINDS, MAMBA1

        # a call must feed a Mamba mixer: one the config has, else Mamba1 (its section validates at any width)
        follower = next((t for t in cfg.tokens if KINDS[t].ssm), MAMBA1.token)
        return {"layers": f"{self.token} {follower}"}

    def bench_unit(self, cfg):
        from hybridlm.layers.shared import SharedUnit

        return SharedUnit(cfg)

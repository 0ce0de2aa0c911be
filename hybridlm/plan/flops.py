"""Matmul FLOPs of `HybridLM(cfg)`, written once per operation, as the code computes them.

Convention: FLOPs = 2 x multiply-accumulates of the matrix products the model runs (nn.Linear, the
einsums and batched matmuls, SDPA): exactly what `torch.utils.flop_counter.FlopCounterMode` counts.
Left out, as FlopCounterMode leaves them out: elementwise work (norms, activations, gating,
softplus/exp, RoPE, the depthwise causal conv, which the model runs as k shifted multiply-adds, the
Mamba1 recurrence's multiply-adds, SSD decays and segment sums, residual adds, softmax, the
cross-entropy) and bias adds.

Backward: every counted product runs twice in autograd, once for the gradient of each operand (a
weight's gradient and the input's gradient; for activation x activation products like QK^T and the
SSD einsums, both operands carry gradients). The first layer's input gradient is computed too, since
the embedding table trains and so its output requires grad. Hence backward = 2 x forward, per term.

Attention: `attention="kernel"` counts QK^T and PV over the full s x s square, as SDPA's FLOP formula
does (and as a dense kernel computes it); `"causal"` counts only the s(s+1)/2 (query, key) pairs
a causal mask keeps (the ideal a block-skipping kernel approaches).

Checking against FlopCounterMode (tests/test_plan_flops.py): torch 2.13 has no formula for the CPU
flash-attention ops SDPA dispatches to on CPU (it counts attention as 0 there); the tests register
the missing SDPA formulas and then agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridlm.config import ModelConfig
from hybridlm.errors import ConfigError
from hybridlm.plan.params import mamba2_in_proj_width

BACKWARD_FACTOR = 2  # gradient w.r.t. each of the two operands of every product (see module docstring)
RECOMPUTE = ("none", "selective", "full")
ATTENTION = ("kernel", "causal")
CORE_TERMS = ("attention_core", "shared_attention_core", "mamba2_ssd", "mamba1_scan")
"""Terms that selective recomputation runs again in the backward pass (the sequence-mixing cores)."""


def linear_flops(tokens: int, n_in: int, n_out: int) -> int:
    return 2 * tokens * n_in * n_out


def einsum_flops(contracted: int, others: int) -> int:
    """A two-operand einsum contracting one index of size `contracted` over `others` output/batch
    elements. torch.einsum runs a size-1 contraction as an elementwise product (no matmul), so 0."""
    return 0 if contracted == 1 else 2 * contracted * others


def attention_core_flops(
    batch: int, seq_len: int, n_heads: int, head_dim: int, attention: str = "kernel"
) -> int:
    """QK^T and PV for every query head (GQA shares K/V, not the work).
    kernel: s^2 pairs; causal: s(s+1)/2."""
    pairs = seq_len * seq_len if attention == "kernel" else seq_len * (seq_len + 1) // 2
    return 2 * 2 * batch * n_heads * head_dim * pairs


def matmul_flops(contracted: int, others: int) -> int:
    """A batched matmul (`@`) contracting `contracted` over `others` output elements; unlike einsum, a
    size-1 contraction still runs as a matmul."""
    return 2 * contracted * others


def ssd_flops(cfg: ModelConfig, batch: int, seq_len: int, device: str = "cuda") -> dict[str, int]:
    """The four batched matmuls of `hybridlm.layers.ssd.ssd_chunked` on the sequence padded to a multiple
    of the chunk size Q (pad = (-l) % Q), per layer:
      cb      C B^T within each chunk, per group:        2 b Lp Q G N
      y_diag  (L o CB) (x dt) within each chunk, per head: 2 b Lp Q H P
      states  each chunk's final state:                  2 b Lp H P N
      y_off   C_t exp(a) S_c from the chunk start state:  2 b Lp H P N
    The intra-chunk terms grow with Q, the state terms with N; the chunk-to-chunk recurrence is
    elementwise. Q is the chunk the model uses on `device` (`Mamba2Config.chunk_for`: GPU kernels use
    chunk_size, the CPU path caps it at cpu_chunk_size)."""
    m = cfg.mamba2
    q, g, n, h, p = m.chunk_for(device), m.ngroups, m.d_state, cfg.mamba2_n_heads, m.headdim
    lp = seq_len + (-seq_len) % q
    return {
        "cb": matmul_flops(n, batch * lp * q * g),
        "y_diag": matmul_flops(q, batch * lp * h * p),
        "states": matmul_flops(q, batch * lp // q * h * p * n),
        "y_off": matmul_flops(n, batch * lp * h * p),
    }


def sublayer_terms(
    cfg: ModelConfig, kind: str, batch: int, seq_len: int, attention: str = "kernel", device: str = "cuda"
) -> dict[str, int]:
    """Forward FLOPs of ONE sub-layer of `kind` (r, m, a, f, e, g) on (batch, seq_len), by term."""
    t, d = batch * seq_len, cfg.d_model
    if kind == "r":
        m, di, r, n = cfg.mamba1, cfg.mamba1_d_inner, cfg.mamba1_dt_rank, cfg.mamba1.d_state
        return {
            "mamba1_proj": linear_flops(t, d, 2 * di)
            + linear_flops(t, di, d)  # in_proj, out_proj
            # per-head x_proj (contracts headdim) and dt_proj (contracts dt_rank), as einsums over heads
            + einsum_flops(di // m.n_heads, t * m.n_heads * (r + 2 * n))
            + einsum_flops(r, t * di),
            "mamba1_scan": einsum_flops(n, t * di),  # y = C . state (the recurrence itself is elementwise)
        }
    if kind == "m":
        ssd = ssd_flops(cfg, batch, seq_len, device)
        return {
            "mamba2_proj": linear_flops(t, d, mamba2_in_proj_width(cfg))
            + linear_flops(t, cfg.mamba2_d_inner, d),
            "mamba2_ssd": sum(ssd.values()),
        }
    if kind == "a":
        a, hd, kv = cfg.attention, cfg.attention_head_dim, cfg.attention_kv_heads
        return {
            "attention_proj": linear_flops(t, d, (a.n_heads + 2 * kv) * hd)
            + linear_flops(t, a.n_heads * hd, d),
            "attention_core": attention_core_flops(batch, seq_len, a.n_heads, hd, attention),
        }
    if kind == "f":
        rows = (2 if cfg.mlp.gated else 1) * cfg.mlp_ffn_dim
        return {"mlp": linear_flops(t, d, rows) + linear_flops(t, cfg.mlp_ffn_dim, d)}
    if kind == "e":
        m = cfg.moe
        rows = (2 if m.gated else 1) * cfg.moe_ffn_dim
        routed = t * m.top_k  # every token goes to exactly top_k experts (no capacity drop)
        return {
            "moe_router": linear_flops(t, d, m.n_experts),
            "moe_experts": linear_flops(routed, d, rows) + linear_flops(routed, cfg.moe_ffn_dim, d),
        }
    if kind == "g":
        s, w, hd, kv = cfg.shared, cfg.shared_input_dim, cfg.shared_head_dim, cfg.shared_kv_heads
        r = s.lora_rank
        rows = (2 if s.gated else 1) * cfg.shared_ffn_dim
        lora = 0
        if s.lora_qkv:
            lora += linear_flops(t, w, r) + linear_flops(t, r, s.n_heads * hd)
            lora += 2 * (linear_flops(t, w, r) + linear_flops(t, r, kv * hd))
        if s.lora_mlp:
            lora += linear_flops(t, d, r) + linear_flops(t, r, rows)
        return {
            "shared_attention_proj": linear_flops(t, w, (s.n_heads + 2 * kv) * hd)
            + linear_flops(t, s.n_heads * hd, d),
            "shared_attention_core": attention_core_flops(batch, seq_len, s.n_heads, hd, attention),
            "shared_mlp": linear_flops(t, d, rows) + linear_flops(t, cfg.shared_ffn_dim, d),
            "lora": lora,
            "shared_proj": linear_flops(t, d, d),  # per call and per token, not a constant
        }
    raise ConfigError(f"unknown layer kind {kind!r}; allowed: r, m, a, f, e, g")


def sublayer_flops(cfg: ModelConfig, kind: str, batch: int, seq_len: int, attention: str = "kernel",
                   device: str = "cuda") -> dict:
    """Forward and backward FLOPs of one sub-layer of `kind` at (batch, seq_len): dict(fwd=, bwd=, terms=)."""
    _check_sizes(batch=batch, seq_len=seq_len)
    _check_choice("attention", attention, ATTENTION)
    terms = sublayer_terms(cfg, kind, batch, seq_len, attention, device)
    fwd = sum(terms.values())
    return {"fwd": fwd, "bwd": BACKWARD_FACTOR * fwd, "terms": terms}


def final_projection_flops(cfg: ModelConfig, kind: str, batch: int, seq_len: int) -> int:
    """The last matmul of a sub-layer, whose output nothing saves for backward. torch's non-reentrant
    checkpoint (HybridLM.gradient_checkpointing) stops recomputing once every saved tensor is back, so
    full recomputation skips it. MoE has none: the gating multiply saves the experts' outputs."""
    t, d = batch * seq_len, cfg.d_model
    width = {
        "r": cfg.mamba1_d_inner,
        "m": cfg.mamba2_d_inner,
        "a": cfg.attention.n_heads * cfg.attention_head_dim,
        "f": cfg.mlp_ffn_dim,
        "g": d,
    }.get(kind)
    return 0 if width is None else linear_flops(t, width, d)


def logits_flops(cfg: ModelConfig, tokens: int) -> int:
    """Final projection onto the (padded) vocabulary; the embedding lookup itself has no matmul."""
    return linear_flops(tokens, cfg.d_model, cfg.padded_vocab_size)


@dataclass
class FlopReport:
    """Per-token FLOPs at `seq_len` (averaged over the positions of a sequence, which matters for attention).

    `train_per_token` = forward + backward, no recomputation. `train_per_token_with_recompute` adds the
    forward work that `recompute` runs again: 'selective' the sequence-mixing cores (CORE_TERMS),
    'full' every sub-layer except its final projection and not the logits (exactly what
    HybridLM.gradient_checkpointing runs: see `final_projection_flops`)."""

    seq_len: int
    batch: int
    recompute: str
    attention: str
    forward_per_token: float
    backward_per_token: float
    train_per_token: float
    train_per_token_with_recompute: float
    by_component: dict[str, float] = field(default_factory=dict)

    def per_run(self, tokens: float) -> dict[str, float]:
        """Totals for a training run of `tokens` tokens."""
        if tokens < 0:
            raise ConfigError(f"tokens must be >= 0, got {tokens}")
        return {
            "forward": self.forward_per_token * tokens,
            "backward": self.backward_per_token * tokens,
            "train": self.train_per_token * tokens,
            "train_with_recompute": self.train_per_token_with_recompute * tokens,
        }

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "seq_len",
                "batch",
                "recompute",
                "attention",
                "forward_per_token",
                "backward_per_token",
                "train_per_token",
                "train_per_token_with_recompute",
            )
        } | {"by_component": dict(self.by_component)}


def forward_terms(cfg: ModelConfig, batch: int, seq_len: int, attention: str = "kernel",
                  device: str = "cuda") -> dict[str, int]:
    """Whole-model forward FLOPs on (batch, seq_len), summed by term over the layer stack."""
    out: dict[str, int] = {"logits": logits_flops(cfg, batch * seq_len)}
    per_kind = {k: sublayer_terms(cfg, k, batch, seq_len, attention, device) for k in set(cfg.tokens)}
    for kind in cfg.tokens:
        for name, v in per_kind[kind].items():
            out[name] = out.get(name, 0) + v
    return {k: v for k, v in out.items() if v}


def flops(
    cfg: ModelConfig, seq_len: int, *, batch: int = 1, recompute: str = "none", attention: str = "kernel",
    device: str = "cuda",
) -> FlopReport:
    """FLOPs of HybridLM(cfg) on sequences of `seq_len` tokens (see the module docstring for what counts).
    `device` matters only for the SSD chunk size (`Mamba2Config.chunk_for`): 'cuda' (planning GPU runs) or
    'cpu' (what the PyTorch path runs here)."""
    _check_sizes(batch=batch, seq_len=seq_len)
    _check_choice("recompute", recompute, RECOMPUTE)
    _check_choice("attention", attention, ATTENTION)
    terms = forward_terms(cfg, batch, seq_len, attention, device)
    fwd = sum(terms.values())
    if recompute == "none":
        extra = 0
    elif recompute == "selective":
        extra = sum(v for k, v in terms.items() if k in CORE_TERMS)
    else:  # every sub-layer again, up to its last saved tensor; not the logits
        extra = (
            fwd - terms["logits"] - sum(final_projection_flops(cfg, k, batch, seq_len) for k in cfg.tokens)
        )
    tokens = batch * seq_len
    return FlopReport(
        seq_len=seq_len,
        batch=batch,
        recompute=recompute,
        attention=attention,
        forward_per_token=fwd / tokens,
        backward_per_token=BACKWARD_FACTOR * fwd / tokens,
        train_per_token=(1 + BACKWARD_FACTOR) * fwd / tokens,
        train_per_token_with_recompute=((1 + BACKWARD_FACTOR) * fwd + extra) / tokens,
        by_component={k: v / tokens for k, v in terms.items()},
    )


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

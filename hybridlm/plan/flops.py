"""Matmul FLOPs of `HybridLM(cfg)`, written once per operation, as the code computes them.

Convention: FLOPs = 2 x multiply-accumulates of the matrix products the model runs (nn.Linear, the
einsums and batched matmuls, SDPA): exactly what `torch.utils.flop_counter.FlopCounterMode` counts.
Each kind's terms are written in its spec (`hybridlm.kinds`); this module sums them over the stack.
Left out, as FlopCounterMode leaves them out: elementwise work (norms, activations, gating,
softplus/exp, RoPE, the depthwise causal conv, which the model runs as k shifted multiply-adds, the
Mamba1 recurrence's multiply-adds, SSD decays and segment sums, residual adds, softmax, the
cross-entropy) and bias adds.

Backward: every counted product runs twice in autograd, once for the gradient of each operand (a
weight's gradient and the input's gradient; for activation x activation products like QK^T and the
SSD einsums, both operands carry gradients). The first layer's input gradient is computed too, since
the embedding table trains and so its output requires grad. Hence backward = 2 x forward, per term,
except where a kind's spec knows better (`LayerKind.backward_flops`: the SSD on a single chunk).

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
from hybridlm.kinds import KINDS
from hybridlm.kinds.counting import (
    BACKWARD_FACTOR,  # noqa: F401  (2: see the module docstring)
    linear_flops,
)
from hybridlm.kinds.mamba2 import ssd_flops  # noqa: F401  (public: the SSD's matmuls by term)

RECOMPUTE = ("none", "selective", "full")
ATTENTION = ("kernel", "causal")
CORE_TERMS = tuple(term for k in KINDS.values() for term in k.core_terms)
"""Terms that selective recomputation runs again in the backward pass (the sequence-mixing cores)."""


def sublayer_terms(
    cfg: ModelConfig, kind: str, batch: int, seq_len: int, attention: str = "kernel", device: str = "cuda"
) -> dict[str, int]:
    """Forward FLOPs of ONE sub-layer of `kind` (a pattern token) on (batch, seq_len), by term."""
    if kind not in KINDS:
        raise ConfigError(f"unknown layer kind {kind!r}; allowed: {', '.join(KINDS)}")
    return KINDS[kind].flops(cfg, batch, seq_len, attention, device)


def sublayer_flops(cfg: ModelConfig, kind: str, batch: int, seq_len: int, attention: str = "kernel",
                   device: str = "cuda") -> dict:
    """Forward and backward FLOPs of one sub-layer of `kind` at (batch, seq_len): dict(fwd=, bwd=, terms=)."""
    _check_sizes(batch=batch, seq_len=seq_len)
    _check_choice("attention", attention, ATTENTION)
    terms = sublayer_terms(cfg, kind, batch, seq_len, attention, device)
    bwd = KINDS[kind].backward_flops(cfg, batch, seq_len, attention, device, terms)
    return {"fwd": sum(terms.values()), "bwd": sum(bwd.values()), "terms": terms}


def final_projection_flops(cfg: ModelConfig, kind: str, batch: int, seq_len: int) -> int:
    """The last matmul of a sub-layer, whose output nothing saves for backward. torch's non-reentrant
    checkpoint (HybridLM.gradient_checkpointing) stops recomputing once every saved tensor is back, so
    full recomputation skips it. MoE has none: the gating multiply saves the experts' outputs."""
    width = KINDS[kind].final_projection_width(cfg)
    return 0 if width is None else linear_flops(batch * seq_len, width, cfg.d_model)


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
    return _stack_terms(cfg, batch, seq_len, attention, device)[0]


def _stack_terms(cfg: ModelConfig, batch: int, seq_len: int, attention: str, device: str):
    """(forward, backward) FLOPs by term, summed over the layer stack, with the logits."""
    logits = logits_flops(cfg, batch * seq_len)
    fwd: dict[str, int] = {"logits": logits}
    bwd: dict[str, int] = {"logits": BACKWARD_FACTOR * logits}
    per_kind = {}
    for token in set(cfg.tokens):
        terms = sublayer_terms(cfg, token, batch, seq_len, attention, device)
        per_kind[token] = terms, KINDS[token].backward_flops(cfg, batch, seq_len, attention, device, terms)
    for token in cfg.tokens:
        for out, terms in zip((fwd, bwd), per_kind[token], strict=True):
            for name, v in terms.items():
                out[name] = out.get(name, 0) + v
    return {k: v for k, v in fwd.items() if v}, bwd


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
    terms, backward = _stack_terms(cfg, batch, seq_len, attention, device)
    fwd, bwd = sum(terms.values()), sum(backward.values())
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
        backward_per_token=bwd / tokens,
        train_per_token=(fwd + bwd) / tokens,
        train_per_token_with_recompute=(fwd + bwd + extra) / tokens,
        by_component={k: v / tokens for k, v in terms.items()},
    )


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

"""GEMM-friendly sizing advice after Anthony et al., "The Case for Co-Designing Model Architectures with
Hardware" (arXiv 2401.14489): GEMM dimensions should be divisible by 64 (tensor-core tiles and
128-byte fp16 alignment; larger powers of two are better), the vocabulary padded to a multiple of 64,
and head dimensions a multiple of 64 so the attention (and SSD) batched GEMMs are efficient.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hybridlm.config import ModelConfig

MULTIPLE = 64


@dataclass
class Advice:
    field: str
    value: int
    ok: bool
    rule: str
    suggest: list[int]

    def to_dict(self) -> dict:
        return asdict(self)


def nearest_multiples(value: int, multiple: int = MULTIPLE) -> list[int]:
    """The multiples of `multiple` just below and just above `value` (one if value is a multiple)."""
    lo = value // multiple * multiple
    if lo == value:
        return [value]
    return [m for m in (lo, lo + multiple) if m > 0]


def _check(field: str, value: int, multiple: int, rule: str, up_only: bool = False) -> Advice:
    ok = value % multiple == 0
    suggest = [] if ok else nearest_multiples(value, multiple)[-1 if up_only else 0 :]
    return Advice(field, value, ok, rule, suggest)


def sizing_advice(cfg: ModelConfig) -> list[Advice]:
    """One entry per dimension the sizing rules cover; `ok` False: change it to a `suggest`ed value."""
    used = set(cfg.tokens)
    div = f"divisible by {MULTIPLE}"
    out = [_check("d_model", cfg.d_model, MULTIPLE, div)]
    vocab = _check(
        "vocab (padded)",
        cfg.padded_vocab_size,
        MULTIPLE,
        f"pad the vocabulary to a multiple of {MULTIPLE} (pad_vocab_multiple: {MULTIPLE})",
        up_only=True,
    )
    out.append(vocab)
    if "a" in used:
        out.append(_check("attention head_dim", cfg.attention_head_dim, MULTIPLE, f"head dim {div}"))
    if "g" in used:
        out.append(_check("shared head_dim", cfg.shared_head_dim, MULTIPLE, f"head dim {div}"))
        out.append(_check("shared.ffn_dim", cfg.shared_ffn_dim, MULTIPLE, div))
    if "f" in used:
        out.append(_check("mlp.ffn_dim", cfg.mlp_ffn_dim, MULTIPLE, div))
    if "e" in used:
        out.append(_check("moe.ffn_dim", cfg.moe_ffn_dim, MULTIPLE, div))
    if "m" in used:
        out.append(_check("mamba2 d_inner", cfg.mamba2_d_inner, MULTIPLE, div))
        out.append(_check("mamba2.headdim", cfg.mamba2.headdim, MULTIPLE, f"head dim {div}"))
        out.append(_check("mamba2.d_state", cfg.mamba2.d_state, 16, "divisible by 16 (SSD state GEMMs)"))
    if "r" in used:
        out.append(_check("mamba1 d_inner", cfg.mamba1_d_inner, MULTIPLE, div))
    return out

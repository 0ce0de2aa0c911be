"""GEMM-friendly sizing advice after Anthony et al., "The Case for Co-Designing Model Architectures with
Hardware" (arXiv 2401.14489): GEMM dimensions should be divisible by 64 (tensor-core tiles and
128-byte fp16 alignment; larger powers of two are better), the vocabulary padded to a multiple of 64,
and head dimensions a multiple of 64 so the attention (and SSD) batched GEMMs are efficient.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hybridlm.config import ModelConfig
from hybridlm.kinds import kinds_in

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
    for spec in kinds_in(cfg.tokens):
        out += [_check(*rule) for rule in spec.sizing(cfg, MULTIPLE)]
    return out

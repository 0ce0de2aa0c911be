"""The layer-pattern language, and readers for the layer descriptions users already have.

A model is a sequence of residual sub-layers, written as whitespace-separated tokens:

    r   Mamba1 mixer            x = x + mamba1(norm(x))
    m   Mamba2 mixer            x = x + mamba2(norm(x))
    a   attention               x = x + attn(norm(x))
    w   sliding-window attention x = x + attn_window(norm(x))   (the last attention.window tokens)
    f   dense MLP               x = x + mlp(norm(x))
    e   mixture of experts      x = x + moe(norm(x))
    g   shared-block call       t = proj_j(shared_{j % n_blocks}(x, x0)); the next token must be a
                                Mamba mixer, which becomes x = x + mamba(norm(x + t))  (Zamba)

Repetition: `TOKEN*N` and `(TOKENS)*N`, nestable. Example, Zamba2-1.2B (38 Mamba2 layers,
a shared block before layers 5, 11, ..., 35):  `m*5 (g m m*5)*6 m*2`.

Foreign formats read here:
- Zyphra cookbook layer strings: `r` Mamba1, `m` Mamba2, `a` attention, `g` shared block, and a
  number N = an MoE layer with N experts (BlackMamba: `r 8 r 8 ...`).
- Megatron-LM hybrid layer pattern: one character per layer, `M` Mamba2, `*` attention,
  `-` MLP, `E` MoE; `|` (pipeline-stage separators) is ignored.
- mamba_ssm's `attn_layer_idx` (see `from_attn_layer_idx`).
"""

from __future__ import annotations

import re

from hybridlm.errors import ConfigError
from hybridlm.kinds import KINDS

TOKEN_NAMES = {  # the language's tokens; each is a kind of hybridlm.kinds.KINDS, which says what it is
    "r": "mamba1",
    "m": "mamba2",
    "a": "attention",
    "w": "sliding_window",
    "f": "mlp",
    "e": "moe",
    "g": "shared",
}
TOKENS = tuple(TOKEN_NAMES)
MAMBA = tuple(t for t, k in KINDS.items() if k.ssm)  # mixers a shared-block call may feed

_LEX = re.compile(r"\s*(\(|\)\*\d+|\)|[A-Za-z]+(?:\*\d+)?|\S)")
MAX_SUBLAYERS = 10_000  # far beyond any published model (hundreds); keeps a typo like m*1000000000 a one-line error


def _too_many(pattern: str) -> ConfigError:
    shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
    return ConfigError(f"layers: pattern {shown!r} expands to more than {MAX_SUBLAYERS:,} sub-layers, the most allowed")


def _count(text: str, pattern: str) -> int:
    if len(text) > 9:
        raise _too_many(pattern)
    return int(text)


def expand(pattern: str) -> list[str]:
    """Expand a pattern with repetitions into a flat list of single-letter tokens."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigError("layers: the layer pattern is empty; write tokens such as 'm m g m' (allowed: r m a f e g)")
    pieces = _LEX.findall(pattern)
    stack: list[list[str]] = [[]]
    for piece in pieces:
        if piece == "(":
            stack.append([])
        elif piece.startswith(")"):
            if len(stack) == 1:
                raise ConfigError(f"layers: unbalanced ')' in pattern {pattern!r}")
            group = stack.pop()
            count = _count(piece[2:], pattern) if piece.startswith(")*") else 1
            if count < 1:
                raise ConfigError(f"layers: repeat count must be >= 1, got {piece!r}")
            if len(stack[-1]) + len(group) * count > MAX_SUBLAYERS:
                raise _too_many(pattern)
            stack[-1].extend(group * count)
        else:
            name, _, count = piece.partition("*")
            if name not in TOKENS:
                raise ConfigError(
                    f"layers: unknown token {name!r} in pattern {pattern!r}; allowed: "
                    + ", ".join(f"{t} ({TOKEN_NAMES[t]})" for t in TOKENS)
                )
            n = _count(count, pattern) if count else 1
            if count and n < 1:
                raise ConfigError(f"layers: repeat count must be >= 1, got {piece!r}")
            if len(stack[-1]) + n > MAX_SUBLAYERS:
                raise _too_many(pattern)
            stack[-1].extend([name] * n)
    if len(stack) != 1:
        raise ConfigError(f"layers: unbalanced '(' in pattern {pattern!r}")
    tokens = stack[0]
    if not tokens:
        raise ConfigError(f"layers: pattern {pattern!r} has no layers")
    _check_order(tokens)
    return tokens


def _check_order(tokens: list[str]) -> None:
    for i, tok in enumerate(tokens):
        if KINDS[tok].call and (i + 1 >= len(tokens) or tokens[i + 1] not in MAMBA):
            after = tokens[i + 1] if i + 1 < len(tokens) else "the end"
            raise ConfigError(
                f"layers: a shared-block call 'g' (position {i}) must be followed by a Mamba mixer "
                f"'r' or 'm', found {after!r}"
            )


def compress(tokens: list[str], max_unit: int = 16) -> str:
    """Write tokens back as a compact pattern: at each position take the repeated unit (up to
    `max_unit` tokens) that covers the most tokens, e.g. Zamba2-1.2B -> 'm*5 (g m*6)*5 g m*3'."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        best_u, best_reps = 1, 1
        for u in range(1, max_unit + 1):
            unit = tokens[i:i + u]
            if len(unit) < u:
                break
            reps = 1
            while tokens[i + reps * u:i + (reps + 1) * u] == unit:
                reps += 1
            if reps > 1 and u * reps > best_u * best_reps:
                best_u, best_reps = u, reps
        unit = tokens[i:i + best_u]
        if best_reps == 1:
            out.append(unit[0])
        elif best_u == 1:
            out.append(f"{unit[0]}*{best_reps}")
        else:
            out.append(f"({compress(unit, max_unit)})*{best_reps}")
        i += best_u * best_reps
    return " ".join(out)


def from_cookbook(layer_string: str) -> tuple[str, int | None]:
    """Zyphra cookbook layer string -> (pattern, number of experts or None).

    Numbers mean an MoE layer with that many experts; all MoE layers must agree on the count.
    """
    tokens: list[str] = []
    experts: set[int] = set()
    for piece in layer_string.replace(",", " ").split():
        if piece.isdigit():
            if int(piece) < 1:
                raise ConfigError(f"layers: MoE expert count must be >= 1 in cookbook string, got {piece}")
            experts.add(int(piece))
            tokens.append("e")
        elif piece in ("r", "m", "a", "g"):
            tokens.append(piece)
        else:
            raise ConfigError(
                f"layers: unknown cookbook token {piece!r}; allowed: r (Mamba1), m (Mamba2), a (attention), "
                "g (shared block), a number (MoE with that many experts)"
            )
    if len(experts) > 1:
        raise ConfigError(f"layers: MoE layers with different expert counts {sorted(experts)} are not supported")
    if not tokens:
        raise ConfigError("layers: the cookbook layer string is empty")
    _check_order(tokens)
    return " ".join(tokens), (experts.pop() if experts else None)


_MEGATRON = {"M": "m", "*": "a", "-": "f", "E": "e"}


def from_megatron(hybrid_pattern: str) -> str:
    """Megatron-LM `hybrid_override_pattern` (e.g. 'M-M-M*-') -> our pattern."""
    tokens = []
    for ch in hybrid_pattern.strip():
        if ch in "| ":
            continue
        if ch not in _MEGATRON:
            raise ConfigError(
                f"layers: unknown Megatron pattern symbol {ch!r}; allowed: M (Mamba2), * (attention), "
                "- (MLP), E (MoE), | (stage separator)"
            )
        tokens.append(_MEGATRON[ch])
    if not tokens:
        raise ConfigError("layers: the Megatron hybrid pattern is empty")
    return " ".join(tokens)


def from_attn_layer_idx(n_layer: int, attn_layer_idx: list[int], ssm: str = "m", mlp: bool = False) -> str:
    """mamba_ssm MixerModel layout: layer i is attention if i in attn_layer_idx else an SSM
    (`ssm` = 'm' for Mamba2, 'r' for Mamba1); with d_intermediate > 0 each mixer is followed by an MLP."""
    if ssm not in MAMBA:
        raise ConfigError(f"layers: ssm must be 'r' (Mamba1) or 'm' (Mamba2), got {ssm!r}")
    if isinstance(n_layer, bool) or not isinstance(n_layer, int) or not 1 <= n_layer * (1 + bool(mlp)) <= MAX_SUBLAYERS:
        raise ConfigError(f"layers: n_layer must be a whole number from 1 to {MAX_SUBLAYERS:,}, got {n_layer!r}")
    if not isinstance(attn_layer_idx, (list, tuple)) or not all(isinstance(i, int) for i in attn_layer_idx):
        raise ConfigError(f"layers: attn_layer_idx must be a list of layer numbers, got {attn_layer_idx!r}")
    bad = [i for i in attn_layer_idx if not 0 <= i < n_layer]
    if bad:
        raise ConfigError(f"layers: attn_layer_idx {bad} outside 0..{n_layer - 1}")
    tokens = []
    for i in range(n_layer):
        tokens.append("a" if i in set(attn_layer_idx) else ssm)
        if mlp:
            tokens.append("f")
    return " ".join(tokens)


def to_megatron(tokens: list[str]) -> str:
    """Our tokens -> Megatron hybrid pattern (only for patterns Megatron can express)."""
    inverse = {v: k for k, v in _MEGATRON.items()}
    missing = sorted({t for t in tokens if t not in inverse})
    if missing:
        raise ConfigError(f"layers: Megatron patterns cannot express tokens {missing}")
    return "".join(inverse[t] for t in tokens)

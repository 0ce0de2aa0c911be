"""Numbers for people: a count with its noun, a byte size in the unit that keeps it readable, a large count."""

from __future__ import annotations

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def plural(n: int, noun: str, plural_noun: str | None = None) -> str:
    """`1 document`, `2 documents`, `1,024 shards` (thousands separated)."""
    return f"{n:,} {noun if n == 1 else plural_noun or noun + 's'}"


def binary_bytes(n: float) -> str:
    """A size in the largest binary unit it reaches, four significant digits: `512 B`, `1.5 KiB`, `384 MiB`,
    `2.263 GiB` (never `0.000 GiB` for a small one)."""
    value, unit = float(n), _BINARY[0]
    for unit in _BINARY:
        if abs(value) < 1024 or unit == _BINARY[-1]:
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.4g} {unit}"


def large_count(n: float) -> str:
    """A parameter or token count: `432.5 k`, `21.97 M`, `1.215 B`; below 1,000 as it is."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.4g} {suffix}"
    return f"{n:g}"

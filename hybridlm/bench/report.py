"""Showing and saving benchmark records: rich tables, JSON (a list of records), CSV and plots.

A record is a flat dict of str -> number/str/bool, so every format can hold it without a schema.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from hybridlm.errors import HybridLMError

Record = dict[str, Any]


@dataclass(frozen=True)
class Column:
    """One table column: the record key, its header and how to format a value."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str


def human_bytes(n: float) -> str:
    """1024-based size as nccl-tests and most people read it: 4096 -> '4K'."""
    for unit in ("", "K", "M", "G"):
        if abs(n) < 1024 or unit == "G":
            return f"{n:g}{unit}" if unit else f"{int(n)}"
        n /= 1024
    return f"{n:g}G"


def fmt_float(digits: int) -> Callable[[Any], str]:
    return lambda v: f"{v:.{digits}f}"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def render_table(
    records: Sequence[Record],
    columns: Sequence[Column],
    title: str | None = None,
    console: Console | None = None,
) -> None:
    cells = [[col.fmt(rec[col.key]) if col.key in rec else "" for col in columns] for rec in records]
    # Light box, no vertical rules, and columns never squeezed: numbers are not to be cut off.
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for j, col in enumerate(columns):
        width = max([len(col.header), *(len(row[j]) for row in cells)])
        table.add_column(col.header, justify="right", no_wrap=True, min_width=width)
    for row in cells:
        table.add_row(*row)
    (console or Console()).print(table, crop=False)


def write_json(path: str | Path, records: Sequence[Record]) -> None:
    Path(path).write_text(json.dumps(list(records), indent=2) + "\n")


def read_json(path: str | Path) -> list[Record]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise HybridLMError(f"{p}: no such file; pass a JSON file written by `bench ... --json`") from None
    except json.JSONDecodeError as err:
        raise HybridLMError(f"{p}: not valid JSON ({err.msg}); pass a file written by --json") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise HybridLMError(f"{p}: expected a JSON list of records (objects), as written by --json")
    return data


def write_csv(path: str | Path, records: Sequence[Record]) -> None:
    keys: list[str] = []
    for rec in records:
        keys.extend(k for k in rec if k not in keys)
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)


def write_outputs(records: Sequence[Record], json_path: Path | None, csv_path: Path | None) -> None:
    """The `--json` / `--csv` options every bench command shares."""
    if json_path is not None:
        write_json(json_path, records)
    if csv_path is not None:
        write_csv(csv_path, records)


def plot_series(
    records: Sequence[Record],
    *,
    x: str,
    y: str,
    group: str,
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    marks: Sequence[tuple[float, str]] = (),
) -> None:
    """One line per value of `group`, `y` against `x`; `marks` draws labelled vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[Any, list[Record]] = {}
    for rec in records:
        groups.setdefault(rec[group], []).append(rec)
    for name, recs in groups.items():
        recs = sorted(recs, key=lambda r: r[x])
        ax.plot([r[x] for r in recs], [r[y] for r in recs], marker="o", ms=3, label=str(name))
    for xv, label in marks:
        ax.axvline(xv, ls="--", lw=0.8, color="grey")
        ax.annotate(label, (xv, ax.get_ylim()[1]), fontsize=8, rotation=90, va="top", ha="right")
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

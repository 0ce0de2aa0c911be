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


LINE_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))  # (line style, marker) per `style` value


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
    style: str | None = None,
) -> None:
    """Draw `series_figure(...)` into `path` (PNG)."""
    import matplotlib.pyplot as plt
    from matplotlib.legend import Legend

    fig = series_figure(records, x=x, y=y, group=group, title=title, xlabel=xlabel, ylabel=ylabel, logx=logx,
                        logy=logy, marks=marks, style=style)
    legends = [a for ax in fig.axes for a in ax.get_children() if isinstance(a, Legend)]
    fig.savefig(path, dpi=120, bbox_inches="tight", bbox_extra_artists=legends)  # the legends beside the axes too
    plt.close(fig)


def series_figure(
    records: Sequence[Record],
    *,
    x: str,
    y: str,
    group: str,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    marks: Sequence[tuple[float, str]] = (),
    style: str | None = None,
):
    """`y` against `x`, one colour per value of `group`; with `style`, one line per (group, style) pair, the style
    value drawn as line style and marker (e.g. fwd solid, fwd_bwd dashed), with a legend for each. Records holding
    `{y}_low` and `{y}_high` get a shaded band (the spread of the trials). `marks` draws vertical lines named in the
    legend. Legends sit outside the axes, so they never cover a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    groups = list(dict.fromkeys(rec[group] for rec in records))
    styles = list(dict.fromkeys(rec[style] for rec in records)) if style else [None]
    colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for gi, name in enumerate(groups):
        colour = colours[gi % len(colours)]
        for si, st in enumerate(styles):
            recs = sorted((r for r in records if r[group] == name and (style is None or r[style] == st)),
                          key=lambda r: r[x])
            if not recs:
                continue
            line, marker = LINE_STYLES[si % len(LINE_STYLES)]
            xs = [r[x] for r in recs]
            ax.plot(xs, [r[y] for r in recs], linestyle=line, marker=marker, ms=4, lw=1.5, color=colour,
                    label=str(name) if style is None else None)
            if all(f"{y}_low" in r and f"{y}_high" in r for r in recs):
                ax.fill_between(xs, [r[f"{y}_low"] for r in recs], [r[f"{y}_high"] for r in recs], color=colour,
                                alpha=0.15, lw=0)
    mark_styles = ((":", "black"), ("--", "tab:red"), ("-.", "tab:green"))
    for k, (xv, label) in enumerate(marks):
        line, colour = mark_styles[k % len(mark_styles)]
        ax.axvline(xv, ls=line, lw=1.2, color=colour, label=label if style is None else None)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if style is None:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        by_colour = [Line2D([], [], color=colours[i % len(colours)], lw=2.5, label=str(name))
                     for i, name in enumerate(groups)]
        by_style = [Line2D([], [], color="0.3", linestyle=LINE_STYLES[i % len(LINE_STYLES)][0],
                           marker=LINE_STYLES[i % len(LINE_STYLES)][1], ms=4, label=str(value))
                    for i, value in enumerate(styles)]
        by_style += [Line2D([], [], color=mark_styles[k % 3][1], linestyle=mark_styles[k % 3][0], label=label)
                     for k, (_, label) in enumerate(marks)]
        first = ax.legend(handles=by_colour, title=group, fontsize=8, title_fontsize=8, loc="upper left",
                          bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.add_artist(first)
        ax.legend(handles=by_style, title=style, fontsize=8, title_fontsize=8, loc="lower left",
                  bbox_to_anchor=(1.01, 0.0), borderaxespad=0)
    fig.tight_layout()
    return fig

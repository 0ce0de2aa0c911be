"""The recall plot: accuracy against context length, one panel per task, one line per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hybridlm.eval.output import save_figure
from hybridlm.eval.recall.tasks import TASKS, chance

TITLES = {"mqar": "multi-query associative recall", "needle": "needle in a haystack", "copy": "copying"}


def plot_recall(curves: Mapping[str, Sequence[dict]], path: str | Path, title: str = "In-context recall",
                metric: str = "accuracy", vocab: int | None = None) -> Path:
    """curves: model label -> rows of `evaluate_recall`. With the task `vocab`, a dashed line marks chance.
    Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if any(r["task"] == t for rows in curves.values() for r in rows)]
    width = max(7.0, 4.2 * len(tasks) + 0.6)
    fig, axes = plt.subplots(1, len(tasks), figsize=(width, 4.2), sharey=True, squeeze=False)
    lengths = sorted({r["length"] for rows in curves.values() for r in rows})
    for ax, task in zip(axes[0], tasks, strict=True):
        for label, rows in curves.items():
            pts = sorted((r["length"], r[metric]) for r in rows if r["task"] == task)
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", lw=2, ms=5, label=label)
        if vocab is not None:
            ax.axhline(chance(task, vocab), ls="--", lw=1, color="grey")
            ax.annotate("chance", (lengths[-1], chance(task, vocab)), xytext=(0, 3), textcoords="offset points",
                        fontsize=8, color="grey", ha="right")
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(TITLES.get(task, task), fontsize=11)
        ax.set_xlabel("context length (tokens)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = min(len(labels), max(2, int(width // 2.3)))
    rows = -(-len(labels) // ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, fontsize=10)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.07 * rows + 0.02, 1, 1))
    out = save_figure(fig, path)
    plt.close(fig)
    return out

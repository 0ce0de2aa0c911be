"""PNG plots of a run: training (and held-out) loss, and the LR, against the step.

Held-out points are labelled with their values; a run that starts from trained weights (annealing, train.init_from)
also shows the held-out loss of those weights at step 0 ("before"), so the plot tells what the run changed.
"""

from __future__ import annotations

from pathlib import Path


def plot_run(records: list[dict], out_dir: Path, eval_before: dict | None = None) -> list[Path]:
    """OUTPUT/plots/loss.png (`loss_figure`) and lr.png."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = [r["step"] for r in records]
    paths = []
    fig = loss_figure(records, eval_before)
    paths.append(out_dir / "loss.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(steps, [r["lr"] for r in records], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / "lr.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def loss_figure(records: list[dict], eval_before: dict | None = None):
    """Training loss, and held-out loss with its points labelled ("before" and "after" when the run started from
    trained weights)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(steps, [r["loss"] for r in records], label="train loss", lw=1, color="tab:blue")
    ev = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
    if eval_before is not None:
        ev = [(0, eval_before["loss"])] + ev
    if ev:
        xs, ys = zip(*ev, strict=True)
        ax.plot(xs, ys, "o--", color="tab:orange", ms=6, label="held-out loss")
        labelled = ev if len(ev) <= 6 else [ev[0], ev[-1]]
        for k, (x, y) in enumerate(labelled):
            final = "after" if eval_before is not None else "final"
            name = "before" if eval_before is not None and k == 0 else final if k == len(labelled) - 1 else ""
            text = f"{name}: {y:.3f}" if name else f"{y:.3f}"
            last = k == len(labelled) - 1 and k > 0
            ax.annotate(text, (x, y), xytext=(-8, -16) if last else (6, 8), textcoords="offset points", fontsize=9,
                        color="tab:orange", ha="right" if last else "left", fontweight="bold" if name else "normal")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_xlim(left=0)
    ax.margins(y=0.15)  # room for the value labels
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if eval_before is not None:
        ax.set_title(f"held-out loss {eval_before['loss']:.3f} -> {ev[-1][1]:.3f} over {steps[-1]} steps",
                     fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig

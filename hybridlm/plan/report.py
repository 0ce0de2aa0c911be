"""One plan as a JSON-ready dict, and its rendering as rich tables and a comparison plot."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from hybridlm.config import ModelConfig
from hybridlm.config.pattern import compress
from hybridlm.plan.budget import flop_budget, model_budget, training_days
from hybridlm.plan.flops import flops
from hybridlm.plan.memory import memory
from hybridlm.plan.params import params
from hybridlm.plan.sizing import sizing_advice
from hybridlm.units import binary_bytes, large_count


def build_plan(
    cfg: ModelConfig,
    *,
    seq_len: int = 4096,
    batch: int = 1,
    tokens: float | None = None,
    gpus: int = 1,
    tp: int = 1,
    pp: int = 1,
    zero: int = 0,
    ep: int = 1,
    master_weights: bool = True,
    recompute: str = "none",
    attention: str = "kernel",
    dtype_bytes: int = 2,
    accelerator: str | float = "h100",
    days: float | None = None,
    mfu: float = 0.4,
    device: str = "cuda",
) -> dict:
    """Everything the planner knows about `cfg`, as plain data (the `--json` output).

    Stable keys: params.total, params.active, flops.forward_per_token, flops.train_per_token,
    memory.inference_cache_bytes (for `batch` sequences of `seq_len` tokens)."""
    p = params(cfg)
    f = flops(cfg, seq_len, batch=batch, recompute=recompute, attention=attention, device=device)
    causal = flops(cfg, seq_len, batch=batch, recompute=recompute, attention="causal", device=device)
    m = memory(
        cfg,
        batch=batch,
        seq_len=seq_len,
        dtype_bytes=dtype_bytes,
        gpus=gpus,
        tp=tp,
        pp=pp,
        zero=zero,
        ep=ep,
        master_weights=master_weights,
        recompute=recompute,
    )
    out = {
        "model": {
            "name": cfg.name,
            "d_model": cfg.d_model,
            "n_layers": cfg.n_layers,
            "layers": compress(cfg.tokens),
            "vocab_size": cfg.padded_vocab_size,
        },
        "params": {"total": p.total, "active": p.active, "by_component": p.by_component},
        "flops": f.to_dict()
        | {
            "forward_per_token_causal": causal.forward_per_token,
            "train_per_token_causal": causal.train_per_token,
        },
        "memory": m.to_dict(),
        "sizing": [a.to_dict() for a in sizing_advice(cfg)],
    }
    budget = {}
    if days is not None:
        c = flop_budget(accelerator, gpus, days, mfu)
        budget = model_budget(cfg, c, seq_len, recompute) | {
            "accelerator": str(accelerator),
            "gpus": gpus,
            "days": days,
            "mfu": mfu,
        }
    if tokens is not None:
        out["flops"]["per_run"] = f.per_run(tokens)
        budget["tokens_requested"] = tokens
        budget["days_for_tokens"] = training_days(cfg, tokens, seq_len, accelerator, gpus, mfu, recompute)
    if budget:
        out["budget"] = budget
    return out


def _si(x: float, unit: str = "") -> str:
    for div, suffix in (
        (1e21, "Z"),
        (1e18, "E"),
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
    ):
        if abs(x) >= div:
            return f"{x / div:.3g} {suffix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def render(plan: dict, console: Console) -> None:
    """Rich tables for one plan."""
    mo, p, f, m = plan["model"], plan["params"], plan["flops"], plan["memory"]
    console.print(
        f"[bold]{mo['name']}[/]: d_model={mo['d_model']}, {mo['n_layers']} layers, '{mo['layers']}'"
    )
    t = Table(title="Parameters")
    t.add_column("component")
    t.add_column("params", justify="right")
    for k, v in p["by_component"].items():
        t.add_row(k, f"{v:,}")
    t.add_row("[bold]total[/]", f"[bold]{p['total']:,}[/]")
    t.add_row("active per token", f"{p['active']:,}")
    console.print(t)
    t = Table(title=f"FLOPs per token at seq_len {f['seq_len']} (matmuls; attention: {f['attention']})")
    t.add_column("term")
    t.add_column("forward", justify="right")
    for k, v in f["by_component"].items():
        t.add_row(k, _si(v))
    t.add_row("[bold]forward[/]", f"[bold]{_si(f['forward_per_token'])}[/]")
    t.add_row("backward", _si(f["backward_per_token"]))
    t.add_row("train (fwd+bwd)", _si(f["train_per_token"]))
    t.add_row(f"train + recompute ({f['recompute']})", _si(f["train_per_token_with_recompute"]))
    t.add_row("forward, causal ideal", _si(f["forward_per_token_causal"]))
    if "per_run" in f:
        t.add_row("train, whole run", _si(f["per_run"]["train_with_recompute"], "FLOP"))
    console.print(t)
    t = Table(title=f"Memory (batch {m['batch']}, seq_len {m['seq_len']}, {m['dtype_bytes']}-byte dtype)")
    t.add_column("item")
    t.add_column("bytes", justify="right")
    t.add_row("inference weights", binary_bytes(m["weights_bytes"]))
    for k, v in m["inference_cache_by_kind"].items():
        if v:
            t.add_row(f"inference cache: {k}", binary_bytes(v))
    t.add_row("[bold]inference total[/]", f"[bold]{binary_bytes(m['inference_total_bytes'])}[/]")
    layout = f"gpus {m['gpus']} = dp {m['dp']} x tp {m['tp']} x pp {m['pp']}, ZeRO {m['zero']}"
    if m["ep"] > 1:
        layout += f", experts over ep {m['ep']}"
    t.add_row(f"train per GPU ({layout})", "")
    for k in ("weights", "grads", "optimizer", "activation"):
        t.add_row(f"  {k}", binary_bytes(m[f"train_{k}_bytes"]))
    t.add_row("[bold]  train total per GPU[/]", f"[bold]{binary_bytes(m['train_total_bytes'])}[/]")
    console.print(t)
    if "budget" in plan:
        t = Table(title="Budget")
        t.add_column("item")
        t.add_column("value", justify="right")
        for k, v in plan["budget"].items():
            t.add_row(k, _si(v) if isinstance(v, float) and k != "mfu" else str(v))
        console.print(t)
    bad = [a for a in plan["sizing"] if not a["ok"]]
    for a in bad:
        console.print(f"[yellow]sizing[/]: {a['field']} = {a['value']}: {a['rule']}; try {a['suggest']}")
    if not bad:
        console.print("[green]sizing[/]: all checked dimensions are GEMM-friendly (multiples of 64)")


def render_compare(plans: list[dict], console: Console) -> None:
    t = Table(
        title=f"Comparison at batch {plans[0]['memory']['batch']}, seq_len {plans[0]['flops']['seq_len']}"
    )
    t.add_column("")
    for p in plans:
        t.add_column(p["model"]["name"], justify="right")
    rows = [
        ("params", lambda p: large_count(p["params"]["total"])),
        ("active params", lambda p: large_count(p["params"]["active"])),
        ("forward FLOPs/token", lambda p: _si(p["flops"]["forward_per_token"])),
        ("train FLOPs/token", lambda p: _si(p["flops"]["train_per_token"])),
        ("weights", lambda p: binary_bytes(p["memory"]["weights_bytes"])),
        ("inference cache", lambda p: binary_bytes(p["memory"]["inference_cache_bytes"])),
        ("inference total", lambda p: binary_bytes(p["memory"]["inference_total_bytes"])),
        ("train per GPU", lambda p: binary_bytes(p["memory"]["train_total_bytes"])),
    ]
    for name, fn in rows:
        t.add_row(name, *(fn(p) for p in plans))
    console.print(t)


def plot_compare(
    cfgs: list[ModelConfig],
    path: str | Path,
    batch: int = 1,
    dtype_bytes: int = 2,
    lengths: list[int] | None = None,
) -> Path:
    """PNG: inference memory (weights + cache) and forward FLOPs per token against context length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = lengths or [2**k for k in range(9, 18)]
    fig, (ax_m, ax_f) = plt.subplots(1, 2, figsize=(11, 4.2))
    for cfg in cfgs:
        mem = [
            memory(cfg, batch=batch, seq_len=n, dtype_bytes=dtype_bytes).inference_total_bytes / 2**30
            for n in lengths
        ]
        fl = [flops(cfg, n).forward_per_token / 1e9 for n in lengths]
        ax_m.plot(lengths, mem, marker="o", label=cfg.name)
        ax_f.plot(lengths, fl, marker="o", label=cfg.name)
    for ax, ylabel in ((ax_m, f"inference memory, batch {batch} (GiB)"), (ax_f, "forward GFLOPs per token")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("Weights + cache, and compute per token, against context length")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

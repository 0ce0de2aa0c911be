"""`hybridlm plan SOURCE [overrides]` and `hybridlm plan compare A B C [--plot out.png]`."""

from __future__ import annotations

import json

import typer
import yaml
from rich.console import Console
from typer.core import TyperCommand

from hybridlm.config import ModelConfig
from hybridlm.errors import ConfigError
from hybridlm.plan.report import build_plan, plot_compare, render, render_compare

_NAMED = {
    "d_model": "d_model",
    "layers": "layers",
    "vocab_size": "vocab_size",
    "ffn_dim": "mlp.ffn_dim",
    "n_heads": "attention.n_heads",
    "n_kv_heads": "attention.n_kv_heads",
    "chunk_size": "mamba2.chunk_size",
}


def apply_overrides(cfg: ModelConfig, named: dict[str, object], settings: list[str]) -> ModelConfig:
    """Named flags (--d-model ...) and generic `--set key.sub=value` overrides, validated by ModelConfig."""
    overrides = {_NAMED[k]: v for k, v in named.items() if v is not None}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. mamba2.d_state=64), got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return cfg.replace(**overrides) if overrides else cfg


def plan(
    sources: list[str] = typer.Argument(
        ...,
        metavar="MODEL",
        help="A model: preset, config file (YAML/JSON/config.json), exported model, checkpoint or run directory; "
        "or 'compare' followed by several of them.",
    ),
    d_model: int = typer.Option(None, "--d-model", help="Override d_model."),
    layers: str = typer.Option(None, "--layers", help="Override the layer pattern, e.g. 'm m m g m'."),
    vocab_size: int = typer.Option(None, "--vocab-size", help="Override vocab_size."),
    ffn_dim: int = typer.Option(None, "--ffn-dim", help="Override mlp.ffn_dim."),
    n_heads: int = typer.Option(None, "--n-heads", help="Override attention.n_heads."),
    n_kv_heads: int = typer.Option(None, "--n-kv-heads", help="Override attention.n_kv_heads."),
    chunk_size: int = typer.Option(None, "--chunk-size", help="Override mamba2.chunk_size."),
    settings: list[str] = typer.Option([], "--set", help="Any field as KEY=VALUE, e.g. mamba2.d_state=64."),
    seq_len: int = typer.Option(4096, "--seq-len", help="Sequence / context length."),
    batch: int = typer.Option(1, "--batch", help="Sequences per micro-batch (per data-parallel rank)."),
    tokens: float = typer.Option(None, "--tokens", help="Training tokens (for per-run FLOPs and days)."),
    gpus: int = typer.Option(1, "--gpus", help="GPUs of the training job (memory per GPU, budgets)."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel degree."),
    pp: int = typer.Option(1, "--pp", help="Pipeline-parallel degree."),
    zero: int = typer.Option(0, "--zero", help="ZeRO stage 0-3 (shards over the data-parallel degree)."),
    ep: int = typer.Option(1, "--ep", help="Expert-parallel degree (MoE experts split over ep data-parallel ranks)."),
    master_weights: bool = typer.Option(
        True, "--master-weights/--no-master-weights",
        help="Low-precision weights plus an fp32 master copy in the optimizer (16 bytes/param); without: the "
        "weights are the fp32 master, as hybridlm train keeps them (use --dtype-bytes 4).",
    ),
    recompute: str = typer.Option("none", "--recompute", help="none | selective | full"),
    attention: str = typer.Option("kernel", "--attention", help="kernel (full s^2, headline) | causal"),
    device: str = typer.Option("cuda", "--device", help="cuda | cpu: the SSD chunk size the FLOPs assume "
                               "(GPU kernels use mamba2.chunk_size, the CPU path caps it at cpu_chunk_size)"),
    dtype_bytes: int = typer.Option(2, "--dtype-bytes", help="Bytes per weight/activation (2 for bf16)."),
    accelerator: str = typer.Option(
        "h100", "--accelerator", help="a100 | h100 | h200 | b200 | mi300x | peak FLOP/s"
    ),
    days: float = typer.Option(
        None, "--days", help="Training days: turns gpus x accelerator into a FLOP budget."
    ),
    mfu: float = typer.Option(0.4, "--mfu", help="Model FLOPs utilization assumed for budgets."),
    plot: str = typer.Option(
        None, "--plot", help="compare: write a PNG of memory and FLOPs vs context length."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Parameters, FLOPs, memory, budget and sizing advice for a model, computed from its config alone.

    Several models side by side: hybridlm plan compare A B ... (see hybridlm plan compare --help)."""
    from hybridlm.config.resolve import resolve_config

    compare = sources[0] == "compare"
    names = sources[1:] if compare else sources
    if not names:
        raise ConfigError("plan compare needs at least one model to compare")
    if not compare and len(names) > 1:
        raise ConfigError(f"plan takes one model (got {len(names)}); use 'hybridlm plan compare A B ...'")
    if plot and not compare:
        raise ConfigError("--plot is for 'hybridlm plan compare'")
    named = {
        "d_model": d_model,
        "layers": layers,
        "vocab_size": vocab_size,
        "ffn_dim": ffn_dim,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "chunk_size": chunk_size,
    }
    cfgs = [apply_overrides(resolve_config(n), named, settings) for n in names]
    kw = dict(
        seq_len=seq_len,
        batch=batch,
        tokens=tokens,
        gpus=gpus,
        tp=tp,
        pp=pp,
        zero=zero,
        ep=ep,
        master_weights=master_weights,
        recompute=recompute,
        attention=attention,
        device=device,
        dtype_bytes=dtype_bytes,
        accelerator=accelerator,
        days=days,
        mfu=mfu,
    )
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"--device must be cuda or cpu, got {device!r}")
    plans = [build_plan(c, **kw) for c in cfgs]
    if plot:
        plot_compare(cfgs, plot, batch=batch, dtype_bytes=dtype_bytes)
    if as_json:
        typer.echo(json.dumps(plans if compare else plans[0], indent=2))
        return
    console = Console(width=110)
    if compare:
        render_compare(plans, console)
        if plot:
            console.print(f"plot written to {plot}")
    else:
        render(plans[0], console)


COMPARE_HELP = """Compare several models side by side: parameters, FLOPs per token, inference and training memory;
--plot draws memory and FLOPs against context length. Each MODEL is anything `hybridlm plan` takes (preset, config
file, exported model, checkpoint or run directory); the options apply to every model.

Example: hybridlm plan compare zamba2-2.7b llama-2-7b mamba2-2.7b --seq-len 32768 --plot compare.png"""


class PlanCommand(TyperCommand):
    """`plan` with `plan compare` as its second form: `hybridlm plan compare --help` explains compare."""

    def get_help(self, ctx):
        args = ctx.meta.get("plan_args") or []
        if not args or args[0] != "compare":
            return super().get_help(ctx)
        saved, name = self.help, ctx.info_name
        self.help, ctx.info_name = COMPARE_HELP, f"{name} compare"
        try:
            return super().get_help(ctx)
        finally:
            self.help, ctx.info_name = saved, name

    def parse_args(self, ctx, args):
        ctx.meta["plan_args"] = list(args)
        return super().parse_args(ctx, args)


def register(app: typer.Typer) -> None:
    app.command("plan", cls=PlanCommand)(plan)

"""`hybridlm train` and `hybridlm anneal`: thin shells over `run_training` and `run_anneal`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from hybridlm.errors import ConfigError, HybridLMError

console = Console(stderr=True)
_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
OVERWRITE = typer.Option(
    False, "--overwrite", help="OUTPUT holds another run: delete its checkpoints, metrics and exports first."
)
ALLOW_CHANGES = typer.Option(
    False, "--allow-changes", help="--resume with data/optimizer/schedule/batch settings that differ from the run's."
)
REPLAN_SCHEDULE = typer.Option(
    False, "--replan-schedule", help="--resume with another train.steps: stretch the LR schedule over the new "
    "length (default: keep the original schedule; the LR stays at its end after the old last step)."
)


def example_config() -> str:
    from hybridlm.train.example import EXAMPLE_CONFIG

    return EXAMPLE_CONFIG


def _summary(result: dict) -> None:
    ev = result.get("eval") or {}
    tps = result.get("tokens_per_s")
    mfu = result.get("mfu")
    console.print(
        f"[bold]done[/]: step {result['steps']}, {result['tokens']:,} tokens, "
        f"loss {result['final_loss']:.4f}"
        + (f", eval loss {ev['loss']:.4f} (ppl {ev['ppl']:.1f})" if ev else "")
        + (f", {tps:,.0f} tok/s" if tps else "")
        + (f", MFU {mfu:.1%}" if mfu is not None else ", MFU n/a")
        + f"\noutput: {result['output_dir']}"
    )


def train(
    ctx: typer.Context,
    config: Path = typer.Argument(None, help="Run config YAML (see --example-config)."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Output directory (metrics, checkpoints, plots, model)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest valid checkpoint in OUTPUT."),
    overwrite: bool = OVERWRITE,
    allow_changes: bool = ALLOW_CHANGES,
    replan_schedule: bool = REPLAN_SCHEDULE,
    example: bool = typer.Option(
        False, "--example-config", help="Print a complete, commented config and exit."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result summary as JSON on stdout."),
    nproc: int = typer.Option(
        1, "--nproc", help="Start N local processes (as torchrun --standalone --nproc_per_node N would); "
        "distributed.mode / tp / ep say how they split the work."
    ),
) -> int | None:
    """Pretrain a model on packed token shards. Override any field with --section.key VALUE."""
    if example:
        typer.echo(example_config(), nl=False)
        return None
    from hybridlm.train.config import RunConfig, parse_cli_overrides
    from hybridlm.train.loop import run_training

    if output is None:
        raise ConfigError("--output / -o is required")
    overrides = parse_cli_overrides(ctx.args)
    if config is None:
        saved = output / "config.yaml"
        if not (resume and saved.is_file()):
            raise ConfigError("give a CONFIG.yaml (or --resume in an OUTPUT that has config.yaml)")
        config = saved
    cfg = RunConfig.from_yaml(config, overrides)
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1:
        return _launch(cfg, nproc)
    result = run_training(cfg, output, resume=resume, overwrite=overwrite, allow_changes=allow_changes,
                          replan_schedule=replan_schedule)
    if result.get("rank", 0) != 0:
        return
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _summary(result)
    return None


def _launch(cfg, nproc: int) -> int:
    """Check the layout here (one-line errors), then run this same command (without --nproc) in `nproc`
    processes under torchrun."""
    import os
    import subprocess
    import sys

    from hybridlm.parallel.mesh import ParallelDims
    from hybridlm.parallel.shards import validate

    d = cfg.distributed
    dims = ParallelDims(nproc, d.tp, d.ep, d.sequence_parallel)
    if dims.data > 1 and d.mode == "none":
        raise ConfigError(f"--nproc {nproc} gives {dims.data} data-parallel ranks: set --distributed.mode "
                          "ddp, zero1 or fsdp2")
    validate(cfg.model_config_obj(), d.tp, d.ep, d.sequence_parallel, cfg.data.seq_len)
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip or a == "--nproc" or a.startswith("--nproc="):
            skip = a == "--nproc"
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "hybridlm", *args]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = subprocess.run(cmd, env=env).returncode
    if code:
        raise HybridLMError(f"the {nproc} training processes failed (exit code {code}); see their messages above")
    return 0


def anneal(
    ctx: typer.Context,
    from_: Path = typer.Option(
        ..., "--from", help="Phase-1 run directory, its final/ model, or one of its checkpoints (step_N)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory of the annealing run."),
    data: list[str] = typer.Option(
        None,
        "--data",
        help="Annealing source (packed shards or synth://hq); "
        "repeat for several; PATH:WEIGHT to weight them. Default synth://hq (only for a phase 1 on synth:// data).",
    ),
    replay_fraction: float = typer.Option(0.6, help="Share of samples replayed from the phase-1 sources."),
    lr_fraction: float = typer.Option(0.75, help="Peak LR as a fraction of the phase-1 maximum LR."),
    steps: int = typer.Option(None, min=1, help="Optimizer steps (default: 10% of the phase-1 steps)."),
    warmup_steps: int = typer.Option(None, min=0, help="Linear warmup steps (default: 10% of the steps)."),
    decay: str = typer.Option("cosine", help="Decay to 0: linear | cosine | 1-sqrt | exponential."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest valid checkpoint in OUTPUT."),
    overwrite: bool = OVERWRITE,
    allow_changes: bool = ALLOW_CHANGES,
    replan_schedule: bool = REPLAN_SCHEDULE,
    as_json: bool = typer.Option(False, "--json", help="Print the result summary as JSON on stdout."),
) -> None:
    """Anneal (phase 2) from a phase-1 checkpoint: replay + high-quality data, LR re-warmed, decayed to 0."""
    from hybridlm.train.anneal import run_anneal
    from hybridlm.train.config import parse_cli_overrides

    sources = None
    if data:
        sources = []
        for item in data:
            path, _, w = (
                item.rpartition(":")
                if item.rsplit(":", 1)[-1].replace(".", "", 1).isdigit()
                else (item, "", "")
            )
            sources.append({"path": path, "weight": float(w) if w else 1.0})
    result = run_anneal(
        from_,
        output,
        sources,
        replay_fraction,
        lr_fraction,
        steps,
        warmup_steps,
        decay,
        parse_cli_overrides(ctx.args),
        resume=resume,
        overwrite=overwrite,
        allow_changes=allow_changes,
        replan_schedule=replan_schedule,
    )
    for w in result["plan"].get("warnings", []):
        console.print(f"[yellow]warning[/]: {w}")
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _summary(result)


def register(app: typer.Typer) -> None:
    app.command("train", context_settings=_EXTRA)(train)
    app.command("anneal", context_settings=_EXTRA)(anneal)

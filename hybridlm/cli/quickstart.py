"""`hybridlm quickstart`: the whole cookbook on an embedded default (see hybridlm.quickstart)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def quickstart(
    output_dir: Path = typer.Option(Path("quickstart-run"), "-o", "--output-dir", help="Report directory (new)."),
    seed: int = typer.Option(0, help="Seed for the corpus, data order, weights and sample."),
    pretrain_steps: int = typer.Option(150, min=1, help="Pretraining optimizer steps."),
    anneal_steps: int = typer.Option(
        None, min=1, help="Annealing steps (default: the recipe's share of pretraining)."
    ),
    threads: int = typer.Option(1, min=1, help="CPU threads (1 is fastest for this tiny model)."),
) -> None:
    """Synthetic corpus -> tokenizer -> filter -> dedup -> pack -> plan -> pretrain -> anneal -> eval -> sample."""
    from hybridlm.quickstart import run_quickstart

    console = Console()
    summary = run_quickstart(output_dir, seed=seed, pretrain_steps=pretrain_steps, anneal_steps=anneal_steps,
                             threads=threads, console=console)
    console.print(
        f"\n[bold green]done[/] in {summary['seconds']:.0f} s: pretraining loss {summary['pretrain_final_loss']:.3f} "
        f"vs unigram entropy {summary['unigram_entropy']:.3f}; annealing moved held-out loss "
        f"{summary['anneal_eval_loss_before']:.3f} -> {summary['anneal_eval_loss_after']:.3f}. "
        f"Report: {output_dir}/summary.json"
    )


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)

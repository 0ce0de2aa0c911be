"""`hybridlm eval`: lm-evaluation-harness tasks and the in-context recall suite.

    hybridlm eval SOURCE --tasks T [--include-path DIR] --tokenizer PATH [--json OUT]   (= hybridlm eval run ...)
    hybridlm eval recall SOURCE [--lengths 64,128,256,512] [--json OUT] [--plot OUT.png]

SOURCE is what `hybridlm generate` takes: a checkpoint directory, a preset or a config file. Heavy imports
(torch, lm-eval's evaluator) happen inside the commands.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from hybridlm.errors import HybridLMError

DEFAULT_COMMAND = "run"
RECALL_TASKS = "mqar,needle,copy"
console = Console(stderr=True)


class RunByDefault(TyperGroup):
    """`hybridlm eval SOURCE ...` is `hybridlm eval run SOURCE ...`: when the first argument names no sub-command
    (and is not --help), `run` is put in front of it."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=RunByDefault,
    no_args_is_help=True,
    help="Evaluate a model: lm-evaluation-harness tasks (`eval SOURCE --tasks ...`, same as `eval run`) "
    "or the in-context recall suite (`eval recall SOURCE`).",
)


def split_list(text: str, option: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise HybridLMError(f"{option} is empty; give comma-separated values")
    return items


def int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(t) for t in split_list(text, option)]
    except ValueError:
        raise HybridLMError(f"{option} must be comma-separated integers, got {text!r}") from None
    if min(values) < 1:
        raise HybridLMError(f"{option} must be positive, got {text!r}")
    return values


def _load(source: str, seed: int, threads: int, device: str):
    import torch

    from hybridlm.cli.generate import load_model

    if threads:
        torch.set_num_threads(threads)
    model, origin = load_model(source, seed)
    model = model.to(device)
    console.print(f"[bold]{model.config.describe()}[/] ({model.num_parameters():,} parameters, {origin})")
    return model


@app.command(DEFAULT_COMMAND)
def run(
    source: str = typer.Argument(..., help="Checkpoint directory, preset or config file (as for generate)."),
    tasks: str = typer.Option(..., "--tasks", help="lm-eval task, group or tag names, comma-separated."),
    include_path: Path = typer.Option(None, "--include-path", help="Folder of your own task YAMLs (and data)."),
    tokenizer: Path = typer.Option(None, "--tokenizer", help="Tokenizer directory or tokenizer.json "
                                   "(default: the checkpoint directory's)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Examples per forward pass."),
    max_length: int = typer.Option(None, "--max-length", min=2, help="Context window (default: max_seq_len)."),
    num_fewshot: int = typer.Option(None, "--num-fewshot", min=0,
                                    help="Few-shot examples per request (default: each task's own)."),
    limit: float = typer.Option(None, "--limit", min=0, help="Documents per task: a count, or a fraction < 1."),
    bootstrap_iters: int = typer.Option(1000, "--bootstrap-iters", min=0,
                                        help="Bootstrap samples for the stderr of non-mean metrics (0: none)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    seed: int = typer.Option(0, help="Seed of random weights (presets), sampling and few-shot draws."),
    threads: int = typer.Option(0, help="CPU threads (0: torch default)."),
    json_out: Path = typer.Option(None, "--json", help="Write the results as JSON here."),
) -> None:
    """Run lm-evaluation-harness tasks on SOURCE with the `hybridlm` lm-eval model (offline by default)."""
    from hybridlm.eval.evaluate import go_offline, run_tasks, summary, task_manager
    from hybridlm.eval.output import write_json

    go_offline()
    names = split_list(tasks, "--tasks")
    if tokenizer is None:
        from hybridlm.locate import locate

        tokenizer = locate(source).tokenizer()  # the one saved with the model (an export, a run, a checkpoint)
        if tokenizer is None:
            raise HybridLMError("--tokenizer is needed (no tokenizer is saved with SOURCE)")
    manager = task_manager(include_path, names)  # unknown tasks fail before the model loads
    model = _load(source, seed, threads, device)
    start = time.perf_counter()
    results = run_tasks(model, names, tokenizer=tokenizer, include_path=include_path, manager=manager,
                        batch_size=batch_size, max_length=max_length, num_fewshot=num_fewshot,
                        limit=int(limit) if limit is not None and limit >= 1 else limit, device=device, seed=seed,
                        bootstrap_iters=bootstrap_iters)
    settings = {"tasks": names, "include_path": str(include_path) if include_path else None,
                "tokenizer": str(tokenizer), "batch_size": batch_size, "max_length": max_length,
                "num_fewshot": num_fewshot, "limit": limit, "seed": seed, "device": device,
                "seconds": round(time.perf_counter() - start, 3)}
    out = summary(results, source, settings)
    table = Table(title=f"lm-eval: {source}")
    for col in ("task", "metric", "filter", "value", "stderr"):
        table.add_column(col, justify="right" if col in ("value", "stderr") else "left")
    for r in out["metrics"]:
        table.add_row(r["task"], r["metric"], r["filter"], f"{r['value']:.4f}",
                      "" if r["stderr"] is None else f"{r['stderr']:.4f}")
    Console().print(table)
    if json_out is not None:
        write_json(json_out, out)
        console.print(f"results written to {json_out}")


@app.command("recall")
def recall(
    source: str = typer.Argument(..., help="Checkpoint directory, preset or config file (as for generate)."),
    tasks: str = typer.Option(RECALL_TASKS, "--tasks", help="Recall tasks, comma-separated: mqar, needle, copy."),
    lengths: str = typer.Option("64,128,256,512", "--lengths", help="Context lengths, comma-separated."),
    examples: int = typer.Option(32, "--examples", min=1, help="Examples per task and length."),
    vocab: int = typer.Option(None, "--vocab", min=8, help="Task token ids 0..N-1 (default: the model's vocab)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Examples per forward pass."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    seed: int = typer.Option(0, help="Seed of the examples (and of random weights for presets)."),
    threads: int = typer.Option(0, help="CPU threads (0: torch default)."),
    json_out: Path = typer.Option(None, "--json", help="Write the scores as JSON here."),
    plot: Path = typer.Option(None, "--plot", help="Save the accuracy-vs-length plot (PNG) here."),
) -> None:
    """In-context recall (multi-query associative recall, needle in a haystack, copying) by context length."""
    from hybridlm.eval.output import write_json
    from hybridlm.eval.recall.plot import plot_recall
    from hybridlm.eval.recall.run import evaluate_recall
    from hybridlm.eval.recall.tasks import TASKS, check

    names = split_list(tasks, "--tasks")
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise HybridLMError(f"unknown recall task(s) {', '.join(unknown)}; allowed: {', '.join(TASKS)}")
    sizes = int_list(lengths, "--lengths")
    for task in names if vocab else ():  # settings that cannot work fail before the model loads
        for n in sizes:
            check(task, n, vocab)
    model = _load(source, seed, threads, device)
    from hybridlm.bench.cli import progress_bar

    with progress_bar("recall") as update:
        rows = evaluate_recall(model, names, sizes, examples=examples, vocab=vocab, seed=seed, batch_size=batch_size,
                               progress=update)
    table = Table(title=f"in-context recall: {source}")
    table.add_column("task")
    for n in sorted(set(sizes)):
        table.add_column(str(n), justify="right")
    for task in names:
        cells = {r["length"]: r for r in rows if r["task"] == task}
        table.add_row(task, *(f"{cells[n]['accuracy']:.3f}" for n in sorted(set(sizes))))
    Console().print(table)
    console.print("accuracy: share of answer tokens predicted right (greedy, teacher-forced)")
    out = {"source": source, "parameters": model.num_parameters(), "describe": model.config.describe(),
           "seed": seed, "examples": examples, "vocab": vocab or model.config.vocab_size, "results": rows}
    if json_out is not None:
        write_json(json_out, out)
        console.print(f"scores written to {json_out}")
    if plot is not None:
        plot_recall({source: rows}, plot, title=f"In-context recall: {source}", vocab=out["vocab"])
        console.print(f"plot written to {plot}")

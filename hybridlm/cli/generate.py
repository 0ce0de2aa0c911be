"""`hybridlm generate`: tokens (or text) from any model location (`hybridlm.locate`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from hybridlm.errors import HybridLMError

console = Console(stderr=True)


def load_model(source: str, seed: int = 0, dtype: str | None = None, device=None):
    """The model at a location (`hybridlm.locate`): weights of an exported model, a checkpoint or a run directory;
    random weights (seeded) for a preset or config file; in `dtype` (default float32; 'auto': a checkpoint's own) on
    `device`. Returns (model, where it came from)."""
    from hybridlm.locate import locate

    loc = locate(source)
    return loc.load(seed, dtype, device), loc.describe()


def _parse_ids(text: str, what: str = "--prompt-ids") -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        bad = next(t for t in text.replace(",", " ").split() if not t.lstrip("-").isdigit())
        raise HybridLMError(f"{what} must be integers separated by whitespace or commas, got {bad!r}") from None


def _read_ids_file(path: Path) -> list[int]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HybridLMError(f"--prompt-ids-file {path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise HybridLMError(f"--prompt-ids-file {path}: not a text file of token ids") from None
    return _parse_ids(text, f"--prompt-ids-file {path}")


def generate(
    source: str = typer.Argument(
        "zamba2-tiny", help="Preset, config file (YAML/JSON/config.json), exported model (e.g. RUN/final), "
        "checkpoint (RUN/checkpoints/step_N) or run directory (its final model)."
    ),
    prompt_ids: str = typer.Option(None, "--prompt-ids", help="Prompt token ids, e.g. '1 2 3'."),
    prompt_ids_file: Path = typer.Option(None, "--prompt-ids-file",
                                         help="File of whitespace-separated prompt token ids (long prompts)."),
    prompt: str = typer.Option(None, "--prompt", help="Prompt text (the model's own tokenizer, or --tokenizer)."),
    tokenizer: Path = typer.Option(
        None, "--tokenizer", help="Tokenizer directory or tokenizer.json (default: the one saved with the model)."
    ),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", "-n", min=1, help="Tokens to generate."),
    sample: bool = typer.Option(False, "--sample/--greedy", help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0, min=0.0, help="Sampling temperature (with --sample)."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Keep only the k most likely tokens (0: off)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (1: off)."),
    seed: int = typer.Option(0, help="Seed for random weights and sampling."),
    threads: int = typer.Option(
        None, min=0, help="CPU threads (0: torch's default; default: 1 below 10M parameters, where one thread "
        "decodes fastest, else torch's default)."
    ),
    dtype: str = typer.Option("float32", help="Weights dtype: float32, bfloat16, float16, or auto (a checkpoint's "
                                              "own)."),
    device: str = typer.Option(None, help="Device: cpu (default), cuda or cuda:N. With --nproc or torchrun each "
                                          "rank uses its own."),
    nproc: int = typer.Option(1, "--nproc", min=1, max=64,
                              help="Local ranks to shard the sequence over (gloo on CPU, NCCL on GPUs)."),
    context_parallel: str = typer.Option(
        None, "--context-parallel",
        help="How decoding combines the ranks' KV shards: tree (Tree Attention) or ring; default tree with "
             "--nproc > 1 or under torchrun."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Generate token ids (or text with a tokenizer) from a preset, config or checkpoint; with --nproc N
    (or under torchrun), one long prompt sharded over N ranks, the same tokens as one process."""
    from hybridlm.locate import locate
    from hybridlm.parallel import MODES
    from hybridlm.parallel.launch import run_ranks, under_torchrun
    from hybridlm.plan.params import params
    from hybridlm.threads import default_threads

    if context_parallel is not None and context_parallel not in MODES:
        raise HybridLMError(f"--context-parallel must be one of {', '.join(MODES)}, got {context_parallel!r}")
    if nproc > 1 and under_torchrun():
        raise HybridLMError("--nproc starts its own ranks; under torchrun leave it out")
    from hybridlm.hf.load import resolve_device, resolve_dtype

    resolve_dtype(dtype)  # a bad value is a one-line error here, not on every rank
    if device is not None:
        resolve_device(device)
    given = [name for name, v in (("--prompt", prompt), ("--prompt-ids", prompt_ids),
                                  ("--prompt-ids-file", prompt_ids_file)) if v is not None]
    if len(given) > 1:
        raise HybridLMError(f"give one prompt, not {' and '.join(given)}")
    loc = locate(source)  # a wrong location fails here, before any rank starts
    if threads is None:
        threads = default_threads(params(loc.config()).total) or 0
    if tokenizer is None and (found := loc.tokenizer()) is not None:
        tokenizer = found
        console.print(f"tokenizer: {found}", style="dim")
    tok = None
    if tokenizer is not None:
        from hybridlm.data.tokenizer import load_tokenizer

        tok = load_tokenizer(tokenizer)
    if prompt is not None:
        if tok is None:
            raise HybridLMError(f"--prompt needs a tokenizer: {source} has none saved with it; pass --tokenizer "
                                "(or --prompt-ids)")
        ids = tok.encode(prompt).ids
    elif prompt_ids is not None:
        ids = _parse_ids(prompt_ids)
    elif prompt_ids_file is not None:
        ids = _read_ids_file(prompt_ids_file)
    else:
        ids = [1, 2, 3, 4]
    if not ids:
        raise HybridLMError("the prompt is empty")
    if len(ids) < nproc:
        raise HybridLMError(f"--nproc {nproc} needs a prompt of at least {nproc} tokens (one per rank), got {len(ids)}")
    sharded = nproc > 1 or under_torchrun() or context_parallel is not None
    request = {"source": source, "prompt_ids": ids, "max_new_tokens": max_new_tokens, "sample": sample,
               "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed, "threads": threads,
               "context_parallel": (context_parallel or "tree") if sharded else None, "dtype": dtype,
               "device": device}
    if sharded and device is not None:
        raise HybridLMError("--device applies to one process; with --nproc or torchrun each rank picks its own")
    if nproc > 1:
        answer = run_ranks("hybridlm.cli.generate_ranks", nproc, request)
    else:
        from hybridlm.cli.generate_ranks import generate_on_rank

        answer = generate_on_rank(request)
        if under_torchrun():
            import torch.distributed as dist

            dist.destroy_process_group()
        if answer is None:  # not rank 0 under torchrun: rank 0 prints
            return
    console.print(f"[bold]{answer['describe']}[/] ({answer['parameters']:,} parameters, {answer['origin']}, "
                  f"{answer['placement']})")
    new = answer["new_ids"]
    result = {"prompt_ids": ids, "new_ids": new, "tokens_per_s": len(new) / answer["elapsed_s"]}
    if "comm_bytes" in answer:
        result["comm_bytes"] = answer["comm_bytes"]
    if tok is not None:
        result["text"] = tok.decode(new)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(" ".join(map(str, new)) if tok is None else result["text"])
        where = f" on {nproc} ranks ({request['context_parallel']})" if sharded and nproc > 1 else ""
        rate = result["tokens_per_s"]
        console.print(f"{len(new)} tokens in {answer['elapsed_s']:.3f} s ({rate:.1f} tokens/s){where}")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)

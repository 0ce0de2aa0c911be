"""`hybridlm generate`: tokens (or text) from any model location (`hybridlm.locate`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console

from hybridlm.errors import HybridLMError

console = Console(stderr=True)


def load_model(source: str, seed: int = 0):
    """The model at a location (`hybridlm.locate`): weights of an exported model, a checkpoint or a run directory;
    random weights (seeded) for a preset or config file. Returns (model, where it came from)."""
    from hybridlm.locate import locate

    loc = locate(source)
    return loc.load(seed), loc.describe()


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise HybridLMError(f"--prompt-ids must be integers separated by spaces or commas, got {text!r}") from None


def generate(
    source: str = typer.Argument(
        "zamba2-tiny", help="Preset, config file (YAML/JSON/config.json), exported model (e.g. RUN/final), "
        "checkpoint (RUN/checkpoints/step_N) or run directory (its final model)."
    ),
    prompt_ids: str = typer.Option(None, "--prompt-ids", help="Prompt token ids, e.g. '1 2 3'."),
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
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Generate token ids (or text with a tokenizer) from a preset, config or checkpoint."""
    import torch

    from hybridlm.data.tokenizer import load_tokenizer
    from hybridlm.locate import locate
    from hybridlm.threads import default_threads

    if prompt is not None and prompt_ids is not None:
        raise HybridLMError("give one prompt, not --prompt and --prompt-ids")
    loc = locate(source)
    model, origin = loc.load(seed), loc.describe()
    threads = default_threads(model.num_parameters()) if threads is None else threads
    if threads:
        torch.set_num_threads(threads)
    if tokenizer is None and (found := loc.tokenizer()) is not None:
        tokenizer = found
        console.print(f"tokenizer: {found}", style="dim")
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    if prompt is not None:
        if tok is None:
            raise HybridLMError(f"--prompt needs a tokenizer: {source} has none saved with it; pass --tokenizer "
                                "(or --prompt-ids)")
        ids = tok.encode(prompt).ids
    elif prompt_ids is not None:
        ids = _parse_ids(prompt_ids)
    else:
        ids = [1, 2, 3, 4]
    if not ids:
        raise HybridLMError("the prompt is empty")
    cfg = model.config
    console.print(f"[bold]{cfg.describe()}[/] ({model.num_parameters():,} parameters, {origin})")
    start = time.perf_counter()
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=sample,
                         temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    elapsed = time.perf_counter() - start
    new = out[0, len(ids):].tolist()
    result = {"prompt_ids": ids, "new_ids": new, "tokens_per_s": len(new) / elapsed}
    if tok is not None:
        result["text"] = tok.decode(new)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(" ".join(map(str, new)) if tok is None else result["text"])
        console.print(f"{len(new)} tokens in {elapsed:.3f} s ({result['tokens_per_s']:.1f} tokens/s)")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)

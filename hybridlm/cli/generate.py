"""`hybridlm generate` and `hybridlm models`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.table import Table

from hybridlm.errors import HybridLMError

console = Console(stderr=True)


def load_model(source: str, seed: int = 0, dtype: str | None = None, device: str | None = None):
    """A checkpoint directory loads its weights; a preset or config file builds random weights (seeded).
    Either way the model ends in `dtype` (default float32; 'auto': a checkpoint's own) on `device`."""
    from hybridlm.config.resolve import is_checkpoint_dir, resolve_config
    from hybridlm.hf.load import AUTO, resolve_device, resolve_dtype
    from hybridlm.model import HybridLM

    if is_checkpoint_dir(source):
        return HybridLM.from_pretrained(source, dtype=dtype, device=device), "checkpoint"
    target, dev = resolve_dtype(dtype), resolve_device(device)
    cfg = resolve_config(source)
    torch.manual_seed(seed)
    model = HybridLM(cfg).eval()
    return model.to(device=dev, dtype=torch.float32 if target == AUTO else target), "random weights"


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise HybridLMError(f"--prompt-ids must be integers separated by spaces or commas, got {text!r}") from None


def generate(
    source: str = typer.Argument(
        "zamba2-tiny", help="Preset name, config file (YAML/JSON/config.json) or checkpoint directory."
    ),
    prompt_ids: str = typer.Option(None, "--prompt-ids", help="Prompt token ids, e.g. '1 2 3'."),
    prompt: str = typer.Option(None, "--prompt", help="Prompt text (needs --tokenizer)."),
    tokenizer: Path = typer.Option(None, "--tokenizer", help="Tokenizer directory or tokenizer.json."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", "-n", min=1),
    sample: bool = typer.Option(False, "--sample/--greedy", help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0, min=0.0),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Keep only the k most likely tokens (0: off)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (1: off)."),
    seed: int = typer.Option(0, help="Seed for random weights and sampling."),
    threads: int = typer.Option(0, help="CPU threads (0: torch default). One thread is often fastest for tiny models."),
    dtype: str = typer.Option("float32", help="Weights dtype: float32, bfloat16, float16, or auto (a checkpoint's "
                                              "own)."),
    device: str = typer.Option("cpu", help="Device: cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Generate token ids (or text with a tokenizer) from a preset, config or checkpoint."""
    if threads:
        torch.set_num_threads(threads)
    model, origin = load_model(source, seed, dtype, device)
    tok = None
    if tokenizer is not None:
        from hybridlm.data.tokenizer import load_tokenizer

        tok = load_tokenizer(tokenizer)
    if prompt is not None:
        if tok is None:
            raise HybridLMError("--prompt needs --tokenizer (or pass --prompt-ids)")
        ids = tok.encode(prompt).ids
    elif prompt_ids is not None:
        ids = _parse_ids(prompt_ids)
    else:
        ids = [1, 2, 3, 4]
    if not ids:
        raise HybridLMError("the prompt is empty")
    cfg = model.config
    param = next(model.parameters())
    console.print(f"[bold]{cfg.describe()}[/] ({model.num_parameters():,} parameters, {origin}, "
                  f"{str(param.dtype).removeprefix('torch.')} on {param.device})")
    start = time.perf_counter()
    out = model.generate(torch.tensor([ids], device=param.device), max_new_tokens=max_new_tokens, do_sample=sample,
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


def models() -> None:
    """List the presets with their layer counts, parameter counts and layer patterns."""
    from hybridlm.config import ModelConfig, presets
    from hybridlm.config.pattern import compress
    from hybridlm.model import HybridLM

    table = Table(title="hybridlm presets")
    for col in ("preset", "d_model", "layers", "parameters", "pattern"):
        table.add_column(col, justify="right" if col in ("d_model", "layers", "parameters") else "left")
    for name in presets():
        cfg = ModelConfig.from_preset(name)
        with torch.device("meta"):
            n = HybridLM(cfg).num_parameters()
        table.add_row(name, str(cfg.d_model), str(cfg.n_layers), f"{n:,}", compress(cfg.tokens))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("models")(models)

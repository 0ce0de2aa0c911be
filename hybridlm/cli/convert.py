"""`hybridlm convert`: a checkpoint from one format to another."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hybridlm.errors import CheckpointError
from hybridlm.hf import FORMATS

console = Console(stderr=True)


def convert(
    source: Path = typer.Argument(..., help="Checkpoint directory in any supported format, or a training run "
                                            "(its directory, final/ or checkpoints/step_N)."),
    destination: Path = typer.Argument(..., help="Directory to write (must not exist, unless --overwrite)."),
    to: str = typer.Option(..., "--to", help=f"Format to write: {', '.join(FORMATS)} (hf: the transformers "
                                             "family that fits the architecture)."),
    dtype: str = typer.Option("auto", help="Weights dtype: auto (keep the checkpoint's), float32, bfloat16, float16."),
    max_shard_size: str = typer.Option(None, "--max-shard-size",
                                       help="Split safetensors into shards of at most this size, e.g. 5GB "
                                            "(default 50GB, as transformers)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DESTINATION if it exists."),
) -> None:
    """Convert a checkpoint between transformers (Zamba2, Zamba, Mamba, Mamba2, Llama, Jamba), mamba_ssm,
    Zyphra's BlackMamba and hybridlm's own format. Reads tensor by tensor; the new directory appears only
    when it is complete."""
    from hybridlm.data.tokenizer import copy_tokenizer
    from hybridlm.hf import resolve_format
    from hybridlm.locate import locate

    if to not in FORMATS:
        raise CheckpointError(f"--to {to!r} is not a format; allowed: {', '.join(FORMATS)}")
    if destination.exists() and not overwrite and (not destination.is_dir() or any(destination.iterdir())):
        raise CheckpointError(f"{destination} exists; pass --overwrite to replace it")
    if destination.resolve() == Path(source).resolve():
        raise CheckpointError("DESTINATION is SOURCE; write the conversion to a new directory")
    loc = locate(str(source))
    if not loc.has_weights:
        raise CheckpointError(f"{source} is a {loc.kind} without weights; convert reads a model's weights (a "
                              "checkpoint directory, a run directory or a checkpoint step_N)")
    with console.status(f"reading {loc.path}"):
        model = loc.load(dtype=dtype)
    fmt = resolve_format(model.config, to)
    size = int(max_shard_size) if max_shard_size is not None and max_shard_size.isdigit() else max_shard_size
    with console.status(f"writing {destination} ({fmt})"):
        model.save_pretrained(destination, format=fmt, max_shard_size=size)
        if (tokenizer := loc.tokenizer()) is not None:  # the converted model keeps its tokenizer
            copy_tokenizer(tokenizer, destination)
    dt = str(next(model.parameters()).dtype).removeprefix("torch.")
    console.print(f"{source} -> {destination}: {fmt} format, {model.num_parameters():,} parameters in {dt}")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)

"""The `hybridlm` command line: a thin typer shell over the Python API.

Each stage owns its commands in its own module; this file is the table of contents. The modules are imported only
when their command runs (`LAZY_COMMANDS`), so `hybridlm --help` and `hybridlm data ...` never pay for torch,
transformers or datatrove. The table holds each command's one-line help for the top-level `--help` listing
(tests check it against the real commands).
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches

import typer
from typer._click import Command, Context  # typer vendors click; these are its types
from typer._click.exceptions import UsageError
from typer.core import TyperCommand, TyperGroup

from hybridlm.errors import HybridLMError, file_error_line

# name -> (loader, one-line help). A loader "module:app" is a typer sub-application (a command group); a loader
# "module:register" is a function that registers the module's commands on a typer app.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": (
        "hybridlm.cli.quickstart:register",
        "Synthetic corpus -> tokenizer -> filter -> dedup -> pack -> plan -> pretrain -> anneal -> eval -> sample.",
    ),
    "generate": (
        "hybridlm.cli.generate:register",
        "Generate token ids (or text with a tokenizer) from a preset, config or checkpoint; with --nproc N (or "
        "under torchrun), one long prompt sharded over N ranks, the same tokens as one process.",
    ),
    "models": (
        "hybridlm.cli.models:register",
        "List the presets with their layer counts, parameter counts and layer patterns.",
    ),
    "convert": (
        "hybridlm.cli.convert:register",
        "Convert a checkpoint between transformers (Zamba2, Zamba, Mamba, Mamba2, Llama, Jamba), mamba_ssm, "
        "Zyphra's BlackMamba and hybridlm's own format. Reads tensor by tensor; the new directory appears only when "
        "it is complete.",
    ),
    "plan": (
        "hybridlm.plan.cli:register",
        "Parameters, FLOPs, memory, budget and sizing advice for a model, computed from its config alone.",
    ),
    "train": (
        "hybridlm.train.cli:register",
        "Pretrain a model on packed token shards. Override any field with --section.key VALUE.",
    ),
    "anneal": (
        "hybridlm.train.cli:register",
        "Anneal (phase 2) from a phase-1 checkpoint: replay + high-quality data, LR re-warmed, decayed to 0.",
    ),
    "data": ("hybridlm.data.cli:app", "Data stage: count, train-tokenizer, partition, filter, dedup, pack, synth."),
    "bench": (
        "hybridlm.bench.cli:app",
        "Benchmarks: model blocks (blocks), collectives (comms), GEMM shapes (gemm), long-context decoding across "
        "ranks (decode), comparing runs.",
    ),
    "eval": (
        "hybridlm.eval.cli:app",
        "Evaluate a model: lm-evaluation-harness tasks (`eval SOURCE --tasks ...`, same as `eval run`) or the "
        "in-context recall suite (`eval recall SOURCE`).",
    ),
}


def load_command(name: str) -> Command:
    """Import the module behind `name` and build its click command (a group for sub-applications)."""
    module, attr = LAZY_COMMANDS[name][0].split(":")
    obj = getattr(importlib.import_module(module), attr)
    if isinstance(obj, typer.Typer):
        cmd = typer.main.get_group(obj)
        cmd.name = name
        return cmd
    holder = typer.Typer()
    obj(holder)
    return typer.main.get_group(holder).commands[name]


class LazyGroup(TyperGroup):
    """A typer group whose sub-commands are imported on first use; listing them (help) imports nothing."""

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name in self.commands or cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        return TyperCommand(cmd_name, help=LAZY_COMMANDS[cmd_name][1])  # a listing entry only

    def resolve_command(self, ctx: Context, args: list[str]):
        if args and args[0] in LAZY_COMMANDS and args[0] not in self.commands:
            self.add_command(load_command(args[0]), args[0])
        try:
            return super().resolve_command(ctx, args)
        except UsageError as e:
            if args and "Did you mean" not in e.message:
                matches = get_close_matches(args[0], self.list_commands(ctx))
                if matches:
                    e.message = f"{e.message.rstrip('.')}. Did you mean {', '.join(map(repr, matches))}?"
            raise


app = typer.Typer(
    name="hybridlm",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        from hybridlm import __version__

        typer.echo(f"hybridlm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Build, plan, train, anneal, benchmark and serve hybrid SSM / attention / MoE language models."""


def main() -> None:
    """Entry point: user mistakes (ours and the command line's) become one line on stderr and exit code 2."""
    try:
        rv = app(standalone_mode=False)
    except HybridLMError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise SystemExit(2) from None
    except OSError as err:  # a read-only or missing directory, a full disk: the user's to fix, one line
        line = file_error_line(err)
        if line is None:
            raise
        typer.secho(f"error: {line}", fg="red", err=True)
        raise SystemExit(2) from None
    except typer.Abort:
        typer.secho("aborted", err=True)
        raise SystemExit(1) from None
    except typer.TyperException as err:  # the command line's own: bad option values, unknown options/commands
        if type(err).__name__ == "NoArgsIsHelpError":  # `hybridlm` alone: the help text
            err.show()
        else:
            ctx = getattr(err, "ctx", None)
            where = ctx.command_path if ctx is not None else "hybridlm"
            typer.secho(f"error: {err.format_message()} (see '{where} --help')", fg="red", err=True)
        raise SystemExit(getattr(err, "exit_code", 2)) from None
    raise SystemExit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()

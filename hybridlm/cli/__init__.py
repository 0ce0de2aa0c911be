"""The `hybridlm` command line: a thin typer shell over the Python API.

Each stage registers its own sub-application here, so this file stays a table of contents.
"""

from __future__ import annotations

import typer

from hybridlm.errors import HybridLMError, file_error_line

app = typer.Typer(
    name="hybridlm",
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

# Stage registrations: each module owns its commands.
from hybridlm.bench.cli import app as _bench_app  # noqa: E402
from hybridlm.cli import convert as _convert  # noqa: E402
from hybridlm.cli import generate as _generate  # noqa: E402
from hybridlm.cli import models as _models  # noqa: E402
from hybridlm.cli import quickstart as _quickstart  # noqa: E402
from hybridlm.data.cli import app as _data_app  # noqa: E402
from hybridlm.plan import cli as _plan  # noqa: E402
from hybridlm.train import cli as _train_cli  # noqa: E402

_quickstart.register(app)  # quickstart
_generate.register(app)  # generate
_models.register(app)  # models
_convert.register(app)  # convert
_plan.register(app)  # plan
app.add_typer(_data_app, name="data")
_train_cli.register(app)  # train, anneal
app.add_typer(_bench_app, name="bench")


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

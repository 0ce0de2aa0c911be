"""The `hybridlm` command line: a thin typer shell over the Python API.

Each stage registers its own sub-application here, so this file stays a table of contents.
"""

from __future__ import annotations

import typer

from hybridlm.errors import HybridLMError

app = typer.Typer(
    name="hybridlm",
    help="Build, plan, train, anneal, benchmark and serve hybrid SSM / attention / MoE language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Stage registrations: each module owns its commands.
from hybridlm.bench.cli import app as _bench_app  # noqa: E402
from hybridlm.cli import generate as _generate  # noqa: E402
from hybridlm.cli import quickstart as _quickstart  # noqa: E402
from hybridlm.data.cli import app as _data_app  # noqa: E402
from hybridlm.plan import cli as _plan  # noqa: E402
from hybridlm.train import cli as _train_cli  # noqa: E402

_quickstart.register(app)  # quickstart
_generate.register(app)  # generate, models
_plan.register(app)  # plan
app.add_typer(_data_app, name="data")
_train_cli.register(app)  # train, anneal
app.add_typer(_bench_app, name="bench")


def main() -> None:
    """Entry point: user mistakes become one clear line on stderr and exit code 2."""
    try:
        app()
    except HybridLMError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

"""`hybridlm models`: the presets at a glance, or one model's complete config as YAML.

Parameter counts come from the planner (`hybridlm.plan.params`, equal to the built model's by test), so listing
builds no model and imports no torch.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from hybridlm.errors import ConfigError


def models(
    model: str = typer.Argument(
        None, help="A preset (or any model location: config file, model, checkpoint or run directory) to show."
    ),
    as_yaml: bool = typer.Option(
        False, "--yaml", help="Print MODEL's complete config (every field) as YAML: edit it and pass the file to "
        "plan, generate or a run config's model:."
    ),
) -> None:
    """List the presets with their layer counts, parameter counts and layer patterns."""
    from hybridlm.config import ModelConfig, presets
    from hybridlm.config.pattern import compress
    from hybridlm.plan.params import params

    if as_yaml:
        if model is None:
            raise ConfigError("--yaml prints one model's config: give it, e.g. 'hybridlm models zamba2-tiny --yaml'")
        typer.echo(config_yaml(model), nl=False)
        return
    names = presets() if model is None else [model]
    table = Table(title="hybridlm presets" if model is None else None)
    for col in ("preset" if model is None else "model", "d_model", "layers", "parameters", "pattern"):
        table.add_column(col, justify="right" if col in ("d_model", "layers", "parameters") else "left")
    for name in names:
        cfg = ModelConfig.from_preset(name) if model is None else _config(name)
        table.add_row(name, str(cfg.d_model), str(cfg.n_layers), f"{params(cfg).total:,}", compress(cfg.tokens))
    Console().print(table)
    if model is None:
        Console(stderr=True).print("every field of one: hybridlm models PRESET --yaml", style="dim")


def _config(source: str):
    from hybridlm.locate import locate

    return locate(source).config()


def config_yaml(source: str) -> str:
    """A complete, loadable YAML of a model's config, with a header saying what it is and how to use it."""
    import yaml

    cfg = _config(source)
    body = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    return (
        f"# {cfg.describe()}\n"
        f"# every field of `{source}`; use the file wherever a model goes: hybridlm plan FILE, hybridlm generate "
        "FILE,\n# or `model: FILE` in a run config\n" + body
    )


def register(app: typer.Typer) -> None:
    app.command("models")(models)

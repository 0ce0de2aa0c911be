"""What a new user reads first: --version, help texts (complete, none eaten by the help renderer), `plan compare
--help`, and `hybridlm models` (fast; `--yaml` dumps a complete, loadable config)."""

import importlib.metadata
import os
import re
import subprocess
import sys

import pytest
import yaml
from cli_helpers import one_line_error, run_cli

RICH_TAG = re.compile(r"(?<!\\)\[[a-z#/@][^\[\]]*\]")  # what rich markup would take as a style tag and drop


def _commands():
    """(command path, click command) of every command, sub-commands included."""
    from typer.main import get_command

    import hybridlm.cli as cli

    root = get_command(cli.app)
    lazy = getattr(cli, "LAZY_COMMANDS", None)  # commands imported on first use: load each one
    tops = [(n, cli.load_command(n)) for n in lazy] if lazy else list(root.commands.items())

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    for name, cmd in tops:
        yield from walk(cmd, ["hybridlm", name])


def test_every_option_and_argument_has_a_help_text_the_renderer_keeps():
    missing, eaten = [], []
    for path, cmd in _commands():
        for texts in ([cmd.help or ""], [getattr(p, "help", None) or "" for p in cmd.params]):
            eaten += [f"{path}: {m}" for t in texts for m in RICH_TAG.findall(t)]
        missing += [f"{path} {p.opts[0]}" for p in cmd.params
                    if getattr(p, "param_type_name", "") == "option" and not p.hidden and not (p.help or "").strip()]
    assert not missing, f"options without help: {missing}"
    assert not eaten, f"help text the rich renderer drops as markup: {eaten}"


def test_help_pages_show_what_was_written(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one line per option: the texts are not broken by the panel's wrapping
    res = run_cli(capsys, "data", "filter", "--help")
    assert res.code == 0 and "Worker processes (default: all cores)" in " ".join(res.out.split())
    assert "Processes ." not in res.out
    res = run_cli(capsys, "plan", "compare", "--help")
    text = " ".join(res.out.split())
    assert res.code == 0 and "hybridlm plan compare" in text and "Compare several models side by side" in text
    res = run_cli(capsys, "plan", "--help")
    assert "Compare several models" not in res.out and "plan compare --help" in " ".join(res.out.split())


def test_version(capsys):
    res = run_cli(capsys, "--version")
    assert res.code == 0 and res.out.strip() == f"hybridlm {importlib.metadata.version('hybridlm')}"


def test_models_lists_presets_quickly():
    """A fresh `hybridlm models` process: the planner's counts, no model built (its CPU time, not the wall time of a
    busy machine, is bounded)."""
    before = os.times()
    proc = subprocess.run([sys.executable, "-m", "hybridlm", "models"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "160"}, timeout=120)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    assert proc.returncode == 0, proc.stderr
    assert "zamba2-1.2b" in proc.stdout and "1,215,064,704" in proc.stdout
    assert cpu < 2.0, f"hybridlm models took {cpu:.2f} s of CPU"


@pytest.mark.parametrize("preset", ["zamba2-tiny", "jamba-v0.1", "blackmamba-2.8b", "mamba2-2.7b"])
def test_models_yaml_is_a_complete_config(capsys, tmp_path, preset):
    from hybridlm.config import ModelConfig

    res = run_cli(capsys, "models", preset, "--yaml")
    assert res.code == 0, res
    data = yaml.safe_load(res.out)
    want = ModelConfig.from_preset(preset)
    assert set(data) == set(want.to_dict()) and ModelConfig.from_dict(data) == want  # every field, round trip
    path = tmp_path / "m.yaml"
    path.write_text(res.out)
    res = run_cli(capsys, "plan", path, "--json")  # usable where a model goes
    assert res.code == 0 and f'"name": "{preset}"' in res.out


def test_models_mistakes_are_one_line(capsys):
    one_line_error(capsys, "models", "--yaml", contains=("--yaml",))
    one_line_error(capsys, "models", "no-such-preset", "--yaml", contains=("no-such-preset", "presets:"))


def test_memory_of_a_tiny_model_is_shown_in_a_unit_it_reaches(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    res = run_cli(capsys, "plan", "zamba2-tiny", "--seq-len", "256")
    assert res.code == 0 and "0.000" not in res.out
    assert re.search(r"inference weights\s*│\s*844\.8 KiB", res.out), res.out  # 432,520 params x 2 bytes (bf16)
    from hybridlm.units import binary_bytes, plural

    assert [binary_bytes(n) for n in (0, 1023, 1536, 384 * 2**20, 2.263 * 2**30)] == [
        "0 B", "1023 B", "1.5 KiB", "384 MiB", "2.263 GiB"]
    assert (plural(1, "document"), plural(2, "document"), plural(1024, "shard")) == (
        "1 document", "2 documents", "1,024 shards")

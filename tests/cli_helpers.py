"""Running `hybridlm ...` in-process through the real entry point (`hybridlm.cli.main`), as a shell would: exit
code, stdout and stderr. An exception that escapes `main` (a traceback for the user) fails the test."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.strip().splitlines() if line.strip()]


def run_cli(capsys, *args) -> CliResult:
    from hybridlm.cli import main

    capsys.readouterr()
    old = sys.argv
    sys.argv = ["hybridlm", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        sys.argv = old
    cap = capsys.readouterr()
    return CliResult(code, cap.out, cap.err)


def one_line_error(capsys, *args, contains: tuple[str, ...] = ()) -> str:
    """Run a command that must fail as a user mistake: exit 2, one `error:` line on stderr naming what is wrong
    (each of `contains`), no traceback. Returns the line."""
    res = run_cli(capsys, *args)
    assert res.code == 2, (args, res)
    assert len(res.err_lines) == 1 and res.err_lines[0].startswith("error:"), (args, res.err)
    assert "Traceback" not in res.err + res.out
    for text in contains:
        assert text in res.err_lines[0], (text, res.err_lines[0])
    return res.err_lines[0]

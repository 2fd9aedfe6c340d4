"""Command-line manners: every --help ends with real examples (each one parses), boolean flags
read as flags, a run id without --resume is an error, `runs` with no runs says so."""

from __future__ import annotations

import shlex

import click
import pytest
import typer
from conftest import cli

from ors_migrate.cli import EXAMPLES, app


def commands() -> dict[str, click.Command]:
    """Every leaf command by its full name ("run", "lab up", ...)."""
    found: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in group.commands.items():
            full = f"{prefix}{name}"
            if hasattr(command, "commands"):
                walk(command, f"{full} ")
            else:
                found[full] = command

    walk(typer.main.get_command(app), "")  # type: ignore[arg-type]
    return found


def parses(every: dict[str, click.Command], invocation: str) -> str:
    """The command an example invokes, after checking its arguments parse."""
    words = shlex.split(invocation.split(" > ")[0], comments=True)
    assert words[0] == "ors-migrate", invocation
    given = " ".join(words[1:])
    name = next(n for n in sorted(every, key=len, reverse=True) if given.startswith(n))
    every[name].make_context(name, words[1 + len(name.split()) :], resilient_parsing=False)
    return name


def test_every_command_and_group_has_examples_and_every_example_parses():
    every = commands()
    assert sorted(every) == sorted(k for k in EXAMPLES if k not in ("", "lab"))
    for name, lines in EXAMPLES.items():
        assert lines, name
        for line in lines:
            invoked = [parses(every, part) for part in line.split(" && ")]
            assert not name or name in invoked or name == "lab", line


@pytest.mark.parametrize("command", ["", "lab", "run", "rollback", "lab status", "init"])
def test_help_ends_with_examples_and_flags_read_as_flags(command):
    shown = cli(*command.split(), "--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.returncode == 0
    text = shown.stdout.rstrip()
    tail = text.split("Examples:")[-1]
    assert "Examples:" in text
    assert [line.strip() for line in tail.strip().splitlines()] == EXAMPLES[command]
    assert "<bool>" not in text


def test_a_run_id_without_resume_is_an_error():
    result = cli("run", "examples/site.yaml", "--yes", "true")
    assert result.returncode == 2
    assert "a run id (true) is taken only with --resume" in result.stderr

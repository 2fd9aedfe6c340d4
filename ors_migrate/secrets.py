"""Resolve secret references (env:NAME, file:PATH, prompt) only when an action needs the value.

Resolved values live in memory for the run; they are never logged, journaled or put in argv.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from ors_migrate.errors import SecretError
from ors_migrate.site import SecretRef


class Secrets:
    """A per-run cache of resolved secrets, plus the set of values to mask in any output."""

    def __init__(self, *, interactive: bool | None = None) -> None:
        self._values: dict[str, str] = {}
        self._interactive = sys.stdin.isatty() if interactive is None else interactive

    def resolve(self, ref: SecretRef | None, *, what: str) -> str | None:
        if ref is None:
            return None
        if ref.ref not in self._values:
            self._values[ref.ref] = self._read(ref.ref, what)
        return self._values[ref.ref]

    def _read(self, ref: str, what: str) -> str:
        if ref.startswith("env:"):
            name = ref[4:]
            if name not in os.environ:
                raise SecretError(
                    f"{what}: environment variable {name} is not set", rule="secret-env"
                )
            return os.environ[name]
        if ref.startswith("file:"):
            path = Path(ref[5:]).expanduser()
            try:
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise SecretError(
                    f"{what}: cannot read secret file {path}: {exc.strerror}", rule="secret-file"
                ) from None
        if not self._interactive:
            raise SecretError(
                f"{what} is set to 'prompt' but there is no terminal to ask on; "
                "use env:NAME or file:PATH for unattended runs",
                rule="secret-prompt",
            )
        return getpass.getpass(f"{what}: ")

    def known_values(self) -> list[str]:
        return [v for v in self._values.values() if v]

    def mask(self, text: str) -> str:
        for value in sorted(self.known_values(), key=len, reverse=True):
            text = text.replace(value, "***")
        return text

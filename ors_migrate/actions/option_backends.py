"""The option backends a site can name (SPEC 3.4), behind one small interface.

`ini-file` edits an options file on the application's host. `command` wraps whatever the site
already uses to change Configuration Server: a get command that prints the application's options
in the Genesys INI export format, and a set command that receives the changes as JSON on stdin
(or in a temporary file named by `{changes_file}`), never on the command line. `manual` shows the
operator exactly what to set on which Application object, waits for confirmation and remembers
what was confirmed. The same playbook runs unchanged on any of them.
"""

from __future__ import annotations

import json
import secrets as random_tokens
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ors_migrate.actions.options_file import IniFileOptions, read_options
from ors_migrate.actions.service_control import render
from ors_migrate.errors import VerificationFailed
from ors_migrate.options import PERSISTENCE, OptionChange
from ors_migrate.step import OptionStore, OptionValues, Transport, run_checked

if TYPE_CHECKING:
    from ors_migrate.step import RunContext


def _changes_document(app: str, changes: list[tuple[OptionChange, str | None]]) -> dict[str, Any]:
    return {
        "app": app,
        "set": [
            {"section": c.section, "option": c.option, "value": v}
            for c, v in changes
            if v is not None
        ],
        "remove": [{"section": c.section, "option": c.option} for c, v in changes if v is None],
    }


class CommandOptions:
    """Options read and written through the site's own Configuration Server tooling."""

    def __init__(self, ctx: RunContext, app_name: str, transport: Transport) -> None:
        self.app = app_name
        self.transport = transport
        self.backend = ctx.site.options_backend
        self.values = ctx.site.placeholder_values(app_name)
        self.originals_dir = ctx.journal.state_dir / "originals"

    def _run(
        self, template: str, *, stdin: str | None = None, extra: dict[str, str] | None = None
    ) -> str:
        command = render(template, {**self.values, **(extra or {})})
        return run_checked(self.transport, command, stdin=stdin).stdout

    def read(self) -> OptionValues:
        assert self.backend.get_command
        return read_options(self._run(self.backend.get_command), f"get_command for {self.app}")

    def write(self, changes: list[tuple[OptionChange, str | None]]) -> None:
        assert self.backend.set_command
        document = json.dumps(_changes_document(self.app, changes))
        if "{changes_file}" not in self.backend.set_command:
            self._run(self.backend.set_command, stdin=document)
            return
        path = f"/tmp/.ors-migrate-{random_tokens.token_hex(8)}.json"
        self.transport.write_file_atomic(path, document.encode(), backup_path=None)
        try:
            self._run(self.backend.set_command, extra={"changes_file": path})
        finally:
            self.transport.run(f"rm -f {path}")

    def edit(self, changes: list[tuple[OptionChange, str | None]]) -> OptionValues:
        before = self.read()
        self.write(changes)
        return before

    def _original_file(self, run_id: str) -> Path:
        return self.originals_dir / run_id / f"{self.app}.ini"

    def keep_original(self, run_id: str) -> OptionValues:
        """The application's options as exported before the run, kept beside the journal with
        mode 0600 (Configuration Server exports may hold secrets, so never in the journal);
        returns the values exported now."""
        path = self._original_file(run_id)
        if path.exists():
            return self.read()
        assert self.backend.get_command
        text = self._run(self.backend.get_command)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(text)
        tmp.replace(path)
        return read_options(text, f"get_command for {self.app}")

    def restore_original(self, run_id: str) -> bool:
        path = self._original_file(run_id)
        if not path.exists():
            return False
        original = read_options(path.read_text(), str(path))
        current = self.read()
        changes: list[tuple[OptionChange, str | None]] = []
        for key in sorted(set(original) | set(current)):
            if original.get(key) != current.get(key):
                changes.append((OptionChange(key[0], key[1], original.get(key)), original.get(key)))
        if changes:
            self.write(changes)
        return True


class ManualOptions:
    """The operator changes options in Genesys Administrator; the tool says exactly what to set,
    waits for confirmation and records what was confirmed, so a resumed run does not ask again.
    Secret values are recorded as their reference, never as values."""

    def __init__(self, ctx: RunContext, app_name: str) -> None:
        self.ctx = ctx
        self.app = app_name
        self.record = ctx.journal.state_dir / "manual-options" / ctx.site.name / f"{app_name}.json"

    def _load(self) -> dict[str, Any]:
        try:
            return json.loads(self.record.read_text())
        except (OSError, ValueError):
            return {}

    def read(self) -> OptionValues:
        values: OptionValues = {}
        password_ref = self.ctx.site.redis.password
        for key, entry in self._load().items():
            section, option = key.split("/", 1)
            if "secret_ref" in entry:
                if password_ref is not None and entry["secret_ref"] == password_ref.ref:
                    secret = self.ctx.redis_password()
                    if secret is not None:
                        values[(section, option)] = secret
                continue
            values[(section, option)] = entry["value"]
        return values

    def instructions(self, changes: list[tuple[OptionChange, str | None]]) -> str:
        lines = [
            f"In Genesys Administrator, open the Application object '{self.app}', "
            "Options tab, and make these changes, then save:"
        ]
        password_ref = self.ctx.site.redis.password
        for change, value in changes:
            where = f"section [{change.section}], option '{change.option}'"
            if value is None:
                lines.append(f"  - delete {where}")
            elif change.secret:
                ref = password_ref.ref if password_ref else "the site's secret"
                lines.append(f"  - set {where} to the secret from {ref} (not shown here)")
            else:
                lines.append(f"  - set {where} to '{value}'")
        return "\n".join(lines)

    def write(self, changes: list[tuple[OptionChange, str | None]]) -> None:
        self.ctx.ui.operator_step(self.instructions(changes), who=self.ctx.operator)
        record = self._load()
        password_ref = self.ctx.site.redis.password
        for change, value in changes:
            key = f"{change.section}/{change.option}"
            if value is None:
                record.pop(key, None)
            elif change.secret or change.key == (PERSISTENCE, "password"):
                record[key] = {"secret_ref": password_ref.ref if password_ref else None}
            else:
                record[key] = {"value": value}
        self.record.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, sort_keys=True, indent=1))
        tmp.replace(self.record)

    def edit(self, changes: list[tuple[OptionChange, str | None]]) -> OptionValues:
        before = self.read()
        self.write(changes)
        return before

    def keep_original(self, run_id: str) -> OptionValues:
        """Nothing to copy here (Configuration Server keeps the options); the values now."""
        return self.read()

    def restore_original(self, run_id: str) -> bool:
        raise VerificationFailed(
            f"the manual option backend cannot restore {self.app}'s options byte for byte; "
            "restore them from your Configuration Server backup"
        )


def open_store(ctx: RunContext, app_name: str) -> OptionStore:
    backend = ctx.site.options_backend
    _, _, app = ctx.site.find_app(app_name)
    if backend.kind == "manual":
        return ManualOptions(ctx, app_name)
    transport = ctx.pool.for_host(app.host)
    if backend.kind == "command":
        return CommandOptions(ctx, app_name, transport)
    return IniFileOptions(transport, ctx.site.options_path(app_name), backend.backup_suffix)

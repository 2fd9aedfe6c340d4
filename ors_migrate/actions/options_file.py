"""The `ini-file` option backend: an ORS options file edited in place, comments and order kept.

Every write goes through the host's transport as one atomic replace, after a backup of the
file as it was; the first edit of a run also keeps a pristine copy for `rollback --to start`.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING

from ors_migrate.errors import InputError
from ors_migrate.options import OptionChange
from ors_migrate.step import Transport

if TYPE_CHECKING:
    from configupdater import ConfigUpdater

SPACED = re.compile(r"^\s*[^#;\[\s][^=]*\s=\s", re.MULTILINE)


def _parse(text: str, path: str) -> ConfigUpdater:
    # Imported here: `plan` loads this module with the action table but never parses a file,
    # and configupdater (with configparser) costs about 30 ms of its start-up.
    from configupdater import ConfigUpdater
    from configupdater.parser import ParsingError

    updater = ConfigUpdater(space_around_delimiters=bool(SPACED.search(text)))
    try:
        updater.read_string(text)
    except (ParsingError, ValueError) as exc:
        raise InputError(
            f"cannot parse options file: {exc}", file=path, rule="ini-syntax"
        ) from None
    return updater


def read_options(text: str, path: str) -> dict[tuple[str, str], str]:
    updater = _parse(text, path)
    values: dict[tuple[str, str], str] = {}
    for section in updater.sections():
        for option in updater[section].options():
            value = updater[section][option].value
            values[(section, option)] = value if value is not None else ""
    return values


def apply_changes(text: str, path: str, changes: list[tuple[OptionChange, str | None]]) -> str:
    """`text` with each (change, value) applied; value None removes the option."""
    updater = _parse(text, path)
    for change, value in changes:
        section, option = change.section, change.option
        if value is None:
            if updater.has_section(section) and updater.has_option(section, option):
                updater.remove_option(section, option)
            continue
        if not updater.has_section(section):
            if updater.sections():
                updater[updater.sections()[-1]].add_after.space().section(section)
            else:
                updater.add_section(section)
        block = updater[section]
        if block.has_option(option):
            block[option].value = value
        elif block.option_blocks():
            block.option_blocks()[-1].add_after.option(option, value)
        else:
            block.set(option, value)
    return str(updater)


class IniFileOptions:
    """Reads and writes one application's options file on its host."""

    def __init__(self, transport: Transport, path: str, backup_suffix: str) -> None:
        self.transport = transport
        self.path = path
        self.backup_suffix = backup_suffix

    def read_bytes(self) -> bytes:
        data = self.transport.read_file(self.path)
        if data is None:
            raise InputError(
                f"options file does not exist on host {self.transport.name}",
                file=self.path,
                rule="options-file-exists",
            )
        return data

    def read(self) -> dict[tuple[str, str], str]:
        return read_options(self.read_bytes().decode("utf-8"), self.path)

    def write(self, changes: list[tuple[OptionChange, str | None]]) -> None:
        self.edit(changes)

    def edit(self, changes: list[tuple[OptionChange, str | None]]) -> dict[tuple[str, str], str]:
        """The file read once: the changes are made on that text, and its values returned."""
        old = self.read_bytes().decode("utf-8")
        new = apply_changes(old, self.path, changes)
        if new != old:
            self.transport.write_file_atomic(
                self.path, new.encode("utf-8"), backup_path=self.path + self.backup_suffix
            )
        return read_options(old, self.path)

    def exposure(self) -> str | None:
        """Why a secret written into this file could be read by others ("mode 0644"), or None
        when only its owner may read it or the mode cannot be seen (Windows ACLs)."""
        if self.transport.platform == "windows":
            return None
        result = self.transport.run(f"stat -c %a -- {shlex.quote(self.path)}")
        try:
            mode = int(result.stdout.strip(), 8)
        except ValueError:
            return None
        return f"mode {mode:04o}" if result.exit_code == 0 and mode & 0o044 else None

    def pristine_path(self, run_id: str) -> str:
        return f"{self.path}.{run_id}.orig"

    def keep_original(self, run_id: str) -> dict[tuple[str, str], str]:
        """Copy the file as it is now to a run-specific path, once; returns the values it holds
        now (from the same read)."""
        data = self.read_bytes()
        pristine = self.pristine_path(run_id)
        if self.transport.read_file(pristine) is None:
            self.transport.write_file_atomic(pristine, data, backup_path=None)
        return read_options(data.decode("utf-8"), self.path)

    def restore_original(self, run_id: str) -> bool:
        pristine = self.transport.read_file(self.pristine_path(run_id))
        if pristine is None:
            return False
        self.transport.write_file_atomic(
            self.path, pristine, backup_path=self.path + self.backup_suffix
        )
        return True

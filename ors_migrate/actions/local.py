"""The local transport: commands run by the local shell, files written on this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ors_migrate.errors import InputError, TransportError
from ors_migrate.step import CommandResult
from ors_migrate.userfiles import existing_kind


class LocalTransport:
    def __init__(self, name: str = "localhost", platform: str = "linux") -> None:
        self.name = name
        self.platform = platform

    def run(
        self,
        command: str,
        *,
        stdin: str | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        started = time.monotonic()
        full_env = {**os.environ, **env} if env else None
        try:
            proc = subprocess.run(
                command,
                shell=True,
                input=stdin if stdin is not None else "",
                capture_output=True,
                text=True,
                timeout=timeout,
                env=full_env,
            )
        except subprocess.TimeoutExpired:
            raise TransportError(
                f"on {self.name}: `{command}` did not finish within {timeout:g} s"
            ) from None
        return CommandResult(
            host=self.name,
            command=command,
            exit_code=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
            duration_s=time.monotonic() - started,
        )

    def read_file(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None

    def write_file_atomic(self, path: str, data: bytes, *, backup_path: str | None) -> None:
        """As over SSH: only a regular file is replaced (a symlink or anything else at `path`
        is refused and left as it is), by a temporary file and a rename, after a backup."""
        target = Path(path)
        kind = existing_kind(target)
        if kind is not None:
            raise InputError(
                f"on {self.name}: it is {kind}; only a regular file is replaced, and it was left "
                "as it is",
                file=path,
                rule="regular-file",
            )
        existing = target.stat() if target.exists() else None
        if backup_path and existing is not None:
            self._write_backup(target, Path(backup_path))
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if existing is not None:
                os.chmod(tmp, existing.st_mode & 0o7777)
                if os.geteuid() == 0:
                    os.chown(tmp, existing.st_uid, existing.st_gid)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _write_backup(source: Path, backup: Path) -> None:
        """The old file copied 0600 (it may hold the Redis password), by rename, never through
        a symlink at the backup path."""
        fd, tmp = tempfile.mkstemp(prefix=f".{backup.name}.", suffix=".tmp", dir=backup.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(source.read_bytes())
                fh.flush()
                os.fsync(fh.fileno())
            shutil.copystat(source, tmp)
            os.chmod(tmp, 0o600)
            os.replace(tmp, backup)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def close(self) -> None:
        return None

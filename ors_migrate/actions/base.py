"""The shared vocabulary of actions: command results, check results and the transport protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Severity = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class CheckResult:
    """One observation of a read-only check: what was seen, and what to do if it is wrong."""

    check: str
    severity: Severity
    message: str
    fix: str = ""
    observed: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        return self.severity == "error"

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "observed": self.observed,
        }


class Transport(Protocol):
    """How commands and files reach one host. Implementations: local subprocess, SSH."""

    name: str
    platform: str

    def run(
        self,
        command: str,
        *,
        stdin: str | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        """Run a shell command; never raises for a non-zero exit, raises TransportError when the
        host cannot be reached or the command times out. Secrets go in `stdin` or `env`,
        never in `command`."""
        ...

    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        ...

    def write_file_atomic(self, path: str, data: bytes, *, backup_path: str | None) -> None:
        """Write via a temporary file in the same directory and a rename, keeping the old
        file's mode and owner (a new file is 0600); copy the old file to `backup_path` first
        when given, with mode 0600 (it may hold the Redis password)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Target:
    """Where one planned action acts. `role_resolved_at_run_time` marks an application chosen by
    its role: the plan shows the member expected to hold that role, the run asks the live world."""

    cluster: str | None = None
    ha_pair: str | None = None
    app: str | None = None
    host: str | None = None
    role: str | None = None
    role_resolved_at_run_time: bool = False

    def label(self) -> str:
        return self.app or self.ha_pair or self.cluster or "site"

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "ha_pair": self.ha_pair,
            "app": self.app,
            "host": self.host,
            "role": self.role,
            "role_resolved_at_run_time": self.role_resolved_at_run_time,
        }


@dataclass
class Preview:
    """What a planned action will do, for the dry-run plan: exact commands and option diffs."""

    description: str
    commands: list[str] = field(default_factory=list)
    option_changes: list[dict[str, Any]] = field(default_factory=list)

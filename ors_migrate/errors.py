"""One exception type per kind of failure the operator can act on.

Each carries the exit code of SPEC 5 and is rendered once, at the CLI edge, without a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BLOCKED = 3
EXIT_LOCKED = 4
EXIT_INTERRUPTED = 130


class OrsMigrateError(Exception):
    """Base of every error the CLI renders as a message instead of a traceback."""

    exit_code = EXIT_RUN_FAILED


class InputError(OrsMigrateError):
    """A site file, playbook, option value or argument is wrong: file, line and rule are named."""

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        rule: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.rule = rule
        self.detail = message
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where += f":{self.line}"
        parts = [p for p in (where, self.field) if p]
        prefix = ": ".join(parts)
        rule = f" [{self.rule}]" if self.rule else ""
        return f"{prefix}: {self.detail}{rule}" if prefix else f"{self.detail}{rule}"


class SiteError(InputError):
    """The site file is malformed or breaks a documented rule."""


class PlaybookError(InputError):
    """A playbook is malformed or names an unknown action."""


class SecretError(InputError):
    """A secret reference cannot be resolved (missing variable, unreadable file)."""


class TransportError(OrsMigrateError):
    """A host could not be reached or a command could not be run on it (often transient)."""

    transient = True


class StateTimedOut(TransportError):
    """A state ran past its `timeout_s`: it stops before its next action or retry, like a
    transient failure whose retries are spent (a resume starts the state's clock again)."""


class LoginRefused(TransportError):
    """The host refused our credentials: retrying will not help."""

    transient = False


class HostKeyError(TransportError):
    """An SSH host key is unknown or changed: never accepted silently."""

    transient = False


class CommandFailed(OrsMigrateError):
    """A site command ran and returned a non-zero exit code."""

    def __init__(self, host: str, command: str, exit_code: int, stderr: str) -> None:
        self.host = host
        self.command = command
        self.exit_code_seen = exit_code
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        super().__init__(f"on {host}: `{command}` exited {exit_code}: {tail}")


class VerificationFailed(OrsMigrateError):
    """A check found the world not as the procedure requires; never retried."""

    exit_code = EXIT_BLOCKED


class RunLocked(OrsMigrateError):
    """Another run holds the site's lock."""

    exit_code = EXIT_LOCKED


class ResumeRefused(OrsMigrateError):
    """The run cannot be resumed safely: the plan, site or live topology changed."""

    exit_code = EXIT_BAD_INPUT


class RollbackRequested(OrsMigrateError):
    """A person at a gate, or the unattended `--on-timeout rollback` policy, chose to roll
    back."""


class GateStopped(OrsMigrateError):
    """The operator stopped the run at a gate, or a gate needs a terminal that is not there."""

    exit_code = EXIT_INTERRUPTED


class Halted(GateStopped):
    """The run is stopping (an interrupt, or another HA pair's failure) while an action waited
    before its command: nothing was sent. The journal keeps its intent, so a resume checks the
    world, finds the action not done, and runs it again (waiting again where it waits)."""


class TerminalRequired(GateStopped):
    """An answer is needed and there is no terminal to ask on. The run pauses where it is
    (resumable) and the command exits 2, as for any input the command line lacks."""

    exit_code = EXIT_BAD_INPUT

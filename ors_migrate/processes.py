"""Whether a local process is still the one we started: the run lock's holder, a lab server.
/proc tells when a process started and whether it is a zombie, so a reused pid is not taken
for the original; where /proc cannot tell, `kill(pid, 0)` does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def process_started(pid: int) -> str | None:
    """When a running process started, in clock ticks since boot, from /proc; "dead" for a
    zombie; None when there is no such process or no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields_after_name = fh.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return "dead" if fields_after_name[0] in ("Z", "X") else fields_after_name[19]


def _runs(program: bytes, pid: int) -> bool:
    try:
        return program in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def pid_alive(pid: Any, *, started: str | None = None, program: bytes | None = None) -> bool:
    """Whether `pid` runs, is not a zombie, and (when given) started at `started` and runs
    `program` (a part of its command line)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    seen = process_started(pid)
    if seen is not None:
        if seen == "dead" or (started is not None and seen != started):
            return False
        return program is None or _runs(program, pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

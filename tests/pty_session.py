"""`ors-migrate` in a real pseudo-terminal, as an operator at a keyboard would run it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pexpect

REPO = Path(__file__).resolve().parent.parent
DOWN = "\x1b[B"


def spawn(*args: str, cwd: Path, timeout: float = 20) -> pexpect.spawn:
    """A wide terminal, so that panels and prompts are not wrapped; colours allowed."""
    env = {
        **os.environ,
        "PROMPT_TOOLKIT_NO_CPR": "1",  # a bare pty never answers the cursor-position request
        "TERM": "xterm-256color",
        "PYTHONPATH": str(REPO),
    }
    env.pop("NO_COLOR", None)
    for sized in ("COLUMNS", "LINES"):  # the pty's own size is the terminal's (a test runner
        env.pop(sized, None)  # may set these for its own output)
    return pexpect.spawn(
        sys.executable,
        ["-m", "ors_migrate", *args],
        cwd=str(cwd),
        env=env,
        encoding="utf-8",
        dimensions=(60, 300),
        timeout=timeout,
    )


def choose(child: pexpect.spawn, downs: int) -> None:
    """Pick the entry `downs` below the highlighted one in a list."""
    for _ in range(downs):
        child.send(DOWN)
        time.sleep(0.1)
    child.send("\r")


def finish(child: pexpect.spawn, timeout: float = 300) -> int:
    child.expect(pexpect.EOF, timeout=timeout)
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}"
    return int(child.exitstatus)

"""Runs of `ors-migrate run` as separate processes, watched through their SQLite journal
(events `action_intent`, `action_ended`, ...) as another process sees it, and killed from
outside when a chosen point appears."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import REPO, cli

from ors_migrate.lab.lab import lab_status
from ors_migrate.lab.layout import LabLayout

RUN_TIMEOUT_S = 300.0

# The tiny playbooks stop after enabling Redis on the backups (enable.1 alone), which leaves each
# ORS cluster on two stores: a documented rule error the operator must override by its id.
PARTIAL_ENABLE = ("--override-rule", "ors.one-store-per-cluster")


@dataclass(frozen=True)
class Event:
    kind: str
    state_id: str | None
    action_key: str | None
    payload: dict[str, Any]


def journal_events(state_dir: Path) -> list[Event]:
    """The journal as another process sees it while a run writes to it."""
    path = state_dir / "journal.sqlite3"
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute(
                "SELECT kind, state_id, action_key, payload FROM events ORDER BY seq"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error:  # not yet created, or mid-write
        return []
    return [Event(k, s, a, json.loads(p)) for k, s, a, p in rows]


def start_run(
    site: Path, state_dir: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`ors-migrate run SITE` in the background, its output kept for the test to read."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ors_migrate",
            "run",
            str(site),
            "--state-dir",
            str(state_dir),
            *extra,
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "ORS_MIGRATE_DEBUG": "1", **(env or {})},
    )


def run_status(state_dir: Path) -> str | None:
    """The status the journal holds for the (only) run, as the run itself last wrote it."""
    db = sqlite3.connect(state_dir / "journal.sqlite3", timeout=10)
    try:
        row = db.execute("SELECT status FROM runs").fetchone()
    finally:
        db.close()
    return row[0] if row else None


def has_event(
    kind: str, *, key: str | None = None, state: str | None = None
) -> Callable[[list[Event]], bool]:
    return lambda events: any(
        e.kind == kind
        and (key is None or e.action_key == key)
        and (state is None or e.state_id == state)
        for e in events
    )


@dataclass
class Runs:
    """`ors-migrate run` processes against one site and state directory, logged to files."""

    site: Path
    state_dir: Path
    logs: Path
    started: list[Path] = field(default_factory=list)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"run-{len(self.started):03d}.log"
        self.started.append(log)
        with open(log, "wb") as out:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ors_migrate",
                    "run",
                    str(self.site),
                    "--state-dir",
                    str(self.state_dir),
                    *PARTIAL_ENABLE,
                    *args,
                ],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
            )

    def kill_when(
        self, proc: subprocess.Popen[bytes], reached: Callable[[list[Event]], bool]
    ) -> bool:
        """SIGKILL `proc` as soon as the journal shows `reached`; False if it ended first."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if reached(journal_events(self.state_dir)):
                proc.kill()
                proc.wait(timeout=30)
                return True
            time.sleep(0.02)
        proc.kill()
        raise AssertionError(f"kill point not reached in {RUN_TIMEOUT_S:g} s; {self.tail()}")

    def tail(self) -> str:
        return self.started[-1].read_text()[-3000:] if self.started else ""

    def finish(self, proc: subprocess.Popen[bytes]) -> int:
        try:
            return proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def cli_json(*args: str) -> Any:
    done = cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def lab_apps(lab: LabLayout) -> list[dict[str, Any]]:
    """The applications `ors-migrate lab status --json` lists, read in this process: the same
    data without a process started for each look (the command is tested on its own)."""
    apps: list[dict[str, Any]] = lab_status(lab.root)["apps"]
    return apps


def sim_starts(lab: LabLayout, app: str) -> int:
    return lab.log(app).read_text().count(" started, persistence type ")

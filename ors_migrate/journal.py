"""The durable run store: SQLite in WAL mode with synchronous=FULL, plus the per-site run lock.

The journal is the source of truth of a run. Intent is recorded before an action starts and its
result after it ends, so a run killed anywhere can be reconciled. Secrets never enter it.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ors_migrate.errors import OrsMigrateError, RunLocked

RUN_STATUSES = ("running", "paused", "interrupted", "succeeded", "failed", "rolled_back")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    site_name TEXT NOT NULL,
    site_path TEXT NOT NULL,
    site_digest TEXT NOT NULL,
    playbook TEXT NOT NULL,
    playbook_digest TEXT NOT NULL,
    plan_hash TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    status TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT 'forward',
    current_state TEXT,
    operator TEXT NOT NULL,
    hostname TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    phase TEXT NOT NULL,
    state_id TEXT,
    action_key TEXT,
    payload TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_by_run ON events(run_id, seq);
CREATE TABLE IF NOT EXISTS originals (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    app TEXT NOT NULL,
    section TEXT NOT NULL,
    option TEXT NOT NULL,
    present INTEGER NOT NULL,
    value TEXT,
    secret INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, app, section, option)
);
"""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def default_state_dir() -> Path:
    env = os.environ.get("ORS_MIGRATE_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ors-migrate"


def operator_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    site_name: str
    site_path: str
    site_digest: str
    playbook: str
    playbook_digest: str
    plan_hash: str
    plan_json: str
    status: str
    phase: str
    current_state: str | None
    operator: str
    hostname: str
    created_at: str
    updated_at: str
    outcome: str | None

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "site": self.site_name,
            "site_path": self.site_path,
            "playbook": self.playbook,
            "status": self.status,
            "phase": self.phase,
            "current_state": self.current_state,
            "plan_hash": self.plan_hash,
            "operator": self.operator,
            "hostname": self.hostname,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "outcome": self.outcome,
        }


@dataclass(frozen=True)
class Event:
    seq: int
    ts: str
    kind: str
    phase: str
    state_id: str | None
    action_key: str | None
    payload: dict[str, Any]


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise OrsMigrateError(
                f"cannot create state directory {state_dir}: {exc.strerror}"
            ) from None
        self.path = state_dir / "journal.sqlite3"
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise OrsMigrateError(f"cannot open the run journal {self.path}: {exc}") from None

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise OrsMigrateError(f"cannot write the run journal {self.path}: {exc}") from None

    # Runs
    def create_run(
        self,
        *,
        site_name: str,
        site_path: str,
        site_digest: str,
        playbook: str,
        playbook_digest: str,
        plan_hash: str,
        plan_json: str,
    ) -> str:
        run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        stamp = now()
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    site_name,
                    str(Path(site_path).resolve()),
                    site_digest,
                    playbook,
                    playbook_digest,
                    plan_hash,
                    plan_json,
                    "running",
                    "forward",
                    None,
                    operator_name(),
                    socket.gethostname(),
                    stamp,
                    stamp,
                    None,
                ),
            )
            self._event(db, run_id, "run_created", "forward", None, None, {"plan_hash": plan_hash})
        return run_id

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self.db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return RunRecord(*row) if row else None

    def runs(self, site_name: str | None = None) -> list[RunRecord]:
        query = "SELECT * FROM runs"
        args: tuple[Any, ...] = ()
        if site_name:
            query += " WHERE site_name = ?"
            args = (site_name,)
        return [
            RunRecord(*r) for r in self.db.execute(query + " ORDER BY created_at, run_id", args)
        ]

    def set_status(
        self,
        run_id: str,
        status: str,
        *,
        current_state: str | None = None,
        phase: str | None = None,
        outcome: str | None = None,
    ) -> None:
        assert status in RUN_STATUSES, status
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status = ?, updated_at = ?,"
                " current_state = COALESCE(?, current_state), phase = COALESCE(?, phase),"
                " outcome = COALESCE(?, outcome) WHERE run_id = ?",
                (status, now(), current_state, phase, outcome, run_id),
            )
            self._event(
                db,
                run_id,
                f"status_{status}",
                phase or "",
                current_state,
                None,
                {"outcome": outcome} if outcome else {},
            )

    def set_current_state(self, run_id: str, state_id: str, phase: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET current_state = ?, phase = ?, updated_at = ? WHERE run_id = ?",
                (state_id, phase, now(), run_id),
            )

    def replace_plan(
        self, run_id: str, plan_hash: str, plan_json: str, site_digest: str, playbook_digest: str
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET plan_hash = ?, plan_json = ?, site_digest = ?,"
                " playbook_digest = ?, updated_at = ? WHERE run_id = ?",
                (plan_hash, plan_json, site_digest, playbook_digest, now(), run_id),
            )

    # Events
    def _event(
        self,
        db: sqlite3.Connection,
        run_id: str,
        kind: str,
        phase: str,
        state_id: str | None,
        action_key: str | None,
        payload: dict[str, Any],
    ) -> None:
        db.execute(
            "INSERT INTO events (run_id, ts, kind, phase, state_id, action_key, payload)"
            " VALUES (?,?,?,?,?,?,?)",
            (
                run_id,
                now(),
                kind,
                phase,
                state_id,
                action_key,
                json.dumps(payload, sort_keys=True, default=str),
            ),
        )

    def record(
        self,
        run_id: str,
        kind: str,
        *,
        phase: str,
        state_id: str | None = None,
        action_key: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        with self._tx() as db:
            self._event(db, run_id, kind, phase, state_id, action_key, payload or {})
            db.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", (now(), run_id))

    def events(self, run_id: str) -> list[Event]:
        rows = self.db.execute(
            "SELECT seq, ts, kind, phase, state_id, action_key, payload FROM events"
            " WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        return [Event(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    # Original option values, captured once per application before its first edit
    def has_originals(self, run_id: str, app: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM originals WHERE run_id = ? AND app = ? LIMIT 1", (run_id, app)
        ).fetchone()
        return row is not None

    def save_originals(
        self, run_id: str, app: str, values: list[tuple[str, str, str | None, bool]]
    ) -> None:
        """values: (section, option, value or None when absent, secret). Secret values are
        recorded as present/absent only."""
        with self._tx() as db:
            for section, option, value, secret in values:
                db.execute(
                    "INSERT OR IGNORE INTO originals VALUES (?,?,?,?,?,?,?)",
                    (
                        run_id,
                        app,
                        section,
                        option,
                        int(value is not None),
                        None if secret else value,
                        int(secret),
                    ),
                )

    def original(self, run_id: str, app: str, section: str, option: str) -> tuple[bool, str | None]:
        row = self.db.execute(
            "SELECT present, value FROM originals WHERE run_id = ? AND app = ? AND section = ?"
            " AND option = ?",
            (run_id, app, section, option),
        ).fetchone()
        if row is None:
            raise KeyError((app, section, option))
        return bool(row[0]), row[1]

    def originals(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT app, section, option, present, value, secret FROM originals WHERE run_id = ?"
            " ORDER BY app, section, option",
            (run_id,),
        )
        return [
            {
                "app": r[0],
                "section": r[1],
                "option": r[2],
                "present": bool(r[3]),
                "value": "***" if r[5] and r[3] else r[4],
                "secret": bool(r[5]),
            }
            for r in rows
        ]


class RunLock:
    """One run per site: an flock (released by the kernel when the holder dies) and an info file
    naming the holder."""

    def __init__(self, state_dir: Path, site_name: str) -> None:
        from filelock import FileLock

        lock_dir = state_dir / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.lock_path = lock_dir / f"{site_name}.lock"
        self.info_path = lock_dir / f"{site_name}.holder.json"
        self._lock = FileLock(str(self.lock_path), timeout=0)
        self.site_name = site_name

    def acquire(self, run_id: str | None) -> None:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise RunLocked(self._held_message()) from None
        info = {
            "host": socket.gethostname(),
            "user": operator_name(),
            "pid": os.getpid(),
            "run_id": run_id,
            "started_at": now(),
        }
        tmp = self.info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.info_path)

    def set_run(self, run_id: str) -> None:
        info = self.holder() or {}
        info["run_id"] = run_id
        tmp = self.info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.info_path)

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return None

    def _held_message(self) -> str:
        info = self.holder()
        if not info:
            return f"another run holds the lock for site '{self.site_name}' ({self.lock_path})"
        return (
            f"another run holds the lock for site '{self.site_name}': run {info.get('run_id')} "
            f"by {info.get('user')} on {info.get('host')} (pid {info.get('pid')}), "
            f"started {info.get('started_at')}"
        )

    def release(self) -> None:
        if self._lock.is_locked:
            self.info_path.unlink(missing_ok=True)
            self._lock.release()

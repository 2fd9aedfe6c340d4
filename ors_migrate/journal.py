"""The durable run store: SQLite in WAL mode with synchronous=FULL, plus the per-site run lock.

The journal is the source of truth of a run. Intent is recorded before an action starts and its
result after it ends, so a run killed anywhere can be reconciled. Secrets never enter it.
"""

from __future__ import annotations

import datetime as dt
import functools
import getpass
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from ors_migrate import statedir
from ors_migrate.errors import OrsMigrateError, RunLocked
from ors_migrate.events import EventKind
from ors_migrate.processes import pid_alive, process_started
from ors_migrate.statedir import StateDirError

RUN_STATUSES = (
    "running",
    "paused",
    "interrupted",
    "succeeded",
    "failed",
    "rolled_back",
    "abandoned",
)

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
    outcome TEXT,
    playbook_path TEXT
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
CREATE TABLE IF NOT EXISTS plans (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
    plan_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS plan_inputs (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
    inputs TEXT NOT NULL,
    layout TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
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


def _no_plan() -> str:
    return "{}"


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    site_name: str
    site_path: str
    site_digest: str
    playbook: str
    playbook_digest: str
    plan_hash: str
    status: str
    phase: str
    current_state: str | None
    operator: str
    hostname: str
    created_at: str
    updated_at: str
    outcome: str | None
    playbook_path: str | None = None
    read_plan: Callable[[], str] = field(default=_no_plan, repr=False, compare=False)

    @cached_property
    def plan_json(self) -> str:
        """The plan the run started with, as JSON: read from the journal when first asked for,
        not with every listing of the runs (the plan of 500 HA pairs is 11 MB)."""
        return self.read_plan()

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "site": self.site_name,
            "site_path": self.site_path,
            "playbook": self.playbook,
            "playbook_path": self.playbook_path,
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


# A run's `updated_at` is its latest event: computed when read, so that recording an event
# never rewrites the run's row (which holds the whole plan as JSON).
LATEST_EVENT = (
    "COALESCE((SELECT MAX(e.ts) FROM events e WHERE e.run_id = runs.run_id), runs.updated_at)"
)
# A run's plan lives in its own table, so that a status change does not rewrite it (the plan
# of 500 HA pairs is 11 MB of JSON); journals written before keep it in the run's row.
PLAN_JSON = (
    "SELECT COALESCE((SELECT p.plan_json FROM plans p WHERE p.run_id = runs.run_id),"
    " runs.plan_json) FROM runs WHERE run_id = ?"
)
RUN_FIELDS = tuple(f.name for f in fields(RunRecord) if f.name != "read_plan")
RUN_COLUMNS = ", ".join(LATEST_EVENT if name == "updated_at" else name for name in RUN_FIELDS)


class Event(NamedTuple):
    """One journaled event, as read back. A named tuple, not a frozen dataclass: a resume of a
    large run reads tens of thousands, and a tuple is built in a fraction of the time."""

    seq: int
    ts: str
    kind: str
    phase: str
    state_id: str | None
    action_key: str | None
    payload: dict[str, Any]


_new_event = functools.partial(tuple.__new__, Event)


class Journal:
    """The run journal of one state directory. With `create=False` (commands that only read:
    `runs`, `status`, `report`) nothing is created: a state directory without a journal reads
    as one with no runs."""

    def __init__(self, state_dir: Path, *, create: bool = True) -> None:
        # HA pairs run in parallel journal from several threads through this one connection:
        # one write transaction at a time, so each event is atomic and `seq` orders them; reading
        # the events waits for a write under way (on one connection it would see it uncommitted).
        self._lock = threading.RLock()
        self.state_dir = state_dir
        self.path = state_dir / "journal.sqlite3"
        self._read: dict[str, list[Event]] = {}
        self._read_lock = threading.Lock()
        if create:
            statedir.ensure_dir(state_dir)
        exists = statedir.check_dir(state_dir) and statedir.check_file(self.path)
        for suffix in ("-wal", "-shm"):
            statedir.check_file(Path(f"{self.path}{suffix}"))
        marker = statedir.identity(state_dir)
        fresh = not exists or (marker is None and self.path.stat().st_size == 0)
        if exists and self.path.stat().st_size == 0 and marker is not None:
            raise StateDirError(
                self.path, "is empty: the journal was truncated; restore it from a backup"
            )
        if fresh and marker is not None:
            raise StateDirError(
                self.path,
                f"is missing although {statedir.IDENTITY_FILE} says this directory had a "
                "journal; restore it, or move the directory away to start afresh",
            )
        if fresh and not create:
            self.db = self._connect(":memory:")
            return
        if fresh:
            statedir.create_private(self.path)
        self.db = self._connect(str(self.path))
        self._check_identity(marker, create)

    def _connect(self, target: str) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(target, isolation_level=None, timeout=30, check_same_thread=False)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            self.db = db
            self._upgrade_schema()
        except sqlite3.Error as exc:
            raise OrsMigrateError(f"cannot open the run journal {self.path}: {exc}") from None
        if target != ":memory:" and str(mode).lower() != "wal":
            db.close()
            raise OrsMigrateError(
                f"the run journal {self.path} cannot use write-ahead logging (journal mode "
                f"{mode}); keep the state directory on a local file system (--state-dir)"
            )
        return db

    def _check_identity(self, marker: str | None, create: bool) -> None:
        """The journal must be the one this directory created: its id matches the marker file.
        A journal of an earlier version (no id, no marker) is adopted."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
        recorded = row[0] if row else None
        if recorded is None and marker is None:
            if not create:
                return
            value = statedir.new_identity(self.state_dir)
            self.db.execute("INSERT INTO meta VALUES ('identity', ?)", (value,))
            return
        if recorded != marker:
            self.db.close()
            raise StateDirError(
                self.path,
                "is not the journal this state directory created (its identity does not match "
                f"{statedir.IDENTITY_FILE}): it was replaced; refusing to read it",
            )

    def _upgrade_schema(self) -> None:
        """Journals written by earlier versions lack the newer columns: add them."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
        if "playbook_path" not in columns:
            self.db.execute("ALTER TABLE runs ADD COLUMN playbook_path TEXT")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
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
        playbook_path: str | None = None,
        plan_inputs: tuple[str, str] | None = None,
    ) -> str:
        """A new run with its plan; with `plan_inputs`, the digest of what the plan was made
        from and the layout of its JSON (`stored_plan`), which let a resume take it back."""
        run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        stamp = now()
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    site_name,
                    str(Path(site_path).resolve()),
                    site_digest,
                    playbook,
                    playbook_digest,
                    plan_hash,
                    "",
                    "running",
                    "forward",
                    None,
                    operator_name(),
                    socket.gethostname(),
                    stamp,
                    stamp,
                    None,
                    playbook_path,
                ),
            )
            db.execute("INSERT INTO plans VALUES (?,?)", (run_id, plan_json))
            if plan_inputs is not None:
                db.execute("INSERT INTO plan_inputs VALUES (?,?,?)", (run_id, *plan_inputs))
            self._event(
                db, run_id, EventKind.RUN_CREATED, "forward", None, None, {"plan_hash": plan_hash}
            )
        return run_id

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:  # every read waits for a write under way (see __init__)
            row = self.db.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return self._record(row) if row else None

    def _record(self, row: tuple[Any, ...]) -> RunRecord:
        run_id = row[0]
        return RunRecord(
            **dict(zip(RUN_FIELDS, row, strict=True)), read_plan=lambda: self.plan_json(run_id)
        )

    def plan_json(self, run_id: str) -> str:
        """The plan the run started with, as JSON (`{}` for no such run)."""
        with self._lock:
            row = self.db.execute(PLAN_JSON, (run_id,)).fetchone()
        return str(row[0]) if row else "{}"

    def plan_inputs(self, run_id: str) -> tuple[str, str] | None:
        """The digest of what the run's plan was made from and its layout; None for a run
        recorded without."""
        with self._lock:
            row = self.db.execute(
                "SELECT inputs, layout FROM plan_inputs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def runs(self, site_name: str | None = None) -> list[RunRecord]:
        query = f"SELECT {RUN_COLUMNS} FROM runs"
        args: tuple[Any, ...] = ()
        if site_name:
            query += " WHERE site_name = ?"
            args = (site_name,)
        with self._lock:
            rows = self.db.execute(query + " ORDER BY created_at, run_id", args).fetchall()
        return [self._record(r) for r in rows]

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

    def events(self, run_id: str) -> list[Event]:
        """Every event of the run, in order. Each is read and decoded once per journal: a later
        call reads only the events recorded since (by anyone), so resuming a run of 10,000
        events decodes them once, not at every state. The payloads are shared between calls:
        copy one before changing it."""
        with self._lock, self._read_lock:
            known = self._read.setdefault(run_id, [])
            rows = self.db.execute(
                "SELECT seq, ts, kind, phase, state_id, action_key, payload FROM events"
                " WHERE run_id = ? AND seq > ? ORDER BY seq",
                (run_id, known[-1].seq if known else -1),
            ).fetchall()
            if rows:
                # The payloads decoded as one JSON array (two thirds of the time of one by one),
                # put in place of their text column, and the events built without a Python call
                # per event: a resume reads tens of thousands.
                *columns, texts = zip(*rows, strict=True)
                payloads = json.loads("[" + ",".join(texts) + "]")
                known.extend(map(_new_event, zip(*columns, payloads, strict=True)))
            return list(known)

    # Original option values, captured once per application before its first edit
    def has_originals(self, run_id: str, app: str) -> bool:
        with self._lock:
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
        with self._lock:
            row = self.db.execute(
                "SELECT present, value FROM originals WHERE run_id = ? AND app = ? AND section = ?"
                " AND option = ?",
                (run_id, app, section, option),
            ).fetchone()
        if row is None:
            raise KeyError((app, section, option))
        return bool(row[0]), row[1]

    def originals(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db.execute(
                "SELECT app, section, option, present, value, secret FROM originals"
                " WHERE run_id = ? ORDER BY app, section, option",
                (run_id,),
            ).fetchall()
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
    """One run per site: an flock on `locks/SITE.lock` (released by the kernel when the holder
    dies, so a killed run never needs a manual unlock) and an info file naming the holder: host,
    user, pid, run id and start time. Given the site's `estate` (lock key -> what it protects,
    `estate_lock.estate_claims`), it also locks every application and options location, so a
    copy of the site file under another name cannot run against them at the same time; the
    info file then also lists the digests of those claims, for a refused run to name this one."""

    GRACE_S = 1.0

    def __init__(
        self, state_dir: Path, site_name: str, estate: dict[str, str] | None = None
    ) -> None:
        from filelock import FileLock

        from ors_migrate.estate_lock import EstateLock

        self._estate = (
            EstateLock(state_dir, estate, lambda site: RunLock(state_dir, site).live_holder())
            if estate
            else None
        )
        self._wrote_info = False

        self.state_dir = state_dir
        self.lock_dir = lock_dir = state_dir / "locks"
        self.lock_path = lock_dir / f"{site_name}.lock"
        self.info_path = lock_dir / f"{site_name}.holder.json"
        # Never the "soft" fallback of filelock: a lock file that outlives a killed holder would
        # need a manual unlock.
        self._lock = FileLock(str(self.lock_path), timeout=0, mode=0o600, fallback_to_soft=False)
        self.site_name = site_name

    def acquire(self, run_id: str | None) -> None:
        """Take the lock or raise RunLocked naming the holder. When the info file names no live
        holder, the lock may be changing hands: wait a moment before giving up."""
        from filelock import Timeout

        statedir.ensure_dir(self.state_dir)
        statedir.ensure_dir(self.lock_dir)
        statedir.create_private(self.lock_path)
        deadline = time.monotonic() + self.GRACE_S
        while True:
            try:
                self._lock.acquire()
                break
            except Timeout:
                if self.live_holder() is not None or time.monotonic() >= deadline:
                    raise RunLocked(self._held_message()) from None
                time.sleep(0.05)
        info = {
            "host": socket.gethostname(),
            "user": operator_name(),
            "pid": os.getpid(),
            "pid_started": process_started(os.getpid()),
            "run_id": run_id,
            "started_at": now(),
            "site": self.site_name,
            # Written before the first claim is taken: whoever finds a claim held can read here
            # which run holds it.
            "claims": self._estate.claim_digests() if self._estate is not None else [],
        }
        try:
            self._write_info(info)
            if self._estate is not None:
                self._estate.acquire(self.site_name)
        except BaseException:
            self.release()
            raise

    def set_run(self, run_id: str) -> None:
        info = self.holder() or {}
        info["run_id"] = run_id
        self._write_info(info)

    def _write_info(self, info: dict[str, Any]) -> None:
        statedir.write_private(self.info_path, json.dumps(info))
        self._wrote_info = True

    def holder(self) -> dict[str, Any] | None:
        """What the info file says, whether or not its process still lives."""
        try:
            text = statedir.read_private(self.info_path)
            info = json.loads(text) if text is not None else None
        except ValueError:
            return None
        return info if isinstance(info, dict) else None

    def live_holder(self) -> dict[str, Any] | None:
        """The holder named by the info file if it still holds the lock. On this host that is
        its process being alive (the same process: its pid and start time); elsewhere (a state
        directory shared between hosts) only the lock itself can tell."""
        info = self.holder()
        if info is None:
            return None
        if info.get("host") == socket.gethostname():
            return info if pid_alive(info.get("pid"), started=info.get("pid_started")) else None
        return info if self._held_elsewhere() else None

    def _held_elsewhere(self) -> bool:
        from filelock import FileLock, Timeout

        if not statedir.check_file(self.lock_path):
            return False
        probe = FileLock(str(self.lock_path), timeout=0, mode=0o600, fallback_to_soft=False)
        try:
            probe.acquire()
        except Timeout:
            return True
        probe.release()
        return False

    def _held_message(self) -> str:
        info = self.live_holder()
        if not info:
            return f"another run holds the lock for site '{self.site_name}' ({self.lock_path})"
        return (
            f"another run holds the lock for site '{self.site_name}': run {info.get('run_id')} "
            f"by {info.get('user')} on {info.get('host')} (pid {info.get('pid')}), "
            f"started {info.get('started_at')}"
        )

    def release(self) -> None:
        if self._estate is not None:
            self._estate.release()
        if self._lock.is_locked:
            if self._wrote_info:
                self.info_path.unlink(missing_ok=True)
                self._wrote_info = False
            self._lock.release()

"""The run journal (SPEC 3.5): SQLite in WAL mode with synchronous=FULL, the original option
values captured before the first edit of each application, and no secret in it."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

from conftest import cli
from tiny_site import APPS, make_tiny_site

from ors_migrate.journal import Journal

EDITS = """
name: edits
title: Edit options twice
states:
  - id: prepare-first
    title: the preparation options
    seed_step: prepare.4
    scope: app
    actions:
      - do: options.set
        with: {set: preparation}
  - id: enable-after
    title: then type=redis
    seed_step: enable.1
    scope: app
    actions:
      - do: options.set
        with: {set: enable}
"""


def test_journal_uses_write_ahead_logging_and_full_synchronous_commits(tmp_path):
    journal = Journal(tmp_path / "state")
    try:
        assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert journal.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        journal.close()
    other = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_state_directory_is_private_to_the_operator(tmp_path):
    Journal(tmp_path / "state").close()
    assert (tmp_path / "state").stat().st_mode & 0o077 == 0


def _run(site_path: Path, playbook: Path, state_dir: Path, **env: str) -> str:
    done = cli(
        "run",
        str(site_path),
        "--playbook",
        str(playbook),
        "--yes",
        "--state-dir",
        str(state_dir),
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    journal = Journal(state_dir)
    try:
        return journal.runs()[-1].run_id
    finally:
        journal.close()


def test_originals_are_captured_before_the_first_edit_of_each_application(tmp_path):
    site = make_tiny_site(tmp_path / "site")
    before = {app: site.options(app).read_bytes() for app in APPS}

    run_id = _run(site.path, site.write_playbook("edits", EDITS), tmp_path / "state")

    assert all(b"type=redis" in site.options(app).read_bytes() for app in APPS)
    journal = Journal(tmp_path / "state")
    try:
        originals = {(o["app"], o["section"], o["option"]): o for o in journal.originals(run_id)}
        for app in APPS:
            # Captured before prepare-first wrote redis-nodes, and not overwritten when the
            # second edit of the same application wrote type=redis.
            assert originals[(app, "persistence", "type")]["value"] == "cassandra"
            assert originals[(app, "persistence", "redis-nodes")]["present"] is False
            kept = site.options(app).with_name(f"{app}.ini.{run_id}.orig").read_bytes()
            assert kept == before[app]
    finally:
        journal.close()


def test_secrets_never_enter_the_journal(tmp_path):
    secret = "s3cret-Redis-pass-4711"
    site = make_tiny_site(tmp_path / "site", redis_password="TINY_REDIS_PASSWORD")

    run_id = _run(
        site.path,
        site.write_playbook("edits", EDITS),
        tmp_path / "state",
        TINY_REDIS_PASSWORD=secret,
    )

    assert f"password={secret}" in site.options("ors-a").read_text()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("journal.sqlite3*"))
    assert secret.encode() not in stored
    journal = Journal(tmp_path / "state")
    try:
        password = [o for o in journal.originals(run_id) if o["option"] == "password"]
        assert password and all(o["secret"] for o in password)
        texts = [str(e.payload) for e in journal.events(run_id)]
        assert any("***" in t for t in texts) and not any(secret in t for t in texts)
    finally:
        journal.close()


def test_backups_and_pristine_copies_are_0600_and_an_exposed_password_is_warned(tmp_path):
    secret = "s3cret-Redis-pass-4711"
    site = make_tiny_site(tmp_path / "site", redis_password="TINY_REDIS_PASSWORD")
    site.options("ors-a").chmod(0o644)
    site.options("ors-b").chmod(0o600)
    playbook = site.write_playbook("edits", EDITS)
    done = cli(
        "run",
        str(site.path),
        "--playbook",
        str(playbook),
        "--yes",
        "--state-dir",
        str(tmp_path / "state"),
        env={"TINY_REDIS_PASSWORD": secret},
    )
    assert done.returncode == 0, done.stderr[-2000:]

    for app in APPS:
        options = site.options(app)
        backup = options.with_name(options.name + ".ors-migrate.bak")
        pristine = next(options.parent.glob(f"{options.name}.*.orig"))
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
        assert stat.S_IMODE(pristine.stat().st_mode) == 0o600
    # The options file keeps its own mode (the site's to choose) but the exposure is named.
    assert stat.S_IMODE(site.options("ors-a").stat().st_mode) == 0o644
    warned = [line for line in done.stderr.splitlines() if "Redis password is now in" in line]
    assert len(warned) == 1 and str(site.options("ors-a")) in warned[0]
    assert "mode 0644" in warned[0]
    assert secret not in done.stderr


class _GiveUp(Exception):
    """The writer of the test rolls its transaction back."""


def test_reads_from_other_threads_wait_for_a_write_under_way(tmp_path):
    """HA pairs share one connection: a read must not see another thread's uncommitted write."""
    journal = Journal(tmp_path / "state")
    run_id = journal.create_run(
        site_name="s", site_path="s.yaml", site_digest="d", playbook="p",
        playbook_digest="d", plan_hash="h", plan_json="{}",
    )  # fmt: skip
    journal.save_originals(run_id, "ors-a", [("persistence", "type", "cassandra", False)])
    reads: dict[str, Any] = {
        "get_run": lambda: journal.get_run(run_id).status,  # type: ignore[union-attr]
        "runs": lambda: [r.status for r in journal.runs()],
        "has_originals": lambda: journal.has_originals(run_id, "ors-b"),
        "original": lambda: journal.original(run_id, "ors-a", "persistence", "type"),
        "originals": lambda: [o["value"] for o in journal.originals(run_id)],
    }
    committed = {name: read() for name, read in reads.items()}
    seen: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda n=name, r=read: seen.update({n: r()}))
        for name, read in reads.items()
    ]
    try:
        with journal._tx() as db:  # a write another thread has under way, then rolled back
            db.execute("UPDATE runs SET status = 'failed'")
            db.execute("UPDATE originals SET value = 'redis'")
            db.execute("INSERT INTO originals VALUES (?, 'ors-b', 's', 'o', 1, 'v', 0)", (run_id,))
            for thread in threads:
                thread.start()
            threads[-1].join(0.3)  # time enough for every reader to return, were it not held
            assert seen == {}, "a read returned while a write was under way"
            raise _GiveUp
    except _GiveUp:
        pass
    for thread in threads:
        thread.join(5)
    assert seen == committed
    assert committed["get_run"] != "failed" and committed["has_originals"] is False
    journal.close()

"""A rollback that cannot bring a member back finishes every other HA pair first, never restarts
that pair's primary, says which application needs a hand, what was tried and how each pair
stands, and `ors-migrate rollback` again continues where it stopped. On a lab of one ORS cluster
with two HA pairs (see rollback_lab.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli
from durable_runs import lab_apps, run_status
from rollback_lab import assert_rolled_back, enable_playbook, fault, start_run, upgraded_lab

from ors_migrate.lab.faults import clear_faults
from ors_migrate.lab.lab import lab_down

pytestmark = pytest.mark.slow


def starts(apps: list[dict[str, object]]) -> dict[str, object]:
    return {a["app"]: a["starts"] for a in apps}


def test_a_member_that_cannot_start_is_reported_after_every_other_pair_and_rollback_resumes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "lab"
    root.mkdir()
    lab = upgraded_lab(root, pairs=2)
    try:
        state_dir = tmp_path / "state"
        # enable.1 restarts each pair's backup; pair 2's cannot start, even with its original
        # options back, until the operator fixes it.
        fault(lab, "ors-cl1-p2-b", "refuse-start", times=None)
        proc = start_run(lab, state_dir, enable_playbook(lab))
        _, err = proc.communicate(timeout=300)

        assert proc.returncode == 1, err[-4000:]
        assert run_status(state_dir) == "failed"
        message = err[err.index("the rollback could not finish") :]
        assert "HA pair cl1-pair2 needs a hand (ors-cl1-p2-b)" in message
        assert "ors-cl1-p2-b cannot start with its original options" in message
        assert "its log ends:" in message and "refused to start: lab fault refuse-start" in message
        assert "options.set ors-cl1-p2-b: done; service.restart ors-cl1-p2-b: failed" in message
        assert "Every other pair was rolled back (cl1-pair1)" in message
        assert "cl1-pair1: ors-cl1-p1-a primary (cassandra), ors-cl1-p1-b backup (cassandra)" in (
            message
        ) or "cl1-pair1: ors-cl1-p1-a backup (cassandra), ors-cl1-p1-b primary (cassandra)" in (
            message
        )
        assert "cl1-pair2: ors-cl1-p2-a primary (cassandra), ors-cl1-p2-b down" in message
        assert "run `ors-migrate rollback " in message and "continues where it stopped" in message
        apps = lab_apps(lab)
        # Pair 2's primary was never restarted: its peer is not a running backup.
        assert starts(apps)["ors-cl1-p2-a"] == 1
        before = starts(apps)

        clear_faults(lab, "ors-cl1-p2-b")  # the operator's fix
        again = cli("rollback", "--yes", "--state-dir", str(state_dir))

        assert again.returncode == 0, again.stderr[-4000:]
        assert "End state: cl1-pair1:" in again.stderr and "; cl1-pair2: " in again.stderr
        assert_rolled_back(lab, state_dir)
        after = starts(lab_apps(lab))
        # Continued where it stopped: pair 1 was not restarted again; pair 2 was: its backup
        # started, switched over, its old primary restarted.
        assert {app: after[app] - before[app] for app in after} == {  # type: ignore[operator]
            "ors-cl1-p1-a": 0,
            "ors-cl1-p1-b": 0,
            "ors-cl1-p2-a": 1,
            "ors-cl1-p2-b": 1,
        }
    finally:
        lab_down(root)

"""The rollback is the safety net: a run made to fail at each world-changing action of enable.1
to enable.5 rolls back by itself to the documented end state (every application on its
persistence type before the run, one primary and one backup per HA pair, status `rolled_back`,
exit 1), from whatever state the failure left.

Failure points: the 6 world-changing actions of enable.1-5 on one HA pair (enable.2, enable.3
and enable.5 only verify): enable.1 and enable.4 each set `type=redis` on the backup, restart
it and switch over. Failure kinds, one per point, chosen so that the run fails at that point
where the kind can make it fail there:

- enable.1 options.set: Redis lost (every node killed); the run fails at enable.2 (the new
  primary cannot persist);
- enable.1 restart: Redis lost, and the backup refuses to start (the case reported in the
  issue); the run fails at the restart;
- enable.1 switchover: a switchover that does not take effect; fails at the switchover;
- enable.4 options.set: Redis lost; fails at enable.5;
- enable.4 restart: the backup refuses to start; fails at the restart, and its rollback is
  killed mid-switchover and resumed with `ors-migrate rollback`;
- enable.4 switchover: a switchover that does not take effect; fails at the switchover.

A refusal to start and an ignored switchover act once (`--times 1`): with its original options
restored the member starts, and the rollback's own switchover takes effect. They are set when
the state's first action (its option edit) starts, so they are in place before the restart or
switchover they break; Redis is killed when the action of the point starts. One lab serves
every case (Redis brought back and faults cleared between cases), with the enable steps only
(see rollback_lab.py)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import cli, processes_under
from rollback_lab import (
    ENABLE_1,
    ENABLE_4,
    assert_rolled_back,
    enable_playbook,
    fault,
    intent_of,
    journal_events,
    lose_redis,
    reset,
    start_run,
    upgraded_lab,
    wait_for,
)

from ors_migrate.lab.lab import lab_down
from ors_migrate.lab.layout import LabLayout

pytestmark = pytest.mark.slow

OPTIONS, RESTART, SWITCHOVER = 0, 1, 2  # the actions of enable.1 and enable.4
SWITCHOVER_OF_ROLLBACK = 1  # standard-restart: restart the backup, switch over, restart


@dataclass(frozen=True)
class Case:
    state: str
    index: int
    redis_lost: bool = False
    refuse_start: bool = False
    switchover_ignored: bool = False
    kill_rollback: bool = False
    fails_at: str = ""

    def __str__(self) -> str:
        step = "enable.1" if self.state == ENABLE_1 else "enable.4"
        action = ("options.set", "restart", "switchover")[self.index]
        kinds = [
            name
            for name, on in (
                ("redis-lost", self.redis_lost),
                ("refuse-start", self.refuse_start),
                ("switchover-ignored", self.switchover_ignored),
                ("rollback-killed", self.kill_rollback),
            )
            if on
        ]
        return f"{step}-{action}-{'+'.join(kinds)}"


CASES = [
    Case(ENABLE_1, OPTIONS, redis_lost=True, fails_at="verify-first-switchover"),
    Case(ENABLE_1, RESTART, redis_lost=True, refuse_start=True, fails_at=ENABLE_1),
    Case(ENABLE_1, SWITCHOVER, switchover_ignored=True, fails_at=ENABLE_1),
    Case(ENABLE_4, OPTIONS, redis_lost=True, fails_at="verify-all-on-redis"),
    Case(ENABLE_4, RESTART, refuse_start=True, kill_rollback=True, fails_at=ENABLE_4),
    Case(ENABLE_4, SWITCHOVER, switchover_ignored=True, fails_at=ENABLE_4),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabLayout]:
    root = tmp_path_factory.mktemp("lab")
    try:
        yield upgraded_lab(root, pairs=1)
    finally:
        lab_down(root)
        left = [p for p in processes_under(root) if "redis-server" in p or "ors_migrate.lab" in p]
        assert not left, f"processes left running after lab down: {left}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_run_failing_at_this_point_rolls_back_to_the_documented_end_state(
    lab: LabLayout, case: Case, tmp_path: Path
) -> None:
    reset(lab)
    state_dir = tmp_path / "state"
    proc = start_run(lab, state_dir, enable_playbook(lab))
    member = wait_for(state_dir, intent_of(case.state, OPTIONS), proc)["app"]
    if case.refuse_start:
        fault(lab, member, "refuse-start")
    if case.switchover_ignored:
        fault(lab, member, "switchover-ignored")
    if case.redis_lost:
        wait_for(state_dir, intent_of(case.state, case.index), proc)
        lose_redis(lab)

    if case.kill_rollback:
        wait_for(state_dir, intent_of("standard-restart", SWITCHOVER_OF_ROLLBACK), proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        status = json.loads(cli("status", "--json", "--state-dir", str(state_dir)).stdout)
        assert (status["status"], status["phase"]) == ("interrupted", "rollback")
        resumed = cli("rollback", "--yes", "--state-dir", str(state_dir))
        assert resumed.returncode == 0, resumed.stderr[-4000:]
        assert "End state: cl1-pair1: ors-cl1-p1-a " in resumed.stderr
        # The switchover under way when the rollback was killed is reconciled from the live
        # roles, never sent blindly again.
        assert any(
            e.kind == "action_reconciled" and (e.action_key or "").startswith("standard-restart/")
            for e in journal_events(state_dir)
        )
    else:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err[-4000:]
        assert f"rolled back after: state {case.fails_at} failed" in err, err[-4000:]
        assert "End state: cl1-pair1: ors-cl1-p1-a " in err
    assert_rolled_back(lab, state_dir)
    events = journal_events(state_dir)
    assert any(e.kind == "rollback_started" for e in events)
    if case.refuse_start:
        assert f"{member} cannot start with its options" in json.dumps(
            [e.payload for e in events if e.kind == "action_failed"]
        )
        # The member that could not start was started by the rollback, after its options.
        restarts = [
            e.payload["app"]
            for e in events
            if e.kind == "action_intent"
            and "standard-restart/" in (e.action_key or "")
            and "app" in e.payload
        ]
        assert restarts[0] == member
    if case.switchover_ignored:
        assert "did not become primary" in json.dumps(
            [e.payload for e in events if e.kind == "action_failed"]
        )

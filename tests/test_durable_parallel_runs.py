"""Durable runs under concurrency (issue: parallel waves): `ors-migrate run --parallel 3`
killed with SIGKILL while several actions are in flight resumes to the end state of an
uninterrupted run, no switchover sent twice; and a run that loses Redis after enable.1 rolls
back by itself.

Runs are separate processes, killed from outside: the test watches the run's SQLite journal
and sends SIGKILL when a chosen point appears."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import cli
from durable_runs import (
    RUN_TIMEOUT_S,
    Event,
    cli_json,
    has_event,
    journal_events,
    lab_apps,
    run_status,
    sim_starts,
)
from service_record import both_members_down, most_pairs_busy

from ors_migrate.lab.layout import LabLayout, read_json
from ors_migrate.lab.redis_cluster import RedisClusterLab


# Kill points of a parallel run: moments with two or more actions in flight.
@dataclass(frozen=True)
class ParallelKill:
    """In `state`: `intents` (at least `count` actions of `action`, or of any action, begun
    and not ended: a kill mid-action in several pairs), `landed` (a switchover's command took
    effect in the lab and at least one other action is in flight) or `ended` (an action ended
    while at least `count` others are in flight: a boundary). Counted from the events of the
    process being killed, so what an earlier kill left open does not count."""

    state: str
    kind: str
    count: int = 2
    action: str | None = None


PARALLEL_SAMPLE = [
    ParallelKill("standard-restart", "intents", 2, "service.restart"),
    ParallelKill("standard-restart", "landed"),
    ParallelKill("verify-prepared", "intents", 2),
    ParallelKill("enable-redis-on-backups", "ended", 2),
    ParallelKill("enable-redis-on-backups", "landed"),
    ParallelKill("verify-first-switchover", "intents", 2),
    ParallelKill("enable-redis-on-new-backups", "intents", 2, "service.switchover"),
    ParallelKill("verify-all-on-redis", "ended", 2),
]


def in_flight(events: list[Event], since: int, state: str) -> list[Event]:
    """Intents of `state` recorded by the current process whose action has not ended."""
    done = {e.action_key for e in events if e.kind in ("action_ended", "action_failed")}
    return [
        e
        for e in events[since:]
        if e.kind == "action_intent" and e.state_id == state and e.action_key not in done
    ]


def parallel_point_reached(
    lab: LabLayout, plan: dict[str, Any], point: ParallelKill, since: int
) -> Callable[[list[Event]], bool]:
    action_of = {a["key"]: a["action"] for s in plan["states"] for a in s["actions"]}

    def reached(events: list[Event]) -> bool:
        flying = in_flight(events, since, point.state)
        if point.kind == "intents":
            matching = [e for e in flying if point.action in (None, action_of[e.action_key])]
            return len(matching) >= point.count
        if point.kind == "landed":
            for e in flying:
                pair = e.payload.get("pair")
                landed = pair and (read_json(lab.pair(pair)) or {}).get("primary") == e.payload.get(
                    "new_primary"
                )
                if action_of[e.action_key] == "service.switchover" and landed:
                    return len(flying) >= 2
            return False
        ended_here = any(
            e.kind == "action_ended" and e.state_id == point.state for e in events[since:]
        )
        return ended_here and len(flying) >= point.count

    return reached


def state_over(state: str) -> Callable[[list[Event]], bool]:
    return has_event("state_ended", state=state)


@pytest.mark.slow
def test_a_parallel_run_killed_with_several_actions_in_flight_resumes_to_the_same_end_state(
    make_lab, runs_of
):
    """`run --parallel 3` on one ORS cluster of three HA pairs, SIGKILLed at a sample of
    moments with two or more actions in flight and resumed each time (`--resume --yes`, which
    keeps the run's parallelism), ends as an uninterrupted run ends, no switchover sent twice.

    The sample, not every boundary (test_durable_runs.py does that, serially, at far greater
    cost): in each state per HA pair that changes the world or verifies it, one kill of each kind of
    moment that only a parallel run has: several restarts begun (prepare.5), a switchover whose
    command took effect beside other actions (prepare.5, enable.1), several verifications
    begun (prepare.6, enable.2), a boundary with two others in flight (enable.1, enable.5) and
    several switchovers begun (enable.4: the one that must restore sessions). A point whose
    moment did not come (the pairs drifted apart) is killed at its state's end instead and
    counted; most must be genuine."""
    lab = make_lab(clusters=1, pairs_per_cluster=3)
    plan = json.loads(cli("plan", str(lab.site), "--format", "json").stdout)
    apps = lab_apps(lab)
    original_backups = {a["ha_pair"]: a["app"] for a in apps if a["role"] == "backup"}
    starts_before = {a["app"]: sim_starts(lab, a["app"]) for a in apps}
    runs = runs_of(lab.site)

    since = len(journal_events(runs.state_dir))
    proc = runs.start("--yes", "--parallel", "3")
    genuine: list[ParallelKill] = []
    for point in PARALLEL_SAMPLE:
        wanted = parallel_point_reached(lab, plan, point, since)
        if not runs.kill_when(proc, lambda ev, w=wanted, s=point.state: w(ev) or state_over(s)(ev)):
            break
        events = journal_events(runs.state_dir)
        if wanted(events):
            genuine.append(point)
        if run_status(runs.state_dir) == "succeeded":
            break
        since = len(events)
        proc = runs.start("--resume", "--yes")
    else:
        assert runs.finish(proc) == 0, runs.tail()

    print(f"\n{len(genuine)} of {len(PARALLEL_SAMPLE)} kills with 2+ actions in flight")
    assert {p.kind for p in genuine} == {"intents", "landed", "ended"}
    assert len(genuine) >= len(PARALLEL_SAMPLE) - 2
    assert all("up to 3 HA pairs at a time" in log.read_text() for log in runs.started)

    # The end state of an uninterrupted run.
    status = cli_json("lab", "status", "--dir", str(lab.root))
    apps = status["apps"]
    assert {a["type"] for a in apps} == {"redis"}
    assert {a["ha_pair"]: a["app"] for a in apps if a["role"] == "primary"} == original_backups
    promotions = [p for p in status["switchovers"] if p["from"]]
    per_pair = {pair: sum(p["pair"] == pair for p in promotions) for pair in original_backups}
    assert per_pair == {pair: 3 for pair in original_backups}, "a switchover repeated or skipped"
    assert {a["app"]: sim_starts(lab, a["app"]) - starts_before[a["app"]] for a in apps} == {
        a["app"]: 2 for a in apps
    }
    assert both_members_down(status["services"]) == []
    assert most_pairs_busy(status["services"])[0] >= 2
    events = journal_events(runs.state_dir)
    ended = [e.action_key for e in events if e.kind == "action_ended"]
    assert sorted(ended) == sorted(a["key"] for s in plan["states"] for a in s["actions"])
    assert [r["status"] for r in cli_json("runs", "--state-dir", str(runs.state_dir))] == [
        "succeeded"
    ]


def kill_redis(lab: LabLayout) -> None:
    redis = RedisClusterLab.from_dir(lab.root)
    for port in redis.ports:
        redis.kill_node(port)


@pytest.mark.slow
def test_redis_lost_after_enable_1_fails_verification_and_rolls_back_by_itself(make_lab, runs_of):
    lab = make_lab(clusters=1, pairs_per_cluster=2)
    config = json.loads(lab.config.read_text())
    options_before = {app: lab.options(app).read_bytes() for app in config["apps"]}
    types_before = {a["app"]: a["type"] for a in lab_apps(lab)}
    runs = runs_of(lab.site)

    proc = runs.start("--yes")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not has_event("state_ended", state="enable-redis-on-backups")(
        journal_events(runs.state_dir)
    ):
        assert proc.poll() is None and time.monotonic() < deadline, runs.tail()
        time.sleep(0.02)
    kill_redis(lab)

    assert runs.finish(proc) == 1, runs.tail()
    output = runs.tail()
    # The first verification after enable.1 fails, and says why: the new primaries cannot
    # persist to Redis, whose nodes refuse connections.
    assert "rolled_back: rolled back after: state verify-first-switchover" in output
    assert "cannot persist sessions to redis" in output, output
    assert re.search(r"127\.0\.0\.1:\d+\. Connection refused", output), output

    summary = cli_json("runs", "--state-dir", str(runs.state_dir))[0]
    assert summary["status"] == "rolled_back"
    one = cli_json("status", summary["run_id"], "--state-dir", str(runs.state_dir))
    assert one["status"] == "rolled_back"
    assert one["rollback_states_done"][:3] == [
        "disable-redis",
        "standard-restart",
        "verify-rolled-back",
    ]
    apps = lab_apps(lab)
    assert {a["app"]: a["type"] for a in apps} == types_before
    roles: dict[str, list[str]] = {}
    for a in apps:
        roles.setdefault(a["ha_pair"], []).append(a["role"])
    assert all(sorted(r) == ["backup", "primary"] for r in roles.values())

    back = cli(
        "rollback", summary["run_id"], "--to", "start", "--yes", "--state-dir", str(runs.state_dir)
    )
    assert back.returncode == 0, back.stderr[-3000:]
    assert {app: lab.options(app).read_bytes() for app in config["apps"]} == options_before

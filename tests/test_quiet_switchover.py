"""`--switchover-below N --switchover-wait T`: before the first switchover of each pair, where
the sessions in progress are lost, the run waits for a quieter moment on the primary, journals
what it saw, and switches anyway once T has passed."""

from __future__ import annotations

import json

from conftest import cli

from ors_migrate.estimate import QUIET_FROM_RUN
from ors_migrate.journal import Journal
from ors_migrate.lab.ors_sim import SeededLoad

# The simulator takes the seeded calls at its ticks (TICK_S, 0.05 s apart, later on a busy
# machine): a call that started up to this long before a poll may not be in its count yet.
TICK_LAG_S = 1.0
SEED = 7


def test_first_switchover_waits_for_fewer_sessions_and_journals_what_it_saw(make_lab, tmp_path):
    lab = make_lab(clusters=1, pairs_per_cluster=1, load_seed=SEED)
    state_dir = tmp_path / "state"
    done = cli(
        "run",
        str(lab.site),
        "--yes",
        "--state-dir",
        str(state_dir),
        "--switchover-below",
        "14",
        "--switchover-wait",
        "40",
    )
    assert done.returncode == 0, done.stderr[-3000:]

    journal = Journal(state_dir)
    try:
        run_id = journal.runs()[-1].run_id
        events = journal.events(run_id)
    finally:
        journal.close()
    assert [e.payload for e in events if e.kind == "switchover_policy"] == [
        {"below": 14, "wait_s": 40.0}
    ]
    # The estimate at the start counted each first switchover's wait, and said whose figure.
    estimate = next(e.payload for e in events if e.kind == "estimate")
    first = next(s for s in estimate["states"] if s["id"] == "enable-redis-on-backups")
    assert QUIET_FROM_RUN in first["sources"]
    waits = [
        (e.state_id, e.payload["observed"])
        for e in events
        if e.kind == "action_ended" and "quiet_wait" in e.payload.get("observed", {})
    ]
    # Only enable.1 waits: at enable.4 the sessions in progress are restored from Redis.
    assert [state for state, _ in waits] == ["enable-redis-on-backups"]
    wait = waits[0][1]["quiet_wait"]
    assert wait["sessions_when_due"] is not None and wait["polls"] >= 1
    assert wait["quiet"] == (wait["sessions_at_last_poll"] < 14)
    assert wait["quiet"] or wait["waited_s"] >= 40
    promotions = [json.loads(line) for line in lab.events.read_text().splitlines()]
    first_to_redis = next(p for p in promotions if p["store"] == "redis")
    # What the switchover lost is what was in progress when it finally happened: the count of
    # the wait's last poll, plus at most the calls of the lab's seeded load that started
    # between that poll and the promotion (the old primary was demoted before it). Calls that
    # ended meanwhile only lower the loss.
    calls = SeededLoad(SEED, first_to_redis["pair"], json.loads(lab.config.read_text()))
    since_poll = [
        start
        for start, _ in calls.calls_until(first_to_redis["at"])
        if start > wait["last_poll_at"] - TICK_LAG_S
    ]
    assert first_to_redis["lost"] <= wait["sessions_at_last_poll"] + len(since_poll)


def in_progress(calls: list[tuple[float, float]], at: float) -> int:
    return sum(1 for start, end in calls if start <= at < end)


def test_a_seeded_lab_load_is_the_same_calls_however_the_simulator_ticks():
    config = {"load_epoch": 1000.0, "session_rate": 8.0, "session_wave_s": 30.0}
    coarse = SeededLoad(7, "cl1-pair1", config)
    fine = SeededLoad(7, "cl1-pair1", config)
    other_pair = SeededLoad(7, "cl1-pair2", config)
    other_seed = SeededLoad(8, "cl1-pair1", config)

    calls = coarse.calls_until(1090.0)
    ticked = [c for step in range(1, 1801) for c in fine.calls_until(1000.0 + step * 0.05)]

    assert calls == ticked and len(calls) > 500
    assert calls != other_pair.calls_until(1090.0) != other_seed.calls_until(1090.0)
    counts = [in_progress(calls, 1000.0 + t) for t in range(10, 90)]
    assert max(counts) > 3 * min(counts)  # the wave: quiet moments come and go


def test_the_demo_sets_switching_at_once_beside_the_lowest_seen_and_the_loss_after_waiting():
    from types import SimpleNamespace

    from ors_migrate.demo import _quiet_wait_lines

    wait = {
        "policy": "lowest",
        "sessions_when_due": 41,
        "lowest_seen": 8,
        "waited_s": 12.5,
    }
    ended = SimpleNamespace(
        kind="action_ended",
        payload={
            "observed": {"primary": "ors-cl1-p1-b", "quiet_wait": wait, "promotion": {"lost": 9}}
        },
    )
    journal = SimpleNamespace(events=lambda run_id: [ended])

    lines = _quiet_wait_lines(journal, "run", load_seed=7)

    assert "load seed 7" in lines[0]
    assert "at once:   41 in progress" in lines[1] and "lowest seen    8, lost    9" in lines[1]
    assert "41 in progress when due (lost switching at once), lowest seen 8, 9 lost" in lines[2]

"""The plan's estimate and the change window: durations from the site file, from an earlier run
of the same site or our labelled defaults; `run --window-end` starts no disruptive step that
would end after the window and pauses at the last safe point, resumable in the next window."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from conftest import REPO, cli
from tiny_site import STANDARD_RESTART_STATE, make_tiny_site

from ors_migrate.engine import pause_points
from ors_migrate.errors import InputError
from ors_migrate.estimate import (
    QUIET_FROM_SITE,
    SOURCE_OURS,
    SOURCE_SITE,
    estimate_plan,
    parse_window_end,
)
from ors_migrate.render import render_plan
from ors_migrate.runner import durations_for, load_playbook, make_plan
from ors_migrate.site import load_site

UPGRADE_AND_RESTART = (
    """
name: upgrade-and-restart
title: Upgrade, then the standard restart
states:
  - id: upgrade-ors
    title: ORS applications are installed at the target version
    seed_step: prepare.3
    scope: app
    actions:
      - do: ors.upgrade
"""
    + STANDARD_RESTART_STATE
)
DURATIONS = "durations:\n  restart_s: 40\n  switchover_s: 10\n  upgrade_s: 1\n"
FIRST_SWITCHOVER = """
name: first-switchover
title: The first switchover, at a quiet moment
states:
  - id: first-switchover
    title: Switch over where the sessions in progress are lost
    seed_step: enable.1
    scope: ha_pair
    actions:
      - do: service.switchover
        with: {wait_for_quiet: true}
"""


def _in(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def test_window_end_reads_a_time_of_day_or_a_timestamp_and_refuses_the_past():
    now = dt.datetime(2026, 12, 1, 22, 30, tzinfo=dt.UTC)
    tonight = parse_window_end("23:45", now)
    assert tonight > now and tonight - now < dt.timedelta(days=1)
    assert tonight.astimezone(now.astimezone().tzinfo).strftime("%H:%M") == "23:45"
    assert parse_window_end("04:00", now) - now < dt.timedelta(days=1)  # the next 04:00
    stamp = parse_window_end("2026-12-02T05:00:00+00:00", now)
    assert stamp == dt.datetime(2026, 12, 2, 5, 0, tzinfo=dt.UTC)
    for wrong in ("2026-12-01T21:00:00+00:00", "soon", "25:00"):
        with pytest.raises(InputError, match="--window-end"):
            parse_window_end(wrong, now)


def test_a_run_pauses_only_between_pairs_and_never_inside_a_state_that_enables_redis():
    example = load_site(REPO / "examples" / "site.yaml")
    plan = make_plan(example, load_playbook("migrate-to-redis"))
    by_id = {state.id: state for state in plan.states}
    restart = pause_points(by_id["standard-restart"])
    assert [len(unit) for unit in restart] == [3] * 5  # restart backup, switchover, restart
    assert all(len({step.target.ha_pair for step in unit}) == 1 for unit in restart)
    for enabling in ("enable-redis-on-backups", "enable-redis-on-new-backups"):
        assert by_id[enabling].enables_redis
        assert pause_points(by_id[enabling]) == [by_id[enabling].actions]
    assert [len(unit) for unit in pause_points(by_id["upgrade-ors"])] == [1] * 10


def test_plan_estimates_from_the_site_then_from_an_earlier_run(tmp_path):
    site = make_tiny_site(tmp_path / "site")
    playbook = site.write_playbook("pb", UPGRADE_AND_RESTART)
    state = str(tmp_path / "state")

    shown = cli("plan", str(site.path), "-p", str(playbook), "--state-dir", state)
    assert shown.returncode == 0, shown.stderr
    assert "estimated duration" in shown.stdout and SOURCE_OURS in shown.stdout
    assert not (tmp_path / "state").exists()  # planning creates nothing

    site.path.write_text(site.path.read_text() + DURATIONS)
    planned = json.loads(
        cli("plan", str(site.path), "-p", str(playbook), "-f", "json", "--state-dir", state).stdout
    )
    restart = next(s for s in planned["estimate"]["states"] if s["id"] == "standard-restart")
    assert restart["seconds"] == 90.0 and restart["sources"] == [SOURCE_SITE]

    done = cli("run", str(site.path), "-p", str(playbook), "--yes", "--state-dir", state)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(cli("runs", "--json", "--state-dir", state).stdout)[0]["run_id"]
    site.path.write_text(site.path.read_text().replace(DURATIONS, ""))
    measured = json.loads(
        cli("plan", str(site.path), "-p", str(playbook), "-f", "json", "--state-dir", state).stdout
    )
    restart = next(s for s in measured["estimate"]["states"] if s["id"] == "standard-restart")
    assert restart["sources"] == [f"run {run_id}"]
    assert restart["seconds"] < 30  # the tiny site's restarts take a moment, not our 90 s

    report = json.loads(cli("report", run_id, "-f", "json", "--state-dir", state).stdout)
    compared = report["estimate"]
    assert compared["total_estimated_s"] > 0 and compared["total_actual_s"] > 0
    assert {s["state_id"] for s in compared["states"]} == {"upgrade-ors", "standard-restart"}


def test_window_end_pauses_at_a_safe_point_and_resume_finishes(tmp_path):
    site = make_tiny_site(tmp_path / "site")
    site.path.write_text(site.path.read_text() + DURATIONS)
    playbook = site.write_playbook("pb", UPGRADE_AND_RESTART)
    state = str(tmp_path / "state")

    paused = cli(
        "run", str(site.path), "-p", str(playbook), "--yes", "--state-dir", state,
        "--window-end", _in(60),
    )  # fmt: skip
    assert paused.returncode == 130, paused.stderr
    assert "paused at a safe point before 'standard-restart'" in paused.stderr
    assert "about 1 min 30 s" in paused.stderr  # what is left
    run = json.loads(cli("runs", "--json", "--state-dir", state).stdout)[0]
    assert run["status"] == "paused"
    assert (site.role("ors-a"), site.role("ors-b")) == ("primary", "backup")
    events = json.loads(cli("report", run["run_id"], "-f", "json", "--state-dir", state).stdout)
    assert [s["status"] for s in events["timeline"]][:1] == ["done"]  # the upgrade ran

    resumed = cli("run", str(site.path), "-p", str(playbook), "--yes", "--resume",
                  "--state-dir", state)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert (site.role("ors-a"), site.role("ors-b")) == ("backup", "primary")


@pytest.mark.slow
def test_window_end_on_a_lab_stops_with_every_pair_settled_and_resume_finishes(make_lab, tmp_path):
    lab = make_lab(clusters=1, pairs_per_cluster=2)
    lab.site.write_text(lab.site.read_text() + DURATIONS)
    state = str(tmp_path / "state")

    paused = cli("run", str(lab.site), "--yes", "--state-dir", state, "--window-end", _in(60))
    assert paused.returncode == 130, paused.stderr[-3000:]
    assert "paused at a safe point before 'standard-restart'" in paused.stderr
    status = json.loads(cli("lab", "status", "--dir", str(lab.root), "--json").stdout)
    pairs: dict[str, list[str]] = {}
    for app in status["apps"]:
        pairs.setdefault(app["ha_pair"], []).append(app["role"])
    assert all(sorted(roles) == ["backup", "primary"] for roles in pairs.values()), pairs
    assert {a["type"] for a in status["apps"]} == {"cassandra"}

    resumed = cli("run", str(lab.site), "--yes", "--resume", "--state-dir", state)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    status = json.loads(cli("lab", "status", "--dir", str(lab.root), "--json").stdout)
    assert {a["type"] for a in status["apps"]} == {"redis"}


def test_the_gate_screen_shows_the_time_left_in_the_window():
    import io

    from rich.console import Console

    from ors_migrate.step import ChangeWindow, GateView
    from ors_migrate.ui import render_gate

    start = dt.datetime(2026, 12, 1, 23, 0, tzinfo=dt.UTC)
    window = ChangeWindow(start + dt.timedelta(minutes=75), lambda step: 1.0, now=lambda: start)
    view = GateView("Set type=redis on the backups", "enable-redis-on-backups", "enable.1",
                    "state 8 of 14", None, window=window.describe_left())  # fmt: skip
    console = Console(file=io.StringIO(), width=160, record=True, no_color=True)
    console.print(render_gate(view))
    assert "change window: 1 h 15 min left" in console.export_text()


def _with_quiet_switchover(tmp_path, quiet: str):
    """The example site with a `quiet_switchover` policy, and its migration plan."""
    site = tmp_path / "site.yaml"
    site.write_text((REPO / "examples" / "site.yaml").read_text() + quiet)
    loaded = load_site(site)
    return loaded, make_plan(loaded, load_playbook("migrate-to-redis"))


def _state(estimate, state_id):
    return next(s for s in estimate.states if s.state_id == state_id)


def test_the_estimate_adds_the_quiet_wait_to_each_first_switchover_and_says_whose_figure_it_is(
    tmp_path,
):
    example = load_site(REPO / "examples" / "site.yaml")
    plan = make_plan(example, load_playbook("migrate-to-redis"))
    without = estimate_plan(plan, durations_for(example, tmp_path / "state"))
    pairs = len(list(example.site.pairs()))

    loaded, plan = _with_quiet_switchover(tmp_path, "quiet_switchover: {policy: lowest}\n")
    ours = estimate_plan(plan, durations_for(loaded, tmp_path / "state"))
    first, before = (
        _state(ours, "enable-redis-on-backups"),
        _state(without, "enable-redis-on-backups"),
    )
    assert first.seconds == before.seconds + 120.0 * pairs  # our default window_s, per pair
    assert any("our default 120 s, not from the documents" in s for s in first.sources)
    shown = render_plan(plan, "text", ours)  # what `plan` prints
    assert "quiet_switchover.window_s: our default 120 s, not from the documents" in shown
    # The second switchover restores sessions from Redis: it does not wait.
    restored = "enable-redis-on-new-backups"
    assert _state(ours, restored).seconds == _state(without, restored).seconds
    assert ours.total_s == without.total_s + 120.0 * pairs

    loaded, plan = _with_quiet_switchover(tmp_path, "quiet_switchover: {window_s: 45}\n")
    theirs = estimate_plan(plan, durations_for(loaded, tmp_path / "state"))
    first = _state(theirs, "enable-redis-on-backups")
    assert first.seconds == before.seconds + 45.0 * pairs
    assert QUIET_FROM_SITE in first.sources


def test_window_end_counts_the_quiet_wait_before_a_first_switchover(tmp_path):
    site = make_tiny_site(tmp_path / "site")
    text = site.path.read_text().replace("ors:\n", '  sessions: "echo 3"\nors:\n', 1)
    quiet = "quiet_switchover: {policy: below, below: 1, window_s: 600}\n"
    site.path.write_text(text + DURATIONS + quiet)
    playbook = site.write_playbook("pb", FIRST_SWITCHOVER)
    state = str(tmp_path / "state")

    # A 10 s switchover fits in 5 min; with up to 10 min of waiting for a quiet moment it does not.
    paused = cli(
        "run", str(site.path), "-p", str(playbook), "--yes", "--state-dir", state,
        "--window-end", _in(300),
    )  # fmt: skip
    assert paused.returncode == 130, paused.stderr
    assert "would take about 10 min 10 s" in paused.stderr
    assert "paused at a safe point before 'first-switchover'" in paused.stderr
    assert (site.role("ors-a"), site.role("ors-b")) == ("primary", "backup")


def test_a_measured_switchover_counts_without_the_quiet_wait_it_journaled():
    from ors_migrate.estimate import measure
    from ors_migrate.journal import Event, RunRecord

    plan = {"states": [{"actions": [{"key": f"s/p{n}/0", "action": "service.switchover"}
                                    for n in range(3)]}]}  # fmt: skip
    at = dt.datetime(2026, 12, 1, 23, 0, tzinfo=dt.UTC)
    run = RunRecord(
        run_id="r1", site_name="tiny", site_path="", site_digest="", playbook="pb",
        playbook_digest="", plan_hash="", status="succeeded", phase="forward",
        current_state=None, operator="op", hostname="host", created_at=at.isoformat(),
        updated_at=at.isoformat(), outcome=None, read_plan=lambda: json.dumps(plan),
    )  # fmt: skip
    events, seq = [], 0
    for n, (took, waited) in enumerate([(70.0, 60.0), (72.0, 61.0), (12.0, None)]):
        key, start = f"s/p{n}/0", at + dt.timedelta(minutes=2 * n)
        wait = {"quiet_wait": {"waited_s": waited}} if waited is not None else {}
        for ts, kind, payload in (
            (start, "action_intent", {}),
            (start + dt.timedelta(seconds=took), "action_ended", {"observed": wait}),
        ):
            seq += 1
            events.append(Event(seq, ts.isoformat(), kind, "forward", "s", key, payload))

    # Two of the three waited a minute: the median of the whole durations would be 70 s.
    assert measure(run, events).actions["service.switchover"] == 11.0

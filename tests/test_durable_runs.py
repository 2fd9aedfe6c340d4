"""Durable runs (SPEC 3.5, 4 "Crash safety"): `ors-migrate run` killed with SIGKILL anywhere
resumes to the end state of an uninterrupted run without repeating a switchover; one run per
site at a time; resume refused when the plan changed. (Parallel runs and the loss of Redis:
test_durable_parallel_runs.py.)

Runs are separate processes, killed from outside: the test watches the run's SQLite journal
(events `action_intent` and `action_ended`) and sends SIGKILL when a chosen point appears."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import cli
from durable_runs import (
    PARTIAL_ENABLE,
    Event,
    cli_json,
    has_event,
    journal_events,
    lab_apps,
    run_status,
    sim_starts,
)
from tiny_site import (
    APPS,
    HELD_TIMEOUT_S,
    ROLLBACK_WITH_RESTART,
    VERIFY_VERSION,
    TinySite,
    gated_playbook,
    held_while,
    make_tiny_site,
)

from ors_migrate.lab.layout import LabLayout, read_json


# Kill points for a chain of resumes over the whole migration.
@dataclass(frozen=True)
class KillPoint:
    """`intent`: the action started (mid-action); `landed`: a switchover's command has taken
    effect in the lab (the new primary is named in the pair's file) but the action has not
    ended; `ended`: the action boundary."""

    kind: str
    key: str
    pair: str | None = None


def kill_points(plan: dict[str, Any]) -> list[KillPoint]:
    points = []
    for state in plan["states"]:
        for action in state["actions"]:
            if action["changes_world"]:
                points.append(KillPoint("intent", action["key"]))
            if action["action"] == "service.switchover":
                points.append(KillPoint("landed", action["key"], action["ha_pair"]))
            points.append(KillPoint("ended", action["key"]))
    return points


def switchover_landed(lab: LabLayout, point: KillPoint) -> Callable[[list[Event]], bool]:
    def reached(events: list[Event]) -> bool:
        if has_event("action_ended", key=point.key)(events):
            return True
        intents = [
            e.payload for e in events if e.kind == "action_intent" and e.action_key == point.key
        ]
        assert point.pair is not None
        primary = (read_json(lab.pair(point.pair)) or {}).get("primary")
        return bool(intents) and primary == intents[-1]["new_primary"]

    return reached


def reached_for(lab: LabLayout, point: KillPoint) -> Callable[[list[Event]], bool]:
    if point.kind == "intent":
        return has_event("action_intent", key=point.key)
    if point.kind == "landed":
        return switchover_landed(lab, point)
    return has_event("action_ended", key=point.key)


@pytest.mark.slow
def test_run_killed_at_every_action_boundary_and_mid_action_resumes_to_the_uninterrupted_end_state(
    make_lab, runs_of
):
    """One chain of resumes: the run is SIGKILLed at the start of every action that changes the
    world, once more after each switchover's command took effect, and at every action boundary,
    and resumed with `run --resume --yes` each time.

    The lab is smaller than the SPEC's rehearsal lab (one ORS cluster with two HA pairs instead
    of two clusters): the kill points grow with the number of actions, and two pairs still show
    every kind of action and a rolling restart across pairs."""
    lab = make_lab(clusters=1, pairs_per_cluster=2)
    plan = json.loads(cli("plan", str(lab.site), "--format", "json").stdout)
    apps = lab_apps(lab)
    original_backups = {a["ha_pair"]: a["app"] for a in apps if a["role"] == "backup"}
    starts_before = {a["app"]: sim_starts(lab, a["app"]) for a in apps}
    runs = runs_of(lab.site)

    proc = runs.start("--yes")
    killed: list[tuple[KillPoint, bool]] = []
    for point in kill_points(plan):
        if not runs.kill_when(proc, reached_for(lab, point)):
            break
        ended = has_event("action_ended", key=point.key)(journal_events(runs.state_dir))
        killed.append((point, not ended))
        if run_status(runs.state_dir) == "succeeded":  # killed on its way out
            break
        proc = runs.start("--resume", "--yes")
    else:
        assert runs.finish(proc) == 0, runs.tail()

    mid_action = [p for p, mid in killed if mid and p.kind != "ended"]
    print(
        f"\n{len(killed)} kills, {len(mid_action)} mid-action "
        f"({sum(p.kind == 'landed' for p in mid_action)} after a switchover command took "
        f"effect), {len(runs.started) - 1} resumes"
    )
    assert len(killed) >= len(kill_points(plan)) - 1
    switchovers = {
        a["key"]
        for s in plan["states"]
        for a in s["actions"]
        if a["action"] == "service.switchover"
    }
    assert {p.key for p in mid_action if p.key in switchovers} == switchovers, (
        "every switchover was interrupted at least once between its intent and its end"
    )

    # The end state of an uninterrupted run.
    apps = lab_apps(lab)
    assert {a["type"] for a in apps} == {"redis"}
    assert {a["ha_pair"]: a["app"] for a in apps if a["role"] == "primary"} == original_backups
    promotions = [
        p for p in cli_json("lab", "status", "--dir", str(lab.root))["switchovers"] if p["from"]
    ]
    per_pair = {pair: sum(p["pair"] == pair for p in promotions) for pair in original_backups}
    assert per_pair == {pair: 3 for pair in original_backups}, "a switchover repeated or skipped"
    # Each application restarted once in prepare.5 and once when it got type=redis.
    assert {a["app"]: sim_starts(lab, a["app"]) - starts_before[a["app"]] for a in apps} == {
        a["app"]: 2 for a in apps
    }
    events = journal_events(runs.state_dir)
    ended = [e.action_key for e in events if e.kind == "action_ended"]
    assert sorted(ended) == sorted(a["key"] for s in plan["states"] for a in s["actions"])
    assert [r["status"] for r in cli_json("runs", "--state-dir", str(runs.state_dir))] == [
        "succeeded"
    ]


# Lock, refusals and statuses on a tiny site (files and shell commands, no lab).
UPGRADE_ONLY = """
name: upgrade-only
title: Upgrade the applications
states:
  - id: upgrade
    title: Upgrade
    seed_step: prepare.3
    scope: app
    actions:
      - do: ors.upgrade
"""


def holding_site(root: Path) -> tuple[TinySite, Path]:
    """A tiny site whose upgrade command waits while the file `hold` exists."""
    hold = root / "hold"
    site = make_tiny_site(root, upgrade=held_while(hold), ready_timeout_s=HELD_TIMEOUT_S)
    hold.touch()
    return site, hold


def test_second_run_exits_4_naming_the_holder_and_a_killed_holder_needs_no_unlock(
    tmp_path, runs_of
):
    site, hold = holding_site(tmp_path / "site")
    playbook = site.write_playbook("upgrade-only", UPGRADE_ONLY)
    runs = runs_of(site.path)
    state = str(runs.state_dir)
    holder = runs.start("--playbook", str(playbook), "--yes")
    reached = has_event("action_intent")
    deadline = time.monotonic() + 60
    while not reached(journal_events(runs.state_dir)):
        assert holder.poll() is None and time.monotonic() < deadline, runs.tail()
        time.sleep(0.02)
    run_id = cli_json("runs", "--state-dir", state)[0]["run_id"]

    for args in ([], ["--resume"]):
        second = cli(
            "run",
            str(site.path),
            "--playbook",
            str(playbook),
            "--yes",
            *args,
            "--state-dir",
            state,
            *PARTIAL_ENABLE,
        )
        assert second.returncode == 4, second.stderr
        assert f"run {run_id}" in second.stderr and f"pid {holder.pid}" in second.stderr
        assert " on " in second.stderr and "started " in second.stderr
    assert cli_json("status", run_id, "--state-dir", state)["status"] == "running"

    holder.kill()
    holder.wait()
    assert cli_json("status", run_id, "--state-dir", state)["status"] == "interrupted"
    assert [r["status"] for r in cli_json("runs", "--state-dir", state)] == ["interrupted"]

    hold.unlink()
    resumed = cli("run", str(site.path), "--resume", "--yes", "--state-dir", state)
    assert resumed.returncode == 0, resumed.stderr
    assert cli_json("status", run_id, "--state-dir", state)["status"] == "succeeded"


def test_sigterm_records_the_run_as_interrupted_and_exits_130(tmp_path, runs_of):
    site, hold = holding_site(tmp_path / "site")
    runs = runs_of(site.path)
    proc = runs.start("--playbook", str(site.write_playbook("u", UPGRADE_ONLY)), "--yes")
    deadline = time.monotonic() + 60
    while not has_event("action_intent")(journal_events(runs.state_dir)):
        assert proc.poll() is None and time.monotonic() < deadline, runs.tail()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)

    assert runs.finish(proc) == 130
    hold.unlink()
    run = cli_json("runs", "--state-dir", str(runs.state_dir))[0]
    assert run["status"] == "interrupted"


def run_tiny(site: TinySite, state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("run", str(site.path), "--state-dir", str(state_dir), *PARTIAL_ENABLE, *args)


def paused_at_gate(site: TinySite, state_dir: Path, playbook: Path) -> None:
    """Run without a terminal and without --yes: the run pauses at the gate."""
    done = run_tiny(site, state_dir, "--playbook", str(playbook))
    assert done.returncode != 0 and "gate" in done.stderr, done.stderr
    assert cli_json("runs", "--state-dir", str(state_dir))[-1]["status"] == "paused"


def test_runs_and_status_report_paused_failed_rolled_back_and_succeeded(tmp_path):
    site = make_tiny_site(tmp_path / "site")
    playbook = str(gated_playbook(site))

    def status_of(state_dir: Path) -> str:
        run = cli_json("runs", "--state-dir", str(state_dir))[-1]
        one = cli_json("status", run["run_id"], "--state-dir", str(state_dir))
        assert one["status"] == run["status"]
        return str(run["status"])

    paused_at_gate(site, tmp_path / "s1", Path(playbook))
    assert status_of(tmp_path / "s1") == "paused"
    resumed = run_tiny(site, tmp_path / "s1", "--resume", "--yes")
    assert resumed.returncode == 0, resumed.stderr
    assert status_of(tmp_path / "s1") == "succeeded"

    fresh = make_tiny_site(tmp_path / "site2", version="8.1.400.48")
    failed = run_tiny(
        fresh, tmp_path / "s2", "--playbook", str(fresh.write_playbook("u", UPGRADE_ONLY)), "--yes"
    )
    assert failed.returncode == 1 and "below 8.1.401.10" in failed.stderr
    assert "continue with `ors-migrate run SITE --resume`" in failed.stderr
    assert status_of(tmp_path / "s2") == "failed"
    fresh.install("8.1.401.12")  # the operator fixes the cause
    assert run_tiny(fresh, tmp_path / "s2", "--resume", "--yes").returncode == 0
    assert status_of(tmp_path / "s2") == "succeeded"

    fresh = make_tiny_site(tmp_path / "site3", version="8.1.400.48")
    playbook = str(gated_playbook(fresh, VERIFY_VERSION))
    rolled = run_tiny(fresh, tmp_path / "s3", "--playbook", playbook, "--yes")
    assert rolled.returncode == 1, rolled.stderr
    assert "rolled back after: state verify failed" in rolled.stderr
    assert status_of(tmp_path / "s3") == "rolled_back"
    assert all("type=cassandra" in fresh.options(app).read_text() for app in APPS)


def test_an_automatic_rollback_killed_midway_is_resumed_to_rolled_back(tmp_path, runs_of):
    hold = tmp_path / "hold"
    site = make_tiny_site(
        tmp_path / "site",
        version="8.1.400.48",
        start=held_while(hold),
        ready_timeout_s=HELD_TIMEOUT_S,
    )
    playbook = gated_playbook(site, VERIFY_VERSION)
    site.write_playbook("tiny-rollback", ROLLBACK_WITH_RESTART)
    hold.touch()
    runs = runs_of(site.path)

    proc = runs.start("--playbook", str(playbook), "--yes")
    restarting = has_event("action_intent", key="standard-restart/pair-1/0")
    assert runs.kill_when(proc, restarting), runs.tail()
    run = cli_json("runs", "--state-dir", str(runs.state_dir))[0]
    assert (run["status"], run["phase"]) == ("interrupted", "rollback")

    hold.unlink()
    assert runs.finish(runs.start("--resume", "--yes")) == 1, runs.tail()
    assert "rolled back after: state verify failed" in runs.tail()
    assert cli_json("runs", "--state-dir", str(runs.state_dir))[0]["status"] == "rolled_back"
    assert all("type=cassandra" in site.options(app).read_text() for app in APPS)
    assert (site.role("ors-a"), site.role("ors-b")) == ("primary", "backup")


def test_without_auto_rollback_a_failure_after_enabling_redis_stops_for_a_rollback_on_demand(
    tmp_path,
):
    site = make_tiny_site(tmp_path / "site", version="8.1.400.48")
    playbook = gated_playbook(site, VERIFY_VERSION)
    state = tmp_path / "state"

    stopped = run_tiny(site, state, "--playbook", str(playbook), "--yes", "--no-auto-rollback")

    assert stopped.returncode == 1
    assert "Redis is enabled on some applications: run `ors-migrate rollback`" in stopped.stderr
    assert cli_json("runs", "--state-dir", str(state))[0]["status"] == "failed"
    assert "type=redis" in site.options("ors-b").read_text()
    back = cli("rollback", "--yes", "--state-dir", str(state))
    assert back.returncode == 0, back.stderr
    assert cli_json("runs", "--state-dir", str(state))[0]["status"] == "rolled_back"
    assert all("type=cassandra" in site.options(app).read_text() for app in APPS)


def test_resume_is_refused_when_the_playbook_changed_and_says_what_changed(tmp_path):
    site = make_tiny_site(tmp_path / "site")
    playbook = gated_playbook(site)
    state = tmp_path / "state"
    paused_at_gate(site, state, playbook)

    original = playbook.read_text()
    playbook.write_text(original.replace("with: {type: null}", "with: {type: redis}"))
    refused = run_tiny(site, state, "--resume", "--yes", "--playbook", str(playbook))

    assert refused.returncode == 2 and "described differently" not in refused.stderr
    assert f"the playbook {playbook} changed" in refused.stderr
    assert "verify: argument type is redis instead of null (on pair-1)" in refused.stderr

    playbook.write_text(original)
    assert run_tiny(site, state, "--resume", "--yes").returncode == 0


def test_resume_is_refused_when_the_site_file_changed_and_says_what_changed(tmp_path):
    site = make_tiny_site(tmp_path / "site")
    playbook = gated_playbook(site)
    state = tmp_path / "state"
    paused_at_gate(site, state, playbook)

    original = site.path.read_text()
    extra = "  extra_persistence_options: {redis-connect-timeout: '5'}\n"
    site.path.write_text(
        original.replace("  min_version: 8.1.401.10\n", "  min_version: 8.1.401.10\n" + extra)
    )
    refused = run_tiny(site, state, "--resume", "--yes")

    assert refused.returncode == 2 and "described differently" not in refused.stderr
    assert f"the site file {site.path} changed" in refused.stderr
    assert (
        "configure: now also sets [persistence] redis-connect-timeout=5 (on ors-a, ors-b)"
        in refused.stderr
    )
    assert "the playbook" not in refused.stderr.split("cannot be resumed")[1].split("Restore")[0]

    site.path.write_text(original)
    assert run_tiny(site, state, "--resume", "--yes").returncode == 0


def test_resume_is_refused_when_a_primary_moved_outside_the_run(tmp_path):
    site = make_tiny_site(tmp_path / "site")
    state = tmp_path / "state"
    paused_at_gate(site, state, gated_playbook(site))
    site.set_role("ors-a", "backup")
    site.set_role("ors-b", "primary")

    refused = run_tiny(site, state, "--resume", "--yes")

    assert refused.returncode == 2
    assert "HA pair pair-1: the journal expects ors-a as primary" in refused.stderr
    assert "ors-b=primary" in refused.stderr

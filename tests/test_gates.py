"""Gates: in a terminal they show what is done, what comes next, where and what is at risk, and
take approve / stop / roll back; without a terminal they stop the run at once (exit 2), never
wait. Every decision is journaled with who made it."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from conftest import cli
from pty_session import choose, finish, spawn
from rich.console import Console

from ors_migrate.errors import EXIT_BAD_INPUT, GateStopped, TerminalRequired
from ors_migrate.gate import build_gate_view
from ors_migrate.journal import Journal, operator_name
from ors_migrate.runner import build_context, load_playbook, make_plan
from ors_migrate.secrets import Secrets
from ors_migrate.site import load_site
from ors_migrate.step import GateView, SessionCount, SwitchoverPolicy
from ors_migrate.ui import Ui, gate_lines, render_gate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "site.yaml"

FIRST_GATE = "Gate: Set type=redis on the backups"
SECOND_GATE = "Gate: Set type=redis on the new backups"
ASKED = "How do you want to proceed?"
APPROVE, STOP, ROLL_BACK = 0, 1, 2


def status_of(state_dir, run_id=None):
    args = ["status", *([run_id] if run_id else []), "--json", "--state-dir", str(state_dir)]
    return json.loads(cli(*args).stdout)


def decisions_of(state_dir, run_id):
    report = cli("report", run_id, "--format", "json", "--state-dir", str(state_dir))
    assert report.returncode == 0, report.stderr
    gates = json.loads(report.stdout)["gate_decisions"]
    return [(g["state_id"], g["decision"], g["by"]) for g in gates]


def test_gates_in_a_terminal_stop_then_resume_approve_and_roll_back(make_lab, tmp_path):
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    state_dir = tmp_path / "state"
    run = ("run", str(lab.site), "--state-dir", str(state_dir))
    me = operator_name()

    # The first gate shows the whole picture before anything enables Redis; stop there.
    child = spawn(*run, cwd=tmp_path, timeout=180)
    child.expect_exact(FIRST_GATE)
    child.expect_exact(ASKED)
    screen = child.before
    for shown in (
        "Done so far",
        "prepare.5",
        "standard-restart",
        "Next",
        "Hosts",
        "lab",
        "At risk",
        "will NOT be restored",
        "set [persistence] type=redis",
    ):
        assert shown in screen, shown
    choose(child, STOP)
    assert finish(child) == 130
    paused = status_of(state_dir)
    run_id = paused["run_id"]
    assert (paused["status"], paused["current_state"]) == ("paused", "enable-redis-on-backups")
    assert decisions_of(state_dir, run_id) == [("enable-redis-on-backups", "stop", me)]

    # What the engine can show at this gate: each live primary and its sessions in progress.
    view = gate_view_of(lab.site, state_dir, run_id, "enable-redis-on-backups")
    live = json.loads(cli("lab", "status", "--dir", str(lab.root), "--json").stdout)
    primary = next(a["app"] for a in live["apps"] if a["role"] == "primary")
    [count] = view.sessions
    assert (count.ha_pair, count.app, count.host) == ("cl1-pair1", primary, "lab")
    assert count.active is not None and count.active > 0
    assert any("standard-restart" in line for line in view.done)
    assert f"gate enable-redis-on-backups: stop by {me}" in view.done
    assert f"sessions in progress on {primary}" in "\n".join(gate_lines(view))

    # Without a terminal, resuming stops at the same gate at once: exit 2, still paused.
    started = time.monotonic()
    headless = cli(*run, "--resume", timeout=120)
    assert headless.returncode == EXIT_BAD_INPUT, headless.stderr
    assert "no terminal" in headless.stderr and "--yes" in headless.stderr
    assert time.monotonic() - started < 60
    assert status_of(state_dir, run_id)["status"] == "paused"
    assert len(decisions_of(state_dir, run_id)) == 1

    # In a terminal again: approve the first switchover, roll back at the second.
    child = spawn(*run, "--resume", cwd=tmp_path, timeout=180)
    child.expect_exact(FIRST_GATE)
    child.expect_exact(ASKED)
    choose(child, APPROVE)
    child.expect_exact(SECOND_GATE)
    child.expect_exact(ASKED)
    assert "enable-redis-on-backups" in child.before  # done so far
    choose(child, ROLL_BACK)
    assert finish(child) == 1
    assert status_of(state_dir, run_id)["status"] == "rolled_back"
    screen = cli("status", run_id, "--state-dir", str(state_dir)).stdout
    assert "enable-redis-on-new-backups  rolled back at its gate" in screen
    assert decisions_of(state_dir, run_id) == [
        ("enable-redis-on-backups", "stop", me),
        ("enable-redis-on-backups", "approve", me),
        ("enable-redis-on-new-backups", "rollback", me),
    ]
    after = json.loads(cli("lab", "status", "--dir", str(lab.root), "--json").stdout)
    assert {a["type"] for a in after["apps"]} == {"cassandra"}


def gate_view_of(site, state_dir, run_id, state_id) -> GateView:
    loaded = load_site(site)
    plan = make_plan(loaded, load_playbook("migrate-to-redis"))
    journal = Journal(state_dir)
    ctx = build_context(
        loaded,
        run_id,
        journal,
        Ui(quiet=True, interactive=False),
        secrets=Secrets(interactive=False),
    )
    try:
        return build_gate_view(ctx, plan, plan.state(state_id))
    finally:
        ctx.close()
        journal.close()


def test_a_gate_without_a_terminal_stops_the_run_with_exit_2_instead_of_waiting():
    ui = Ui(interactive=False, quiet=True)
    with pytest.raises(TerminalRequired) as stopped:
        ui.gate("Set type=redis on the backups", ["sessions will not be restored"])
    assert isinstance(stopped.value, GateStopped)  # the engine pauses the run: resumable
    assert stopped.value.exit_code == EXIT_BAD_INPUT
    assert "--yes" in str(stopped.value) and "--resume" in str(stopped.value)


def test_yes_approves_every_gate_without_a_terminal():
    assert Ui(assume_yes=True, interactive=False, quiet=True).gate("any", []) == "approve"


def test_an_operator_step_without_a_terminal_stops_the_run():
    with pytest.raises(TerminalRequired):
        Ui(interactive=False, quiet=True).operator_step("upgrade ORS", who="me")
    with pytest.raises(GateStopped, match="must be done by a person") as unattended:
        Ui(assume_yes=True, interactive=False, quiet=True).operator_step("upgrade ORS", who="me")
    assert unattended.value.exit_code == 130  # --yes was given: nothing was missing but a person


def test_the_gate_screen_names_the_primaries_and_their_sessions_at_risk():
    view = GateView(
        title="Set type=redis on the backups",
        state_id="enable-redis-on-backups",
        seed_step="enable.1",
        position="state 8 of 14",
        risk="Sessions in progress on the current primaries will NOT be restored",
        done=["prepare.5  standard-restart  6.2 s"],
        next_actions=["set [persistence] type=redis on ORS_1B"],
        hosts=["ors-01", "ors-02"],
        sessions=[
            SessionCount("voice-1", "ORS_1A", "ors-01", 37),
            SessionCount("voice-2", "ORS_2A", "ors-02", None, "`sessions` exited 1"),
        ],
    )
    console = Console(file=io.StringIO(), width=160, record=True, no_color=True)
    console.print(render_gate(view))
    screen = console.export_text()
    for shown in (
        "Gate: Set type=redis on the backups",
        "enable-redis-on-backups (enable.1)",
        "state 8 of 14",
        "ors-01, ors-02",
        "standard-restart",
        "will NOT be restored",
        "Sessions in progress on the primaries now: 37",
        "ORS_1A",
        "37",
        "unknown (`sessions` exited 1)",
    ):
        assert shown in screen, shown


def test_waiting_for_a_quiet_moment_stops_as_soon_as_sessions_drop_below_the_threshold():
    counts = iter([40, 25, 8])
    slept: list[float] = []
    ui = Ui(interactive=False, quiet=True)

    seen = ui.wait_for_quiet(
        "voice-1",
        lambda: next(counts),
        policy=SwitchoverPolicy(10, 60),
        interval_s=2,
        sleep=slept.append,
    )

    assert seen["quiet"] and seen["sessions_at_last_poll"] == 8 and seen["polls"] == 3
    assert seen["sessions_when_due"] == 40
    assert slept == [2, 2]


def test_waiting_for_a_quiet_moment_gives_up_after_the_wait_and_says_so():
    ui = Ui(interactive=False, quiet=True)

    seen = ui.wait_for_quiet(
        "voice-1", lambda: 50, policy=SwitchoverPolicy(10, 0.3), interval_s=0.1
    )

    assert not seen["quiet"] and seen["sessions_at_last_poll"] == 50
    assert seen["waited_s"] >= 0.3


def test_monitoring_without_a_terminal_prints_one_line_per_sampling_round():
    out = io.StringIO()
    ui = Ui(interactive=False, console=Console(file=out, force_terminal=False, width=200))
    with ui.monitor(10) as on_sample:
        for cpu in (1.5, 2.5):
            for node in ("r1:6379", "r2:6379"):
                on_sample({"node": node, "cpu_percent": cpu, "memory_percent": 3.25})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "r1:6379 cpu 2.5% mem 3.25%" in lines[1] and "r2:6379" in lines[1]


def test_monitoring_on_a_terminal_ends_with_a_table_per_node():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, no_color=True)
    ui = Ui(interactive=True, console=console)
    with ui.monitor(10) as on_sample:
        on_sample(
            {
                "node": "r1:6379",
                "cpu_percent": 12.5,
                "memory_percent": 3.0,
                "used_memory": 2 * 1048576,
            }
        )
        on_sample({"node": "r2:6379", "error": "connection refused"})
    text = out.getvalue()
    assert "r1:6379" in text and "12.5%" in text and "2.0" in text
    assert "r2:6379" in text and "error" in text


def test_no_color_is_honoured(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert Ui().console.no_color


def test_the_lowest_policy_watches_first_then_switches_at_the_lowest_count_seen():
    # Polls every 2 s on a fake clock: the trough (9) comes during the watch, the next count
    # as low comes after it; the lower count later (3) is never reached: the wait has ended.
    counts = iter([30, 20, 9, 15, 25, 12, 9, 3])
    clock = [0.0]
    ui = Ui(interactive=False, quiet=True)
    policy = SwitchoverPolicy(None, 60, "lowest", watch_s=6, margin=0)

    with patch("ors_migrate.ui.time.monotonic", lambda: clock[0]):
        seen = ui.wait_for_quiet(
            "voice-1",
            lambda: next(counts),
            policy=policy,
            interval_s=2,
            sleep=lambda s: clock.__setitem__(0, clock[0] + s),
        )

    assert seen["quiet"] and seen["sessions_at_last_poll"] == 9 and seen["polls"] == 7
    assert seen["lowest_seen"] == 9 and seen["lowest_seen_at_s"] == 4
    assert seen["sessions_when_due"] == 30 and seen["policy"] == "lowest"


def test_the_lowest_policy_switches_near_the_lowest_within_its_margin_or_at_the_end():
    clock = [0.0]
    ui = Ui(interactive=False, quiet=True)

    def wait(counts: list[int], policy: SwitchoverPolicy) -> dict[str, Any]:
        clock[0] = 0.0
        left = iter(counts)
        with patch("ors_migrate.ui.time.monotonic", lambda: clock[0]):
            return ui.wait_for_quiet(
                "voice-1",
                lambda: next(left),
                policy=policy,
                interval_s=1,
                sleep=lambda s: clock.__setitem__(0, clock[0] + s),
            )

    near = wait([10, 4, 8, 6], SwitchoverPolicy(None, 30, "lowest", watch_s=2, margin=2))
    assert near["quiet"] and near["sessions_at_last_poll"] == 6 and near["lowest_seen"] == 4

    rising = wait(list(range(5, 40)), SwitchoverPolicy(None, 5, "lowest", watch_s=2))
    assert not rising["quiet"] and rising["waited_s"] == 5 and rising["lowest_seen"] == 5


def test_a_site_file_sets_the_quiet_switchover_policy_and_a_resumed_run_keeps_it(tmp_path):
    from ors_migrate.runner import site_switchover_policy

    text = EXAMPLE.read_text(encoding="utf-8") + "quiet_switchover: {window_s: 90}\n"
    site = tmp_path / "site.yaml"
    site.write_text(text, encoding="utf-8")

    policy = site_switchover_policy(load_site(site).site)

    assert policy == SwitchoverPolicy(None, 90.0, "lowest", watch_s=30.0, margin=0)
    assert SwitchoverPolicy.from_dict(policy.as_dict()) == policy
    assert SwitchoverPolicy.from_dict({"below": 14, "wait_s": 40}) == SwitchoverPolicy(14, 40.0)

"""HA pairs in parallel (`run --parallel N --parallel-per-cluster M`), without a lab: the waves
and the estimate the plan shows, and the engine's schedule with fake actions on the example
site (two ORS clusters, five HA pairs): limits kept, each pair's steps in order and journaled
on their own, a failure stopping every pair after its current action, a closing change window
stopping new pairs only, every pair's error in the outcome, interrupts waiting for the pairs in
flight. On a site of two local HA pairs (roles and session counts in files, the real switchover
action): quiet waits side by side, and a halt that ends a quiet wait without a switchover."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, cli
from rich.console import Console
from tiny_site import OPTIONS

from ors_migrate.engine import Engine, Outcome
from ors_migrate.errors import GateStopped, InputError, TransportError, VerificationFailed
from ors_migrate.journal import Journal
from ors_migrate.parallel import Parallelism, pair_groups, schedule_seconds, waves
from ors_migrate.runner import (
    _signals_as_interrupt,
    action_table,
    build_context,
    load_playbook,
    make_plan,
)
from ors_migrate.secrets import Secrets
from ors_migrate.site import load_site
from ors_migrate.step import (
    Action,
    ChangeWindow,
    Decision,
    GateView,
    PlannedAction,
    Preview,
    RunContext,
    SwitchoverPolicy,
)
from ors_migrate.ui import Ui

EXAMPLE = REPO / "examples" / "site.yaml"
VOICE = ["voice-1", "voice-2", "voice-3"]
OUTBOUND = ["outbound-1", "outbound-2"]


# The rules the plan and the engine share
def test_waves_take_pairs_in_plan_order_within_both_limits():
    plan = make_plan(load_site(EXAMPLE), load_playbook("migrate-to-redis"))
    restart = next(s for s in plan.states if s.id == "standard-restart")
    groups = pair_groups(restart.actions)
    assert [g[0].target.ha_pair for g in groups] == VOICE + OUTBOUND
    assert all(len(g) == 3 for g in groups)  # restart backup, switch over, restart

    def shown(parallel: Parallelism) -> list[list[str | None]]:
        return [[g[0].target.ha_pair for g in wave] for wave in waves(groups, parallel)]

    assert shown(Parallelism()) == [[pair] for pair in VOICE + OUTBOUND]
    assert shown(Parallelism(3)) == [VOICE, OUTBOUND]
    assert shown(Parallelism(3, per_cluster=2)) == [
        ["voice-1", "voice-2", "outbound-1"],
        ["voice-3", "outbound-2"],
    ]
    assert shown(Parallelism(5, per_cluster=1)) == [
        ["voice-1", "outbound-1"],
        ["voice-2", "outbound-2"],
        ["voice-3"],
    ]


def test_a_state_with_a_host_wide_action_runs_its_pairs_one_at_a_time():
    plan = make_plan(load_site(EXAMPLE), load_playbook("migrate-to-redis"))
    restart = next(s for s in plan.states if s.id == "standard-restart")
    first, *rest = restart.actions
    with_lca = replace(restart, actions=[replace(first, action="fips.lca_restart"), *rest])

    assert Parallelism(3).applies_to(restart)
    assert not Parallelism(3).applies_to(with_lca)  # another pair could switch over meanwhile
    assert not Parallelism().applies_to(restart)


def test_a_limit_below_one_is_refused():
    for pairs, per_cluster in ((0, None), (-1, None), (2, 0), (2, -3)):
        with pytest.raises(InputError, match="at least 1"):
            Parallelism(pairs, per_cluster)
    with pytest.raises(InputError):
        Parallelism.from_dict({"pairs": 0})
    assert Parallelism.from_dict({"pairs": 2, "per_cluster": 1}) == Parallelism(2, 1)


def test_the_schedule_starts_each_pair_as_soon_as_a_slot_is_free():
    pairs = [("a", 10.0), ("a", 10.0), ("a", 10.0), ("b", 30.0)]
    assert schedule_seconds(pairs, Parallelism()) == 60.0  # one after another
    assert schedule_seconds(pairs, Parallelism(4)) == 30.0
    # Two at a time: a1 and a2 (0-10 s), then a3 (10-20 s) and b (10-40 s).
    assert schedule_seconds(pairs, Parallelism(2)) == 40.0
    # One per cluster: the a's one after another while b runs beside them.
    assert schedule_seconds(pairs, Parallelism(4, per_cluster=1)) == 30.0
    assert schedule_seconds([], Parallelism(3)) == 0.0


def test_plan_with_parallel_shows_the_waves_and_a_shorter_window(tmp_path):
    state = str(tmp_path / "state")
    serial = cli("plan", str(EXAMPLE), "-f", "json", "--state-dir", state)
    parallel = cli(
        "plan", str(EXAMPLE), "-f", "json", "--state-dir", state,
        "--parallel", "3", "--parallel-per-cluster", "2",
    )  # fmt: skip
    assert serial.returncode == 0 and parallel.returncode == 0, parallel.stderr
    one, many = json.loads(serial.stdout)["estimate"], json.loads(parallel.stdout)["estimate"]
    assert one["parallel"] == {"pairs": 1, "per_cluster": None}
    assert many["parallel"] == {"pairs": 3, "per_cluster": 2}
    restart = {s["id"]: s for s in many["states"]}["standard-restart"]
    assert restart["waves"] == [["voice-1", "voice-2", "outbound-1"], ["voice-3", "outbound-2"]]
    serial_restart = {s["id"]: s for s in one["states"]}["standard-restart"]
    assert "waves" not in serial_restart
    # Five pairs of 3 actions (90 + 30 + 90 s, our defaults) in two waves instead of five.
    assert serial_restart["seconds"] == 5 * 210 and restart["seconds"] == 2 * 210
    upgrade = {s["id"]: s for s in many["states"]}["upgrade-ors"]  # per application: serial
    assert upgrade["seconds"] == {s["id"]: s for s in one["states"]}["upgrade-ors"]["seconds"]
    assert many["total_s"] < one["total_s"]

    text = cli("plan", str(EXAMPLE), "--state-dir", state, "--parallel", "3",
               "--parallel-per-cluster", "2").stdout  # fmt: skip
    assert "up to 3 HA pairs at a time, at most 2 per ORS cluster" in text
    assert "   wave 1: voice-1, voice-2, outbound-1\n   wave 2: voice-3, outbound-2" in text


# The engine, with fake actions per HA pair
@dataclass
class PairWorld:
    """What the fake pair steps did, in order, from several threads."""

    seconds: float = 0.15
    fail: set[tuple[str, int]] = field(default_factory=set)  # (pair, step number)
    errors: dict[tuple[str, int], Exception] = field(default_factory=dict)  # raised instead
    # What a failing step waits for before it fails (by default: the first wave under way).
    before_failing: Callable[[str, int], object] = lambda pair, n: WORLD.wait_for_starts(3)
    during: dict[tuple[str, int], Callable[[], object]] = field(default_factory=dict)
    log: list[tuple[str, str, int, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ended: int = 0

    def note(self, what: str, pair: str, number: int) -> None:
        with self.lock:
            self.log.append((what, pair, number, time.monotonic()))
            self.ended += what == "end"

    def wait_for_starts(self, count: int) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self.lock:
                if sum(what == "start" for what, *_ in self.log) >= count:
                    return
            time.sleep(0.005)

    def most_in_flight(self, cluster_of: dict[str, str]) -> tuple[int, dict[str, int]]:
        """The most steps under way at once, overall and per ORS cluster."""
        flying: dict[str, str] = {}
        most, per_cluster = 0, dict.fromkeys(cluster_of.values(), 0)
        for what, pair, _, _ in self.log:
            if what == "start":
                flying[pair] = cluster_of[pair]
            else:
                flying.pop(pair, None)
            most = max(most, len(flying))
            for cluster in per_cluster:
                per_cluster[cluster] = max(
                    per_cluster[cluster], list(flying.values()).count(cluster)
                )
        return most, per_cluster


WORLD = PairWorld()


class PairStep(Action):
    """A step of one HA pair that takes a moment; `with: {n: N}` numbers it within the pair."""

    name = "test.pair_step"
    scopes = frozenset({"ha_pair"})
    changes_world = True

    def preview(self, step: PlannedAction, view: Any) -> Preview:
        return Preview(f"step {step.args['n']} of {step.target.ha_pair}")

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        return False

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        pair, number = str(step.target.ha_pair), int(step.args["n"])
        WORLD.note("start", pair, number)
        if (pair, number) in WORLD.fail or (pair, number) in WORLD.errors:
            WORLD.before_failing(pair, number)  # mid-step, once the others are under way
            WORLD.note("end", pair, number)
            raise WORLD.errors.get(
                (pair, number),
                VerificationFailed(f"{pair} step {number}: the fake verification failed"),
            )
        WORLD.during.get((pair, number), lambda: time.sleep(WORLD.seconds))()
        WORLD.note("end", pair, number)
        return {"pair": pair}


PLAYBOOK = """
name: pairs
title: Two steps per HA pair
states:
  - id: per-pair
    title: Two steps on every HA pair
    seed_step: null
    scope: ha_pair
    actions:
      - do: test.pair_step
        with: {n: 1}
      - do: test.pair_step
        with: {n: 2}
"""
ACTIONS = {**action_table(), PairStep.name: PairStep}


@pytest.fixture
def world() -> Iterator[PairWorld]:
    global WORLD
    WORLD = PairWorld()
    yield WORLD


@dataclass
class PairHarness:
    root: Path
    journal: Journal
    run_id: str = ""
    site: Path = EXAMPLE
    playbook: str = PLAYBOOK
    policy: SwitchoverPolicy | None = None
    ui: Ui = field(default_factory=lambda: Ui(assume_yes=True, quiet=True))

    def engine(self, parallel: Parallelism, window: ChangeWindow | None = None) -> Engine:
        loaded = load_site(self.site)
        path = self.root / "pairs.yaml"
        path.write_text(self.playbook)
        playbook = load_playbook(str(path), ACTIONS)
        plan = make_plan(loaded, playbook)
        if not self.run_id:
            self.run_id = self.journal.create_run(
                site_name=loaded.site.name,
                site_path=str(self.site),
                site_digest=loaded.digest,
                playbook=playbook.spec.name,
                playbook_digest=playbook.digest,
                plan_hash=plan.plan_hash,
                plan_json=json.dumps(plan.as_dict()),
            )
        ctx = build_context(
            loaded,
            self.run_id,
            self.journal,
            self.ui,
            secrets=Secrets(interactive=False),
            operator="t",
            switchover_policy=self.policy,
        )
        return Engine(ctx, plan, ACTIONS, parallel=parallel, window=window)

    def run(self, parallel: Parallelism, window: ChangeWindow | None = None) -> Outcome:
        engine = self.engine(parallel, window)
        try:
            return engine.run()
        finally:
            engine.ctx.close()

    def action_events(self) -> list[tuple[str, str]]:
        return [
            (e.kind, str(e.action_key))
            for e in self.journal.events(self.run_id)
            if e.kind.startswith("action")
        ]

    def kinds_of(self, key: str) -> list[str]:
        return [e.kind for e in self.journal.events(self.run_id) if e.action_key == key]


@pytest.fixture
def pairs(tmp_path: Path) -> Iterator[PairHarness]:
    journal = Journal(tmp_path / "state")
    yield PairHarness(tmp_path, journal)
    journal.close()


CLUSTER_OF = {**dict.fromkeys(VOICE, "ORS_EMEA_VOICE"), **dict.fromkeys(OUTBOUND, "ORS_EMEA_OUT")}


def test_pairs_run_at_once_within_both_limits_each_in_order_each_step_journaled(world, pairs):
    outcome = pairs.run(Parallelism(3, per_cluster=2))

    assert outcome.status == "succeeded", outcome.message
    most, per_cluster = world.most_in_flight(CLUSTER_OF)
    assert most == 3, "three pairs were under way at once"
    # voice-3 waited for a voice slot although a third slot was free
    assert per_cluster["ORS_EMEA_VOICE"] == 2 and max(per_cluster.values()) == 2
    for pair in VOICE + OUTBOUND:  # a pair's own steps one after another
        mine = [(what, n) for what, p, n, _ in world.log if p == pair]
        assert mine == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    events = pairs.action_events()
    keys = {key for _, key in events}
    assert len(keys) == 10
    for key in keys:  # every step its own intent, then its own result
        assert [kind for kind, k in events if k == key] == ["action_intent", "action_ended"]
    seqs = [e.seq for e in pairs.journal.events(pairs.run_id)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_after_a_failure_pairs_in_flight_end_their_step_and_nothing_new_starts(world, pairs):
    world.fail = {("voice-1", 1)}

    outcome = pairs.run(Parallelism(3, per_cluster=2))

    assert outcome.status == "failed" and "voice-1 step 1" in outcome.message
    started = {(pair, n) for what, pair, n, _ in world.log if what == "start"}
    ended = {(pair, n) for what, pair, n, _ in world.log if what == "end"}
    # The first wave's steps 1 all ran to their end; no step 2 and no other pair started.
    assert started == ended == {("voice-1", 1), ("voice-2", 1), ("outbound-1", 1)}
    events = pairs.action_events()
    assert [kind for kind, _ in events].count("action_failed") == 1
    assert [kind for kind, _ in events].count("action_ended") == 2  # voice-2, outbound-1


def test_a_closing_window_starts_no_new_pair_and_lets_those_in_flight_settle(world, pairs):
    # Each step is estimated at 40 s and the fake clock moves 30 s per step ended: the first
    # three pairs (80 s each) fit in the 100 s window; once steps have ended, none does.
    start = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)
    window = ChangeWindow(
        start + dt.timedelta(seconds=100),
        lambda step: 40.0,
        now=lambda: start + dt.timedelta(seconds=30 * WORLD.ended),
    )

    outcome = pairs.run(Parallelism(3), window)

    assert outcome.status == "paused" and "paused at a safe point" in outcome.message
    done = [(pair, n) for what, pair, n, _ in world.log if what == "end"]
    assert sorted(done) == sorted((p, n) for p in VOICE for n in (1, 2))  # each pair settled
    events = pairs.journal.events(pairs.run_id)
    paused = [e for e in events if e.kind == "window_pause"]
    assert len(paused) == 1
    # What is left counts only the actions not ended when the run paused, at the schedule's
    # wall: pairs in flight ended steps after the state began.
    ended = {e.action_key for e in events if e.kind == "action_ended" and e.seq < paused[0].seq}
    state = make_plan(load_site(EXAMPLE), load_playbook(str(pairs.root / "pairs.yaml"), ACTIONS))
    left = [[s for s in g if s.key not in ended] for g in pair_groups(state.states[0].actions)]
    expected = schedule_seconds(
        [(g[0].target.cluster, 40.0 * len(g)) for g in left if g], Parallelism(3)
    )
    assert len(ended) >= 2
    assert paused[0].payload["remaining_actions"] == 10 - len(ended)
    assert paused[0].payload["remaining_s"] == expected

    world.log.clear()
    resumed = pairs.run(Parallelism(3))
    assert resumed.status == "succeeded", resumed.message
    assert {pair for _, pair, _, _ in world.log} == set(OUTBOUND)  # only what was left


def test_pairs_that_can_never_start_fail_the_state_instead_of_ending_it(world, pairs):
    stuck = Parallelism(3)
    object.__setattr__(stuck, "per_cluster", 0)  # as a limit that slipped past validation

    outcome = pairs.run(stuck)

    assert outcome.status == "failed" and "could not start" in outcome.message
    assert world.log == []
    ended = [e for e in pairs.journal.events(pairs.run_id) if e.kind == "state_ended"]
    assert ended == []


def test_a_failure_in_one_pair_decides_over_a_stop_in_another_and_both_are_named(world, pairs):
    # voice-1's evidence window ends empty (a stop) first; voice-2's verification, already
    # under way, fails after it: the failure takes its path, not the pause.
    world.errors = {
        ("voice-1", 1): GateStopped("no evidence within the window; stopped"),
        ("voice-2", 1): VerificationFailed("persistence errors in the ORS log"),
    }

    def before_failing(pair: str, number: int) -> None:
        world.wait_for_starts(2)
        if pair == "voice-2":
            while not any(what == "end" and p == "voice-1" for what, p, *_ in world.log):
                time.sleep(0.005)
            time.sleep(0.2)  # voice-1's stop has reached the main thread

    world.before_failing = before_failing

    outcome = pairs.run(Parallelism(2))

    assert outcome.status == "failed" and outcome.exit_code == 1, outcome.message
    assert "HA pair voice-2 failed: persistence errors" in outcome.message
    assert "HA pair voice-1 stopped: no evidence" in outcome.message
    assert outcome.message.index("voice-2") < outcome.message.index("voice-1")
    run = pairs.journal.get_run(pairs.run_id)
    assert run is not None and run.status == "failed"
    assert [kind for kind, _ in pairs.action_events()].count("action_failed") == 2


def test_a_pair_retrying_a_transient_failure_stops_retrying_when_another_pair_fails(world, pairs):
    # voice-2's host keeps resetting the connection (backoff 0.5, 1, 2, 4 s); voice-1 fails
    # while voice-2 waits for its second retry: voice-2 tries no more and fails nothing.
    pairs.playbook = PLAYBOOK.replace(
        "    scope: ha_pair\n", "    scope: ha_pair\n    retry: {attempts: 5, backoff_s: 0.5}\n"
    )
    world.errors = {
        ("voice-1", 1): VerificationFailed("voice-1 step 1: the fake verification failed"),
        ("voice-2", 1): TransportError("connection reset by peer"),
    }

    def voice_2_retried(pair: str, number: int) -> None:
        deadline = time.monotonic() + 5
        while pair == "voice-1" and time.monotonic() < deadline:
            with world.lock:
                if sum(w == "start" and p == "voice-2" for w, p, *_ in world.log) >= 2:
                    return
            time.sleep(0.005)

    world.before_failing = voice_2_retried

    started = time.monotonic()
    outcome = pairs.run(Parallelism(2))

    assert time.monotonic() - started < 4, "the 1, 2 and 4 s backoffs were not waited"
    assert outcome.status == "failed" and "HA pair voice-1 failed" in outcome.message
    assert "HA pair voice-2 stopped" in outcome.message and "not retried" in outcome.message
    assert sum(w == "start" and p == "voice-2" for w, p, *_ in world.log) == 2
    kinds = pairs.kinds_of("per-pair/voice-2/0")
    assert kinds[0] == "action_intent" and set(kinds[1:]) == {"action_retry"}


def test_an_unexpected_error_in_a_pair_is_journaled_and_named_beside_the_others(world, pairs):
    world.fail = {("voice-1", 1)}
    world.before_failing = lambda pair, n: world.wait_for_starts(2)
    engine = pairs.engine(Parallelism(2))
    record = engine.ctx.record

    def journal_full(kind: str, **kwargs: Any) -> None:  # the journal refuses one write
        if kind == "action_ended" and kwargs.get("action_key", "").startswith("per-pair/voice-2"):
            raise OSError("No space left on device")
        record(kind, **kwargs)

    engine.ctx.record = journal_full  # type: ignore[method-assign]
    try:
        outcome = engine.run()
    finally:
        engine.ctx.close()

    assert outcome.status == "failed"
    assert "HA pair voice-1 failed" in outcome.message
    assert "HA pair voice-2 failed" in outcome.message and "OSError" in outcome.message
    failed = [e for e in pairs.journal.events(pairs.run_id) if e.kind == "action_failed"]
    crashed = {e.action_key: e.payload for e in failed}
    voice2 = next(key for key in crashed if key.startswith("per-pair/voice-2"))
    assert (
        crashed[voice2]["kind"] == "ActionCrashed" and "No space left" in crashed[voice2]["error"]
    )


def test_an_interrupt_waits_for_the_pairs_in_flight_and_a_second_one_does_not_cut_it_short(
    world, pairs
):
    # While both pairs work, Ctrl-C, Ctrl-C again, then SIGTERM (as from a service manager):
    # the run raises the interrupt only once both steps have ended.
    def interrupted_thrice() -> None:
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
            os.kill(os.getpid(), sig)
            time.sleep(0.2)

    world.during = {("voice-1", 1): interrupted_thrice, ("voice-2", 1): lambda: time.sleep(1.2)}
    screen = io.StringIO()
    pairs.ui = Ui(assume_yes=True, quiet=True, console=Console(file=screen, width=300))
    engine = pairs.engine(Parallelism(2))
    before = signal.getsignal(signal.SIGINT)
    try:
        with _signals_as_interrupt(), pytest.raises(KeyboardInterrupt):
            engine.run()
        raised_at = time.monotonic()
    finally:
        engine.ctx.close()

    ends = [at for what, _, _, at in world.log if what == "end"]
    assert sorted((p, n) for what, p, n, _ in world.log if what == "end") == [
        ("voice-1", 1),
        ("voice-2", 1),
    ]
    assert max(ends) <= raised_at
    assert not any(n == 2 for _, _, n, _ in world.log)  # nothing new started
    assert signal.getsignal(signal.SIGINT) is before
    text = screen.getvalue()
    assert "interrupted: waiting for 2 HA pair(s) to finish their current action" in text
    assert "still waiting for" in text
    assert [kind for kind, _ in pairs.action_events()].count("action_ended") == 2


# The real switchover action on two local HA pairs
def local_pairs(root: Path, sessions: str) -> Path:
    """Two HA pairs on this machine (pair-1: ors-1a primary, ors-1b backup; pair-2 likewise).
    Roles and sessions in progress are files; the Management Layer is one-line shell commands
    that also log each switchover sent (`switched`) and each sessions poll (`polls-APP`, with
    its time). `sessions` is the command that prints the count (`{s}`: the sessions folder)."""
    for folder in ("roles", "sessions", "apps", "log"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    apps = [(f"ors-{n}{m}", f"pair-{n}", role) for n in (1, 2) for m, role in (("a", "primary"),
            ("b", "backup"))]  # fmt: skip
    for app, _, role in apps:
        (root / "roles" / app).write_text(role + "\n")
        (root / "sessions" / app).write_text("50\n")
        (root / "apps" / f"{app}.ini").write_text(OPTIONS.format(app=app))
    roles, log = shlex.quote(str(root / "roles")), shlex.quote(str(root / "log"))
    count = sessions.format(s=shlex.quote(str(root / "sessions")), log=log, app="{app}")
    services = {
        "start": f"echo backup > {roles}/{{app}}",
        "stop": f"echo down > {roles}/{{app}}",
        "status": f"cat {roles}/{{app}}",
        "switchover": f"echo {{pair}} >> {log}/switched && echo backup > {roles}/{{primary}} "
        f"&& echo primary > {roles}/{{backup}}",
        "sessions": f"date +%s.%N >> {log}/polls-{{app}}; {count}",
        "ready_timeout_s": 5,
        "poll_interval_s": 0.05,
    }
    pairs = [
        f"      - name: {pair}\n        apps:\n"
        + "".join(
            f"          - {{name: {a}, host: here, role: {r}}}\n" for a, p, r in apps if p == pair
        )
        for pair in ("pair-1", "pair-2")
    ]
    text = "\n".join(
        [
            "version: 1",
            "name: two-pairs",
            "hosts:\n  here:\n    transport: local",
            "options_backend:\n  kind: ini-file",
            f"  path: {json.dumps(str(root / 'apps') + '/{app}.ini')}",
            "services:",
            *[f"  {key}: {json.dumps(value)}" for key, value in services.items()],
            "ors:\n  min_version: 8.1.401.10",
            "ors_clusters:\n  - name: LOCAL\n    ha_pairs:",
            "".join(pairs).rstrip("\n"),
            "redis:\n  nodes: [127.0.0.1:7001, 127.0.0.1:7002, 127.0.0.1:7003]",
        ]
    )
    path = root / "site.yaml"
    path.write_text(text + "\n")
    return path


QUIET_PLAYBOOK = """
name: quiet
title: A step, then the first switchover at a quiet moment
states:
  - id: first-switchover
    title: One step, then switch each HA pair over when it is quiet
    seed_step: null
    scope: ha_pair
    actions:
      - do: test.pair_step
        with: {n: 1}
      - do: service.switchover
        with: {wait_for_quiet: true}
"""


def polls(root: Path, app: str) -> list[float]:
    path = root / "log" / f"polls-{app}"
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def switched(root: Path) -> list[str]:
    path = root / "log" / "switched"
    return path.read_text().split() if path.exists() else []


def test_quiet_waits_of_two_pairs_run_side_by_side(world, pairs):
    # A primary is busy until both primaries are being watched: waits one after another
    # would never see it quiet and would switch after the full 20 s.
    both = "[ -s {log}/polls-ors-1a ] && [ -s {log}/polls-ors-2a ] && echo 0 || echo 50"
    pairs.site = local_pairs(pairs.root, both)
    pairs.playbook = QUIET_PLAYBOOK
    pairs.policy = SwitchoverPolicy(5, 20)
    world.seconds = 0.01

    started = time.monotonic()
    outcome = pairs.run(Parallelism(2))

    assert outcome.status == "succeeded", outcome.message
    assert time.monotonic() - started < 10
    ended = [e for e in pairs.journal.events(pairs.run_id) if e.kind == "action_ended"]
    waits = [e.payload["observed"]["quiet_wait"] for e in ended if e.action_key.endswith("/1")]
    # Each wait ended quiet, so each saw the other pair's wait begun: the two overlapped.
    assert len(waits) == 2 and all(w["quiet"] for w in waits)
    assert polls(pairs.root, "ors-1a") and polls(pairs.root, "ors-2a")
    assert sorted(switched(pairs.root)) == ["pair-1", "pair-2"]


def test_a_halt_ends_a_quiet_wait_without_a_switchover_and_a_resume_sends_it_once(
    world, pairs, monkeypatch
):
    monkeypatch.setattr("ors_migrate.actions.service.SWITCHOVER_SETTLE_S", 0.1)
    pairs.site = local_pairs(pairs.root, "cat {s}/{app}")
    pairs.playbook = QUIET_PLAYBOOK
    pairs.policy = SwitchoverPolicy(5, 30)  # 50 in progress: pair-2 would wait 30 s
    world.seconds = 0.01
    world.fail = {("pair-1", 1)}

    def once_pair_2_waits(pair: str, number: int) -> None:
        deadline = time.monotonic() + 10
        while len(polls(pairs.root, "ors-2a")) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

    world.before_failing = once_pair_2_waits

    started = time.monotonic()
    outcome = pairs.run(Parallelism(2))

    assert time.monotonic() - started < 10, "the wait ended at the halt, not after 30 s"
    assert outcome.status == "failed", outcome.message
    assert "HA pair pair-1 failed" in outcome.message
    assert "HA pair pair-2 stopped" in outcome.message and "was not sent" in outcome.message
    assert switched(pairs.root) == []
    assert (pairs.root / "roles" / "ors-2a").read_text().strip() == "primary"
    key = "first-switchover/pair-2/1"  # its switchover
    assert pairs.kinds_of(key) == ["action_intent"]  # nothing sent, nothing failed

    world.fail = set()
    for primary in ("ors-1a", "ors-2a"):
        (pairs.root / "sessions" / primary).write_text("0\n")
    resumed = pairs.run(Parallelism(2))

    assert resumed.status == "succeeded", resumed.message
    assert sorted(switched(pairs.root)) == ["pair-1", "pair-2"]  # each pair exactly once
    assert pairs.kinds_of(key) == ["action_intent", "action_reconciled", "action_ended"]
    reconciled = next(
        e for e in pairs.journal.events(pairs.run_id)
        if e.action_key == key and e.kind == "action_reconciled"
    )  # fmt: skip
    assert reconciled.payload["already_done"] is False


ENABLING_PLAYBOOK = """
name: enabling
title: Enable on every pair behind a gate
states:
  - id: enable-all
    title: Enable Redis on every HA pair
    seed_step: null
    scope: ha_pair
    gate: Redis is enabled on every pair in this state.
    enables_redis: true
    actions:
      - do: test.pair_step
        with: {n: 1}
      - do: test.pair_step
        with: {n: 2}
"""


class LateAnswer(Ui):
    """Approves every gate, after `minutes` on the window's clock."""

    def __init__(self, clock: list[dt.datetime], minutes: float) -> None:
        super().__init__(assume_yes=True, quiet=True)
        self.clock, self.minutes = clock, minutes

    def gate(self, title: str, summary: list[str], view: GateView | None = None) -> Decision:
        self.clock[0] += dt.timedelta(minutes=self.minutes)
        return super().gate(title, summary, view)


def test_a_gate_answered_late_pauses_a_parallel_state_that_enables_redis(world, pairs):
    # Both pairs at once take 80 s (two 40 s steps each): they fit the window when the gate
    # is shown with 5 min left, no longer once it is answered 4 min later.
    start = dt.datetime(2026, 12, 1, 5, 0, tzinfo=dt.UTC)
    clock = [start]
    window = ChangeWindow(start + dt.timedelta(minutes=5), lambda step: 40.0, now=lambda: clock[0])
    pairs.site = local_pairs(pairs.root, "cat {s}/{app}")
    pairs.playbook = ENABLING_PLAYBOOK
    pairs.ui = LateAnswer(clock, minutes=4)

    outcome = pairs.run(Parallelism(2), window)

    assert outcome.status == "paused" and "paused at a safe point" in outcome.message
    assert world.log == []  # no pair started
    kinds = [e.kind for e in pairs.journal.events(pairs.run_id)]
    assert kinds.index("gate_decision") < kinds.index("window_pause")
    paused = next(e for e in pairs.journal.events(pairs.run_id) if e.kind == "window_pause")
    assert paused.payload["needed_s"] == 80 and paused.payload["left_s"] == 60

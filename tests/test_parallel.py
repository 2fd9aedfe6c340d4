"""HA pairs in parallel (`run --parallel N --parallel-per-cluster M`), without a lab: the waves
and the estimate the plan shows, and the engine's schedule with fake actions on the example
site (two ORS clusters, five HA pairs): limits kept, each pair's steps in order and journaled
on their own, a failure stopping every pair after its current action, a closing change window
stopping new pairs only."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, cli

from ors_migrate.engine import Engine, Outcome
from ors_migrate.errors import InputError, VerificationFailed
from ors_migrate.journal import Journal
from ors_migrate.parallel import Parallelism, pair_groups, schedule_seconds, waves
from ors_migrate.runner import action_table, build_context, load_playbook, make_plan
from ors_migrate.secrets import Secrets
from ors_migrate.site import load_site
from ors_migrate.step import Action, ChangeWindow, PlannedAction, Preview, RunContext
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
        if (pair, number) in WORLD.fail:  # once the first wave is under way, mid-step
            WORLD.wait_for_starts(3)
            WORLD.note("end", pair, number)
            raise VerificationFailed(f"{pair} step {number}: the fake verification failed")
        time.sleep(WORLD.seconds)
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

    def engine(self, parallel: Parallelism, window: ChangeWindow | None = None) -> Engine:
        loaded = load_site(EXAMPLE)
        path = self.root / "pairs.yaml"
        path.write_text(PLAYBOOK)
        playbook = load_playbook(str(path), ACTIONS)
        plan = make_plan(loaded, playbook)
        if not self.run_id:
            self.run_id = self.journal.create_run(
                site_name=loaded.site.name,
                site_path=str(EXAMPLE),
                site_digest=loaded.digest,
                playbook=playbook.spec.name,
                playbook_digest=playbook.digest,
                plan_hash=plan.plan_hash,
                plan_json=json.dumps(plan.as_dict()),
            )
        ui = Ui(assume_yes=True, quiet=True)
        ctx = build_context(
            loaded, self.run_id, self.journal, ui, secrets=Secrets(interactive=False), operator="t"
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
    paused = [e for e in pairs.journal.events(pairs.run_id) if e.kind == "window_pause"]
    assert len(paused) == 1

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

"""The state machine on its own: retries with backoff for transient failures only, and
reconciliation of interrupted actions through `check()`, with fake actions on a tiny site."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tiny_site import TinySite, make_tiny_site

from ors_migrate.engine import Engine, Outcome
from ors_migrate.errors import (
    CommandFailed,
    TerminalRequired,
    TransportError,
    VerificationFailed,
)
from ors_migrate.journal import Journal
from ors_migrate.runner import action_table, build_context, load_playbook, make_plan
from ors_migrate.secrets import Secrets
from ors_migrate.site import load_site
from ors_migrate.step import Action, Preview, RunContext
from ors_migrate.ui import Ui


@dataclass
class FakeWorld:
    """What the fake action sees and does. `failures` are raised by `apply`, one per call;
    with `effect_lands` an attempt that fails still flips the switch (the command took effect,
    then the connection dropped)."""

    failures: list[Exception] = field(default_factory=list)
    effect_lands: bool = False
    switched: int = 0
    applied: int = 0
    checked: int = 0
    clock: float = 0.0
    cost_s: float = 0.0

    def now(self) -> float:
        return self.clock

    @property
    def on(self) -> bool:
        return self.switched % 2 == 1


WORLD = FakeWorld()


class FakeSwitch(Action):
    """Flips a switch: applying it twice would flip it back, as a second switchover would."""

    name = "test.switch"
    scopes = frozenset({"site"})
    changes_world = True

    def preview(self, step: Any, view: Any) -> Preview:
        return Preview("flip the fake switch")

    def check(self, ctx: RunContext, step: Any, intent: dict[str, Any]) -> bool:
        WORLD.checked += 1
        return WORLD.on

    def apply(self, ctx: RunContext, step: Any, intent: dict[str, Any]) -> dict[str, Any]:
        WORLD.applied += 1
        WORLD.clock += WORLD.cost_s
        if WORLD.failures:
            if WORLD.effect_lands:
                WORLD.switched += 1
            raise WORLD.failures.pop(0)
        WORLD.switched += 1
        return {"on": WORLD.on}


PLAYBOOK = """
name: fake
title: A fake procedure
states:
  - id: flip
    title: Flip the switch
    seed_step: null
    retry: {{attempts: {attempts}, backoff_s: 1.5}}
    actions:
      - do: test.switch
"""


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    global WORLD
    WORLD = FakeWorld()
    yield WORLD


ACTIONS = {**action_table(), FakeSwitch.name: FakeSwitch}


@dataclass
class Harness:
    site: TinySite
    journal: Journal
    sleeps: list[float]
    run_id: str = ""

    def engine(self, attempts: int = 4, text: str = PLAYBOOK) -> Engine:
        loaded = load_site(self.site.path)
        playbook = load_playbook(
            str(self.site.write_playbook("fake", text.format(attempts=attempts))), ACTIONS
        )
        plan = make_plan(loaded, playbook)
        if not self.run_id:
            self.run_id = self.journal.create_run(
                site_name="tiny",
                site_path=str(self.site.path),
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
        return Engine(ctx, plan, ACTIONS, sleep=self.sleeps.append, clock=WORLD.now)

    def run(self, attempts: int = 4, text: str = PLAYBOOK) -> Outcome:
        engine = self.engine(attempts, text)
        try:
            return engine.run()
        finally:
            engine.ctx.close()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.journal.events(self.run_id) if e.kind.startswith("action")]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    journal = Journal(tmp_path / "state")
    yield Harness(make_tiny_site(tmp_path / "site"), journal, [])
    journal.close()


def test_a_timeout_and_a_refused_connection_are_retried_with_doubling_backoff(world, harness):
    world.failures = [
        TransportError("`orsctl status` did not finish within 30 s"),
        ConnectionRefusedError(111, "Connection refused"),
    ]

    outcome = harness.run()

    assert outcome.status == "succeeded"
    assert world.applied == 3 and world.on
    assert harness.sleeps == [1.5, 3.0]
    retries = [
        e.payload for e in harness.journal.events(harness.run_id) if e.kind == "action_retry"
    ]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert "Connection refused" in retries[1]["error"]


def test_a_failed_verification_is_never_retried(world, harness):
    world.failures = [VerificationFailed("ors-b loaded persistence type cassandra, expected redis")]

    outcome = harness.run()

    assert outcome.status == "failed" and outcome.exit_code == 1
    assert "expected redis" in outcome.message
    assert world.applied == 1 and harness.sleeps == []
    assert harness.kinds() == ["action_intent", "action_failed"]


def test_a_command_that_ran_and_failed_is_not_retried(world, harness):
    world.failures = [CommandFailed("here", "orsctl switchover pair-1", 1, "refused")]

    outcome = harness.run()

    assert outcome.status == "failed"
    assert world.applied == 1 and harness.sleeps == []


def test_retries_stop_at_the_state_retry_policy(world, harness):
    world.failures = [TransportError(f"timeout {n}") for n in range(5)]

    outcome = harness.run(attempts=3)

    assert outcome.status == "failed" and "timeout 2" in outcome.message
    assert world.applied == 3 and harness.sleeps == [1.5, 3.0]


def test_an_undescribed_error_fails_the_state_with_its_type_instead_of_a_traceback(world, harness):
    world.failures = [KeyError("pair-9")]

    outcome = harness.run()

    assert outcome.status == "failed"
    assert "KeyError" in outcome.message and world.applied == 1
    assert harness.journal.get_run(harness.run_id).status == "failed"
    failed = [
        e.payload for e in harness.journal.events(harness.run_id) if e.kind == "action_failed"
    ]
    assert failed[0]["kind"] == "ActionCrashed" and "in apply" in failed[0]["traceback"]


def test_a_retry_asks_check_first_so_an_effect_that_landed_is_not_applied_twice(world, harness):
    world.failures = [TransportError("connection reset after the command was sent")]
    world.effect_lands = True

    outcome = harness.run()

    assert outcome.status == "succeeded"
    assert world.applied == 1 and world.switched == 1 and world.on


def _interrupted_after_intent(harness: Harness) -> None:
    """A run killed between the intent and the result of its only action."""
    engine = harness.engine()
    try:
        engine.ctx.record(
            "action_intent", state_id="flip", action_key="flip/site/0", payload={"what": "flip"}
        )
    finally:
        engine.ctx.close()


def test_resume_reconciles_an_action_that_took_effect_without_applying_it_again(world, harness):
    _interrupted_after_intent(harness)
    world.switched = 1  # the interrupted attempt did flip the switch

    outcome = harness.run()

    assert outcome.status == "succeeded"
    assert world.applied == 0 and world.switched == 1 and world.checked == 1
    reconciled = [
        e.payload for e in harness.journal.events(harness.run_id) if e.kind == "action_reconciled"
    ]
    assert reconciled == [{"already_done": True, "intent": {"what": "flip"}}]


def test_resume_applies_an_interrupted_action_that_did_not_take_effect_once(world, harness):
    _interrupted_after_intent(harness)

    outcome = harness.run()

    assert outcome.status == "succeeded"
    assert world.applied == 1 and world.switched == 1
    assert harness.kinds() == ["action_intent", "action_reconciled", "action_ended"]


def test_a_finished_action_is_skipped_on_resume(world, harness):
    assert harness.run().status == "succeeded"
    harness.journal.set_status(harness.run_id, "running")

    assert harness.run().status == "succeeded"
    assert world.applied == 1 and world.checked == 0


TIMED_PLAYBOOK = """
name: fake
title: A fake procedure
states:
  - id: flip
    title: Flip the switch three times
    seed_step: null
    timeout_s: 5
    retry: {{attempts: {attempts}, backoff_s: 10}}
    actions:
      - do: test.switch
      - do: test.switch
      - do: test.switch
"""


def test_a_state_past_its_timeout_stops_before_its_next_action_and_resumes(world, harness):
    world.cost_s = 4.0  # each flip takes 4 s of the state's 5

    stopped = harness.run(text=TIMED_PLAYBOOK)

    assert stopped.status == "failed" and stopped.exit_code == 1
    assert "state flip ran past its timeout_s of 5 s" in stopped.message
    assert world.applied == 2
    timed_out = [e for e in harness.journal.events(harness.run_id) if e.kind == "state_timed_out"]
    assert [(e.state_id, e.action_key) for e in timed_out] == [("flip", "flip/site/2")]
    assert timed_out[0].payload == {"timeout_s": 5.0, "elapsed_s": 8.0}

    resumed = harness.run(text=TIMED_PLAYBOOK)

    assert resumed.status == "succeeded"
    assert world.applied == 3


def test_a_retry_that_would_wait_past_the_timeout_stops_the_state_instead(world, harness):
    world.failures = [TransportError("`orsctl status` did not finish within 30 s")]

    outcome = harness.run(text=TIMED_PLAYBOOK)

    assert outcome.status == "failed" and "ran past its timeout_s of 5 s" in outcome.message
    assert harness.sleeps == [] and world.applied == 1
    failed = [
        e.payload for e in harness.journal.events(harness.run_id) if e.kind == "action_failed"
    ]
    assert failed[-1]["kind"] == "StateTimedOut"


def test_a_state_without_timeout_runs_however_long_it_takes(world, harness):
    world.cost_s = 3600.0

    assert harness.run().status == "succeeded"


def flips(states: int) -> str:
    """A playbook of `states` states, each flipping the switch once."""
    return "name: fake\ntitle: A fake procedure\nstates:\n" + "".join(
        f"  - id: flip-{n}\n    title: Flip the switch\n    seed_step: null\n"
        "    retry: {{attempts: {attempts}, backoff_s: 1.5}}\n"
        "    actions:\n      - do: test.switch\n"
        for n in range(states)
    )


def test_a_resume_decodes_each_journal_event_once_not_once_per_state(world, harness, monkeypatch):
    import ors_migrate.journal as journal_module

    assert harness.run(text=flips(1)).status == "succeeded"  # the first of three states
    harness.journal.set_status(harness.run_id, "running")
    first = harness.journal
    harness.journal = Journal(first.state_dir)  # as a new process: nothing read yet
    decoded: list[int] = []
    new_event = journal_module._new_event  # each event the journal decodes is built by it
    monkeypatch.setattr(
        journal_module, "_new_event", lambda row: decoded.append(row[0]) or new_event(row)
    )
    try:
        assert harness.run(text=flips(3)).status == "succeeded"
    finally:
        harness.journal.close()
        harness.journal = first

    assert world.applied == 3
    assert decoded and len(decoded) == len(set(decoded))


def test_a_rollback_action_that_needs_a_person_pauses_the_rollback_instead_of_failing(
    world, harness
):
    world.failures = [TerminalRequired("a person must confirm the LCA restart on host-a")]
    engine = harness.engine()
    engine.rollback_plan = lambda: engine.plan
    try:
        outcome = engine.run_rollback(reason="asked")
    finally:
        engine.ctx.close()

    assert outcome.status == "paused" and outcome.exit_code == TerminalRequired.exit_code
    assert harness.journal.get_run(harness.run_id).status == "paused"

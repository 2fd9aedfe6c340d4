"""The state machine: runs a plan state by state, journaling intent before and result after
every action, reconciling interrupted actions through `check()`, and rolling back when a
verification fails after Redis has been enabled."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ors_migrate.actions.base import CheckResult
from ors_migrate.actions.registry import Action, get_action
from ors_migrate.actions.service import ServiceControl
from ors_migrate.actions.transports import TransportPool
from ors_migrate.errors import (
    GateStopped,
    OrsMigrateError,
    ResumeRefused,
    TransportError,
    VerificationFailed,
)
from ors_migrate.journal import Event, Journal
from ors_migrate.options import PERSISTENCE
from ors_migrate.plan import Plan, PlannedAction, PlannedState
from ors_migrate.secrets import Secrets
from ors_migrate.site import LoadedSite, Site
from ors_migrate.ui import Ui

FORWARD = "forward"
ROLLBACK = "rollback"


@dataclass
class RunContext:
    """Everything an action may use. Built once per run (one composition root)."""

    loaded_site: LoadedSite
    run_id: str
    journal: Journal
    ui: Ui
    secrets: Secrets
    operator: str
    pool: TransportPool = field(init=False)
    services: ServiceControl = field(init=False)
    origin_run_id: str = ""
    phase: str = FORWARD

    def __post_init__(self) -> None:
        self.pool = TransportPool(self.site, self.secrets)
        self.services = ServiceControl(self.site, self.pool)
        self.origin_run_id = self.origin_run_id or self.run_id
        self._stores: dict[str, Any] = {}

    @property
    def site(self) -> Site:
        return self.loaded_site.site

    def redis_password(self) -> str | None:
        return self.secrets.resolve(self.site.redis.password, what="Redis password")

    def cassandra_password(self) -> str | None:
        cass = self.site.cassandra
        return self.secrets.resolve(cass.password if cass else None, what="Cassandra password")

    def secret_option_value(self, change: Any) -> str | None:
        if change.key == (PERSISTENCE, "password"):
            return self.redis_password()
        raise KeyError(change.key)

    def option_store(self, app_name: str) -> Any:
        if app_name not in self._stores:
            from ors_migrate.actions.option_backends import open_store

            self._stores[app_name] = open_store(self, app_name)
        return self._stores[app_name]

    def capture_originals(self, app_name: str) -> None:
        """Before the first edit of an application in this run: its current values of every
        option the procedures may touch, and (where the backend can) the whole file."""
        if self.journal.has_originals(self.origin_run_id, app_name):
            return
        from ors_migrate.actions.option_actions import tracked_options

        store = self.option_store(app_name)
        store.keep_original(self.origin_run_id)
        current = store.read()
        values = [
            (c.section, c.option, current.get(c.key), c.secret) for c in tracked_options(self.site)
        ]
        self.journal.save_originals(self.origin_run_id, app_name, values)

    def record_checks(self, results: list[CheckResult]) -> None:
        for result in results:
            self.journal.record(self.run_id, "check", phase=self.phase, payload=result.as_dict())
            if result.severity == "warning":
                self.ui.warn(f"{result.message}" + (f" (fix: {result.fix})" if result.fix else ""))

    def close(self) -> None:
        self.pool.close_all()


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransportError) and exc.transient


@dataclass
class Outcome:
    status: str
    message: str
    exit_code: int


class Engine:
    def __init__(
        self,
        ctx: RunContext,
        plan: Plan,
        *,
        auto_rollback: bool = True,
        rollback_plan: Callable[[], Plan] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ctx = ctx
        self.plan = plan
        self.auto_rollback = auto_rollback
        self.rollback_plan = rollback_plan
        self.sleep = sleep

    @property
    def journal(self) -> Journal:
        return self.ctx.journal

    def _events(self, phase: str) -> list[Event]:
        return [e for e in self.journal.events(self.ctx.run_id) if e.phase == phase]

    def redis_enabled(self) -> bool:
        """True once a state that enables Redis has started in this run."""
        enabling = {s.id for s in self.plan.states if s.enables_redis}
        return any(
            e.kind == "state_started" and e.state_id in enabling for e in self._events(FORWARD)
        )

    # Running a phase
    def run(self) -> Outcome:
        phase = self.journal.get_run(self.ctx.run_id)
        if phase is not None and phase.phase == ROLLBACK:
            return self.run_rollback(reason="resuming the rollback")
        try:
            self._run_states(self.plan, FORWARD)
        except GateStopped as exc:
            self.journal.set_status(self.ctx.run_id, "paused")
            return Outcome("paused", str(exc), exc.exit_code)
        except _RollbackRequested as exc:
            return self.run_rollback(reason=str(exc))
        except OrsMigrateError as exc:
            return self._failed(exc)
        self.journal.set_status(self.ctx.run_id, "succeeded", outcome="succeeded")
        return Outcome("succeeded", "the migration completed", 0)

    def _failed(self, exc: OrsMigrateError) -> Outcome:
        state = self.journal.get_run(self.ctx.run_id)
        current = state.current_state if state else None
        planned = next((s for s in self.plan.states if s.id == current), None)
        policy = planned.on_failure if planned and planned.on_failure else None
        if policy is None:
            policy = "rollback" if self.redis_enabled() else "stop"
        message = f"state {current} failed: {exc}"
        if policy == "rollback" and self.auto_rollback and self.rollback_plan is not None:
            return self.run_rollback(reason=message)
        hint = (
            " Redis is enabled on some applications: run `ors-migrate rollback` to disable it."
            if self.redis_enabled()
            else " Fix the cause, then continue with `ors-migrate run SITE --resume`."
        )
        self.journal.set_status(self.ctx.run_id, "failed", outcome=message)
        return Outcome("failed", message + hint, 1)

    def run_rollback(self, *, reason: str) -> Outcome:
        if self.rollback_plan is None:
            self.journal.set_status(self.ctx.run_id, "failed", outcome=reason)
            return Outcome("failed", reason + " (no rollback playbook)", 1)
        plan = self.rollback_plan()
        if self.journal.get_run(self.ctx.run_id).phase != ROLLBACK:  # type: ignore[union-attr]
            self.journal.record(
                self.ctx.run_id,
                "rollback_started",
                phase=ROLLBACK,
                payload={"reason": reason, "plan_hash": plan.plan_hash},
            )
            self.journal.set_status(self.ctx.run_id, "running", phase=ROLLBACK)
        self.ctx.phase = ROLLBACK
        self.ctx.ui.warn(f"rolling back: {reason}")
        try:
            self._run_states(plan, ROLLBACK)
        except GateStopped as exc:
            self.journal.set_status(self.ctx.run_id, "paused")
            return Outcome("paused", str(exc), exc.exit_code)
        except OrsMigrateError as exc:
            message = f"the rollback itself failed: {exc}; fix the cause and run `ors-migrate rollback` again"
            self.journal.set_status(self.ctx.run_id, "failed", outcome=message)
            return Outcome("failed", message, 1)
        self.journal.set_status(self.ctx.run_id, "rolled_back", outcome=reason)
        return Outcome("rolled_back", f"rolled back after: {reason}", 1)

    def _run_states(self, plan: Plan, phase: str) -> None:
        self.ctx.phase = phase
        events = self._events(phase)
        finished = {e.state_id for e in events if e.kind == "state_ended"}
        total = len(plan.states)
        for index, state in enumerate(plan.states, start=1):
            if state.id in finished:
                continue
            self.journal.set_current_state(self.ctx.run_id, state.id, phase)
            self.journal.set_status(self.ctx.run_id, "running", current_state=state.id, phase=phase)
            self.ctx.ui.state_started(index, total, state.id, state.title, state.seed_step)
            if not any(e.kind == "state_started" and e.state_id == state.id for e in events):
                self.journal.record(
                    self.ctx.run_id,
                    "state_started",
                    phase=phase,
                    state_id=state.id,
                    payload={"seed_step": state.seed_step},
                )
            self._gate(state, phase, events)
            started = time.monotonic()
            for step in state.actions:
                self._run_action(state, step, phase, events)
            self.journal.record(
                self.ctx.run_id,
                "state_ended",
                phase=phase,
                state_id=state.id,
                payload={"seconds": round(time.monotonic() - started, 3)},
            )
            events = self._events(phase)

    def _gate(self, state: PlannedState, phase: str, events: list[Event]) -> None:
        if not state.gate:
            return
        if any(
            e.kind == "gate_decision"
            and e.state_id == state.id
            and e.payload.get("decision") == "approve"
            for e in events
        ):
            return
        summary = [state.gate, *gate_summary(self.plan if phase == FORWARD else None, state)]
        decision = self.ctx.ui.gate(state.title, summary)
        self.journal.record(
            self.ctx.run_id,
            "gate_decision",
            phase=phase,
            state_id=state.id,
            payload={
                "decision": decision,
                "by": self.ctx.operator,
                "assumed": self.ctx.ui.assume_yes,
            },
        )
        if decision == "stop":
            raise GateStopped(f"stopped at gate '{state.id}'; resume with --resume")
        if decision == "rollback":
            if phase == ROLLBACK:
                raise GateStopped("already rolling back; stopped at the operator's request")
            raise _RollbackRequested(
                f"operator {self.ctx.operator} chose to roll back at gate '{state.id}'"
            )

    def _run_action(
        self, state: PlannedState, step: PlannedAction, phase: str, events: list[Event]
    ) -> None:
        mine = [e for e in events if e.action_key == step.key]
        if any(e.kind == "action_ended" for e in mine):
            return
        action = get_action(step.action)
        intents = [e for e in mine if e.kind == "action_intent"]
        started = time.monotonic()
        note = ""
        if intents and action.changes_world:
            intent = intents[-1].payload
            done = self._with_retries(state, lambda: action.check(self.ctx, step, intent))
            self.journal.record(
                self.ctx.run_id,
                "action_reconciled",
                phase=phase,
                state_id=state.id,
                action_key=step.key,
                payload={"already_done": done, "intent": intent},
            )
            if done:
                observed = {"reconciled": True, **intent}
                self._ended(state, step, phase, observed, started)
                return
            note = "resumed after an interruption"
        else:
            intent = self._with_retries(state, lambda: action.prepare(self.ctx, step))
            self.journal.record(
                self.ctx.run_id,
                "action_intent",
                phase=phase,
                state_id=state.id,
                action_key=step.key,
                payload=intent,
            )
        try:
            observed = self._apply(state, step, action, intent)
        except OrsMigrateError as exc:
            self.journal.record(
                self.ctx.run_id,
                "action_failed",
                phase=phase,
                state_id=state.id,
                action_key=step.key,
                payload={"error": self.ctx.secrets.mask(str(exc)), "kind": type(exc).__name__},
            )
            raise
        self._ended(state, step, phase, observed, started, note)

    def _ended(
        self,
        state: PlannedState,
        step: PlannedAction,
        phase: str,
        observed: dict[str, Any],
        started: float,
        note: str = "",
    ) -> None:
        seconds = time.monotonic() - started
        self.journal.record(
            self.ctx.run_id,
            "action_ended",
            phase=phase,
            state_id=state.id,
            action_key=step.key,
            payload={"observed": observed, "seconds": round(seconds, 3)},
        )
        self.ctx.ui.action_done(
            step.key,
            step.preview.description,
            seconds,
            note or ("already done" if observed.get("reconciled") else ""),
        )

    def _apply(
        self, state: PlannedState, step: PlannedAction, action: Action, intent: dict[str, Any]
    ) -> dict[str, Any]:
        attempt = 0
        while True:
            attempt += 1
            try:
                if attempt > 1 and action.changes_world and action.check(self.ctx, step, intent):
                    observed = {"reconciled": True}
                else:
                    observed = action.apply(self.ctx, step, intent)
                observed.update(action.verify(self.ctx, step, intent))
                return observed
            except VerificationFailed:
                raise
            except OrsMigrateError as exc:
                if not is_transient(exc) or attempt >= state.retry_attempts:
                    raise
                self._retry_note(step, exc, attempt, state)

    def _with_retries(self, state: PlannedState, fn: Callable[[], Any]) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except OrsMigrateError as exc:
                if not is_transient(exc) or attempt >= state.retry_attempts:
                    raise
                self.ctx.ui.warn(f"transient failure, retrying: {exc}")
                self.sleep(state.retry_backoff_s * 2 ** (attempt - 1))

    def _retry_note(
        self, step: PlannedAction, exc: OrsMigrateError, attempt: int, state: PlannedState
    ) -> None:
        delay = state.retry_backoff_s * 2 ** (attempt - 1)
        self.ctx.ui.warn(f"{step.key}: transient failure ({exc}); retry {attempt} in {delay:g} s")
        self.journal.record(
            self.ctx.run_id,
            "action_retry",
            phase=self.ctx.phase,
            state_id=None,
            action_key=step.key,
            payload={"error": self.ctx.secrets.mask(str(exc)), "attempt": attempt},
        )
        self.sleep(delay)


class _RollbackRequested(OrsMigrateError):
    """The operator chose rollback at a gate."""


def gate_summary(plan: Plan | None, state: PlannedState) -> list[str]:
    """What comes next and where, for the gate prompt."""
    lines = [f"next: {state.id} ({state.seed_step or 'tool step'}) - {state.title}"]
    hosts = sorted({a.target.host for a in state.actions if a.target.host})
    if hosts:
        lines.append("hosts: " + ", ".join(hosts))
    for action in state.actions:
        lines.append(f"  - {action.preview.description}")
    return lines


def expected_primaries(
    journal: Journal, run_id: str, initial: dict[str, str]
) -> dict[str, set[str]]:
    """Per HA pair, the members that may be primary now according to the journal: the last
    completed switchover decides; a switchover started but not ended allows either member."""
    expected = {pair: {app} for pair, app in initial.items()}
    intents: dict[str, dict[str, Any]] = {}
    for event in journal.events(run_id):
        payload = event.payload
        if event.kind == "action_intent" and "new_primary" in payload:
            intents[event.action_key or ""] = payload
            expected[payload["pair"]] = {payload["old_primary"], payload["new_primary"]}
        elif event.kind == "action_ended" and event.action_key in intents:
            intent = intents.pop(event.action_key or "")
            expected[intent["pair"]] = {intent["new_primary"]}
        elif event.kind == "topology":
            for pair, app in payload.get("primaries", {}).items():
                expected[pair] = {app}
    return expected


def check_live_topology(ctx: RunContext, initial: dict[str, str]) -> None:
    """Refuse to resume when the live primaries cannot be explained by the journal."""
    expected = expected_primaries(ctx.journal, ctx.run_id, initial)
    problems = []
    for _, pair in ctx.site.pairs():
        statuses = ctx.services.pair_status(pair.name)
        primaries = {n for n, s in statuses.items() if s.role == "primary"}
        allowed = expected.get(pair.name, set())
        if len(primaries) != 1 or not primaries <= allowed:
            seen = ", ".join(f"{n}={s.role}" for n, s in statuses.items())
            problems.append(
                f"HA pair {pair.name}: the journal expects {' or '.join(sorted(allowed))} as "
                f"primary, the live roles are {seen}"
            )
    if problems:
        raise ResumeRefused(
            "the live topology does not match the run's journal: "
            + "; ".join(problems)
            + ". Restore the expected roles (or start a new run) before resuming."
        )

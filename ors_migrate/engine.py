"""The state machine: runs a plan state by state, journaling intent before and result after
every action, reconciling interrupted actions through `check()`, retrying transient failures
with backoff, and rolling back when a verification fails after Redis has been enabled."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ors_migrate.actions.base import CheckResult
from ors_migrate.actions.registry import Action, get_action
from ors_migrate.actions.service import AppStatus, ServiceControl
from ors_migrate.actions.transports import TransportPool
from ors_migrate.errors import (
    GateStopped,
    OrsMigrateError,
    ResumeRefused,
    RollbackRequested,
    TransportError,
)
from ors_migrate.journal import Event, Journal
from ors_migrate.options import PERSISTENCE
from ors_migrate.plan import Plan, PlannedAction, PlannedState
from ors_migrate.secrets import Secrets
from ors_migrate.site import LoadedSite, Site
from ors_migrate.ui import Ui, build_gate_view

FORWARD = "forward"
ROLLBACK = "rollback"
ROLLBACK_EVENTS = ("rollback_started", "rollback_requested")

T = TypeVar("T")


@dataclass(frozen=True)
class SwitchoverPolicy:
    """Before a switchover that allows it, wait up to `wait_s` for the primary to have fewer
    than `below` sessions in progress (they are at risk at the first switchover)."""

    below: int
    wait_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"below": self.below, "wait_s": self.wait_s}


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
    switchover_policy: SwitchoverPolicy | None = None

    def __post_init__(self) -> None:
        self.pool = TransportPool(self.site, self.secrets)
        self.services = ServiceControl(self.site, self.pool)
        self.origin_run_id = self.origin_run_id or self.run_id
        self._stores: dict[str, Any] = {}

    def attach(self, run_id: str) -> None:
        """Name the run once the journal has created it (the live world is read before)."""
        self.run_id = run_id
        self.origin_run_id = run_id

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

    def record(
        self,
        kind: str,
        *,
        state_id: str | None = None,
        action_key: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Journal an event of this run, with every secret value resolved so far masked."""
        self.journal.record(
            self.run_id,
            kind,
            phase=self.phase,
            state_id=state_id,
            action_key=action_key,
            payload=self.masked(payload or {}),
        )

    def masked(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.secrets.mask(value)
        if isinstance(value, dict):
            return {k: self.masked(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.masked(v) for v in value]
        return value

    def record_checks(self, results: list[CheckResult]) -> None:
        for result in results:
            self.record("check", payload=result.as_dict())
            if result.severity == "warning":
                self.ui.warn(f"{result.message}" + (f" (fix: {result.fix})" if result.fix else ""))

    def close(self) -> None:
        self.pool.close_all()


class ActionCrashed(OrsMigrateError):
    """An action raised an error it does not describe; its state fails with the details."""


def as_run_error(exc: Exception, step: PlannedAction) -> OrsMigrateError:
    """Any exception of an action as an error the engine handles: a refused or reset connection
    and a timeout are transient transport errors, anything undescribed is a crash."""
    if isinstance(exc, OrsMigrateError):
        return exc
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransportError(f"{step.key}: {type(exc).__name__}: {exc}")
    from ors_migrate.actions.client_errors import as_cause

    cause = as_cause(exc, step.key)
    if cause is not None:
        return cause
    return ActionCrashed(f"{step.key} failed unexpectedly: {type(exc).__name__}: {exc}")


def failure(exc: OrsMigrateError) -> dict[str, Any]:
    """What the journal keeps of a failed action; for a crash, where in the code it happened."""
    recorded = {"error": str(exc), "kind": type(exc).__name__}
    if isinstance(exc, ActionCrashed) and exc.__cause__ is not None:
        lines = traceback.format_exception(exc.__cause__)
        recorded["traceback"] = "".join(lines)[-4000:]
    return recorded


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: a timeout, a refused connection. Never a failed verification."""
    return isinstance(exc, TransportError) and exc.transient


def backoff_delay(state: PlannedState, attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...): doubling each time."""
    return state.retry_backoff_s * 2 ** (attempt - 1)


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
        rollback_flags: frozenset[str] = frozenset(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ctx = ctx
        self.plan = plan
        self.auto_rollback = auto_rollback
        self.rollback_plan = rollback_plan
        self.rollback_flags = rollback_flags
        self.sleep = sleep
        self.automatic_rollback = False

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
        record = self.journal.get_run(self.ctx.run_id)
        if record is not None and record.phase == ROLLBACK:
            return self.run_rollback(reason=self._rollback_reason(), resumed=True)
        try:
            self._run_states(self.plan, FORWARD)
        except GateStopped as exc:
            self.journal.set_status(self.ctx.run_id, "paused")
            return Outcome("paused", str(exc), exc.exit_code)
        except RollbackRequested as exc:
            self.automatic_rollback = True  # decided at a gate or by --on-timeout: not asked again
            return self.run_rollback(reason=str(exc))
        except OrsMigrateError as exc:
            return self._failed(exc)
        self.journal.set_status(self.ctx.run_id, "succeeded", outcome="succeeded")
        return Outcome("succeeded", "the migration completed", 0)

    def _failed(self, exc: OrsMigrateError) -> Outcome:
        record = self.journal.get_run(self.ctx.run_id)
        current = record.current_state if record else None
        planned = next((s for s in self.plan.states if s.id == current), None)
        policy = planned.on_failure if planned and planned.on_failure else None
        if policy is None:
            policy = "rollback" if self.redis_enabled() else "stop"
        message = self.ctx.secrets.mask(f"state {current} failed: {exc}")
        if policy == "rollback" and self.auto_rollback and self.rollback_plan is not None:
            self.automatic_rollback = True
            return self.run_rollback(reason=message)
        hint = (
            " Redis is enabled on some applications: run `ors-migrate rollback` to disable it."
            if self.redis_enabled()
            else " Fix the cause, then continue with `ors-migrate run SITE --resume`."
        )
        self.journal.set_status(self.ctx.run_id, "failed", outcome=message)
        return Outcome("failed", message + hint, 1)

    def _rollback_reason(self) -> str:
        """Why the rollback that is being resumed started."""
        started = [e for e in self._events(ROLLBACK) if e.kind == "rollback_started"]
        return str(started[0].payload.get("reason")) if started else "an earlier rollback"

    def run_rollback(self, *, reason: str, resumed: bool = False) -> Outcome:
        """The rollback playbook, journaled in the rollback phase of the same run. A repeated
        request (for example `rollback --to start` after a rollback) runs only what is not done."""
        if self.rollback_plan is None:
            self.journal.set_status(self.ctx.run_id, "failed", outcome=reason)
            return Outcome("failed", reason + " (no rollback playbook)", 1)
        plan = self.rollback_plan()
        record = self.journal.get_run(self.ctx.run_id)
        first = record is None or record.phase != ROLLBACK
        self.ctx.phase = ROLLBACK
        if first or not resumed:
            self.ctx.record(
                "rollback_started" if first else "rollback_requested",
                payload={
                    "reason": reason,
                    "plan_hash": plan.plan_hash,
                    "flags": sorted(self.rollback_flags),
                    "automatic": self.automatic_rollback,
                },
            )
        self.journal.set_status(self.ctx.run_id, "running", phase=ROLLBACK)
        self.ctx.ui.warn(f"{'resuming the rollback' if resumed else 'rolling back'}: {reason}")
        try:
            self._run_states(plan, ROLLBACK)
        except GateStopped as exc:
            self.journal.set_status(self.ctx.run_id, "paused")
            return Outcome("paused", str(exc), exc.exit_code)
        except OrsMigrateError as exc:
            message = self.ctx.secrets.mask(
                f"the rollback itself failed: {exc}; fix the cause and run "
                "`ors-migrate rollback` again"
            )
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
            self.journal.set_status(self.ctx.run_id, "running", current_state=state.id, phase=phase)
            self.ctx.ui.state_started(index, total, state.id, state.title, state.seed_step)
            if not any(e.kind == "state_started" and e.state_id == state.id for e in events):
                self.ctx.record(
                    "state_started", state_id=state.id, payload={"seed_step": state.seed_step}
                )
            self._gate(state, phase, events)
            started = time.monotonic()
            for step in state.actions:
                self._run_action(state, step, events)
            self.ctx.record(
                "state_ended",
                state_id=state.id,
                payload={"seconds": round(time.monotonic() - started, 3)},
            )
            events = self._events(phase)

    def _rollback_started_automatically(self) -> bool:
        """The rollback of this run was started by a failure or an earlier decision, not by a
        request now: its own gate (before its switchovers) is not shown."""
        if self.automatic_rollback:
            return True
        started = [e for e in self._events(ROLLBACK) if e.kind in ROLLBACK_EVENTS]
        return bool(started) and bool(started[-1].payload.get("automatic"))

    def _gate(self, state: PlannedState, phase: str, events: list[Event]) -> None:
        if not state.gate:
            return
        if phase == ROLLBACK and self._rollback_started_automatically():
            return
        if any(
            e.kind == "gate_decision"
            and e.state_id == state.id
            and e.payload.get("decision") == "approve"
            for e in events
        ):
            return
        summary = [state.gate, *gate_summary(self.plan if phase == FORWARD else None, state)]
        view = build_gate_view(self.ctx, self.plan if phase == FORWARD else None, state)
        decision = self.ctx.ui.gate(state.title, summary, view)
        self.ctx.record(
            "gate_decision",
            state_id=state.id,
            payload={
                "decision": decision,
                "by": self.ctx.operator,
                "assumed": self.ctx.ui.assume_yes,
                "sessions_in_progress": {s.ha_pair: s.active for s in view.sessions},
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

    # Running one action
    def _run_action(self, state: PlannedState, step: PlannedAction, events: list[Event]) -> None:
        """Intent, apply and verify, result. An action whose intent the journal holds without a
        result was interrupted: its `check()` decides whether it already took effect, and it is
        applied again (with the same intent) only when it did not."""
        mine = [e for e in events if e.action_key == step.key]
        if any(e.kind == "action_ended" for e in mine):
            return
        action = get_action(step.action)
        intents = [e.payload for e in mine if e.kind == "action_intent"]
        started = time.monotonic()
        note = ""
        try:
            if intents and action.changes_world:
                intent = intents[-1]
                if self._reconcile(state, step, action, intent):
                    self._ended(state, step, {"reconciled": True, **intent}, started)
                    return
                note = "resumed after an interruption"
            else:
                intent = self._attempts(state, step, lambda _: action.prepare(self.ctx, step))
                self.ctx.record(
                    "action_intent", state_id=state.id, action_key=step.key, payload=intent
                )
            observed = self._attempts(
                state, step, lambda attempt: self._apply(step, action, intent, attempt)
            )
        except OrsMigrateError as exc:
            self.ctx.record(
                "action_failed", state_id=state.id, action_key=step.key, payload=failure(exc)
            )
            raise
        self._ended(state, step, observed, started, note)

    def _reconcile(
        self, state: PlannedState, step: PlannedAction, action: Action, intent: dict[str, Any]
    ) -> bool:
        done = bool(self._attempts(state, step, lambda _: action.check(self.ctx, step, intent)))
        self.ctx.record(
            "action_reconciled",
            state_id=state.id,
            action_key=step.key,
            payload={"already_done": done, "intent": intent},
        )
        return done

    def _apply(
        self, step: PlannedAction, action: Action, intent: dict[str, Any], attempt: int
    ) -> dict[str, Any]:
        """One attempt. A retry first asks `check()`: the failed attempt may have taken effect."""
        if attempt > 1 and action.changes_world and action.check(self.ctx, step, intent):
            observed: dict[str, Any] = {"reconciled": True}
        else:
            observed = action.apply(self.ctx, step, intent)
        observed.update(action.verify(self.ctx, step, intent))
        return observed

    def _attempts(self, state: PlannedState, step: PlannedAction, fn: Callable[[int], T]) -> T:
        """`fn(attempt)` until it succeeds, retrying transient failures with backoff up to the
        state's retry policy; anything else (a failed verification above all) fails at once."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(attempt)
            except Exception as raw:
                exc = as_run_error(raw, step)
                if not is_transient(exc) or attempt >= state.retry_attempts:
                    if exc is raw:
                        raise
                    raise exc from raw
                self._retry_later(state, step, exc, attempt)

    def _retry_later(
        self, state: PlannedState, step: PlannedAction, exc: OrsMigrateError, attempt: int
    ) -> None:
        delay = backoff_delay(state, attempt)
        message = self.ctx.secrets.mask(str(exc))
        self.ctx.ui.warn(f"{step.key}: transient failure ({message}); retry in {delay:g} s")
        self.ctx.record(
            "action_retry",
            state_id=state.id,
            action_key=step.key,
            payload={"error": message, "attempt": attempt, "delay_s": delay},
        )
        self.sleep(delay)

    def _ended(
        self,
        state: PlannedState,
        step: PlannedAction,
        observed: dict[str, Any],
        started: float,
        note: str = "",
    ) -> None:
        seconds = time.monotonic() - started
        self.ctx.record(
            "action_ended",
            state_id=state.id,
            action_key=step.key,
            payload={"observed": observed, "seconds": round(seconds, 3)},
        )
        self.ctx.ui.action_done(
            step.key,
            step.preview.description,
            seconds,
            note or ("already done before the interruption" if observed.get("reconciled") else ""),
        )


class _RollbackRequested(RollbackRequested):
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


# The live topology on resume
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


def settled_pair_status(ctx: RunContext, pair_name: str) -> dict[str, AppStatus]:
    """The pair's roles once it has exactly one primary, waiting up to the site's ready timeout
    for a switchover or restart that is still in flight to finish."""
    services = ctx.site.services
    deadline = time.monotonic() + services.ready_timeout_s
    while True:
        statuses = ctx.services.pair_status(pair_name)
        primaries = [n for n, s in statuses.items() if s.role == "primary"]
        if len(primaries) == 1 or time.monotonic() >= deadline:
            return statuses
        time.sleep(services.poll_interval_s)


def live_primaries(ctx: RunContext) -> dict[str, str]:
    """The primary of every HA pair, read from the live world; VerificationFailed when a pair
    has no single primary."""
    return {
        pair.name: ctx.services.app_in_role(pair.name, "primary") for _, pair in ctx.site.pairs()
    }


def check_live_topology(ctx: RunContext, initial: dict[str, str]) -> None:
    """Refuse to resume when the live primaries cannot be explained by the journal."""
    expected = expected_primaries(ctx.journal, ctx.run_id, initial)
    problems = []
    for _, pair in ctx.site.pairs():
        statuses = settled_pair_status(ctx, pair.name)
        primaries = {n for n, s in statuses.items() if s.role == "primary"}
        allowed = expected.get(pair.name, set())
        if len(primaries) != 1 or not primaries <= allowed:
            seen = ", ".join(f"{n}={s.role}" for n, s in statuses.items())
            want = " or ".join(sorted(allowed)) or "a primary recorded at the start"
            problems.append(
                f"HA pair {pair.name}: the journal expects {want} as primary, "
                f"the live roles are {seen}"
            )
    if problems:
        raise ResumeRefused(
            "the live topology does not match the run's journal: "
            + "; ".join(problems)
            + ". Restore the expected roles (or start a new run) before resuming."
        )

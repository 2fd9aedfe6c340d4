"""The state machine: runs a plan state by state, journaling intent before and result after
every action, reconciling interrupted actions through `check()`, retrying transient failures
with backoff, and rolling back when a verification fails after Redis has been enabled."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ors_migrate.errors import (
    GateStopped,
    Halted,
    OrsMigrateError,
    RollbackRequested,
    StateTimedOut,
    TransportError,
)
from ors_migrate.events import ROLLBACK_EVENTS, EventKind, GateDecision
from ors_migrate.gate import build_gate_view, gate_summary
from ors_migrate.interrupts import NotedInterrupts, interrupts_noted
from ors_migrate.journal import Event, Journal
from ors_migrate.parallel import (
    WORKING_ON,
    Parallelism,
    cluster_of,
    pair_groups,
    schedule_seconds,
)
from ors_migrate.step import (
    FORWARD,
    ROLLBACK,
    Action,
    ActionTable,
    ChangeWindow,
    Plan,
    PlannedAction,
    PlannedState,
    RunContext,
    clock,
)

T = TypeVar("T")
# How often the main thread looks up from the pairs in flight (for an interrupt, a free slot).
PAIRS_POLL_S = 0.1


class WindowClosing(GateStopped):
    """The next disruptive step would end after the change window: the run pauses before it."""


class ActionCrashed(OrsMigrateError):
    """An action raised an error it does not describe; its state fails with the details."""


class RollbackIncomplete(OrsMigrateError):
    """Some HA pairs (or the rollback's closing steps) could not be rolled back; every other
    pair was. `failed` maps each pair (or "site") to the action and error that stopped it."""

    def __init__(self, failed: dict[str, tuple[PlannedAction, OrsMigrateError]]) -> None:
        self.failed = failed
        super().__init__("; ".join(f"{unit}: {exc}" for unit, (_, exc) in failed.items()))


class PairsFailed(OrsMigrateError):
    """Several HA pairs of a state failed at once; `errors` holds each pair's error, the ones
    that decide the run's path first."""

    def __init__(self, message: str, errors: dict[str, OrsMigrateError]) -> None:
        self.errors = errors
        super().__init__(message)


CauseOf = Callable[[BaseException, str], OrsMigrateError | None]


def no_cause(exc: BaseException, where: str) -> OrsMigrateError | None:
    return None


def as_run_error(
    exc: Exception, step: PlannedAction, cause_of: CauseOf = no_cause
) -> OrsMigrateError:
    """Any exception of an action as an error the engine handles: a refused or reset connection
    and a timeout are transient transport errors, a client library's error a named cause (by
    `cause_of`, which the composition root hands in), anything undescribed is a crash."""
    if isinstance(exc, OrsMigrateError):
        return exc
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransportError(f"{step.key}: {type(exc).__name__}: {exc}")
    cause = cause_of(exc, step.key)
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
        actions: ActionTable,
        *,
        auto_rollback: bool = True,
        rollback_plan: Callable[[], Plan] | None = None,
        rollback_flags: frozenset[str] = frozenset(),
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        cause_of: CauseOf = no_cause,
        window: ChangeWindow | None = None,
        parallel: Parallelism | None = None,
    ) -> None:
        self.ctx = ctx
        self.plan = plan
        self.actions = actions
        self.auto_rollback = auto_rollback
        self.rollback_plan = rollback_plan
        self.rollback_flags = rollback_flags
        # By default a retry's backoff ends early when the run halts (see `_retry_later`).
        self.sleep = sleep if sleep is not None else ctx.halt.wait
        self.clock = clock
        self.window = window
        self.parallel = parallel or Parallelism()
        self._deadline: float | None = None
        self.automatic_rollback = False
        self.cause_of = cause_of

    @property
    def journal(self) -> Journal:
        return self.ctx.journal

    def _events(self, phase: str) -> list[Event]:
        return [e for e in self.journal.events(self.ctx.run_id) if e.phase == phase]

    def redis_enabled(self) -> bool:
        """True once a state that enables Redis has started in this run."""
        enabling = {s.id for s in self.plan.states if s.enables_redis}
        return any(
            e.kind == EventKind.STATE_STARTED and e.state_id in enabling
            for e in self._events(FORWARD)
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
        started = [e for e in self._events(ROLLBACK) if e.kind == EventKind.ROLLBACK_STARTED]
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
                EventKind.ROLLBACK_STARTED if first else EventKind.ROLLBACK_REQUESTED,
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
            self._run_rollback_states(plan)
        except GateStopped as exc:
            self.journal.set_status(self.ctx.run_id, "paused")
            return Outcome("paused", str(exc), exc.exit_code)
        except RollbackIncomplete as exc:
            message = self.ctx.secrets.mask(self._incomplete_message(plan, exc))
            self.journal.set_status(self.ctx.run_id, "failed", outcome=message)
            return Outcome("failed", message, 1)
        except OrsMigrateError as exc:
            message = self.ctx.secrets.mask(
                f"the rollback itself failed: {exc}; fix the cause and run "
                "`ors-migrate rollback` again"
            )
            self.journal.set_status(self.ctx.run_id, "failed", outcome=message)
            return Outcome("failed", message, 1)
        end = self._end_states(plan)
        self.journal.set_status(self.ctx.run_id, "rolled_back", outcome=reason)
        return Outcome("rolled_back", f"rolled back after: {reason}. {end}", 1)

    def _run_rollback_states(self, plan: Plan) -> None:
        """The rollback's states, each HA pair as far as it can go: an action that fails stops
        the rest of its pair (a primary is never restarted once its backup could not be brought
        back), while every other pair is rolled back to the end. A state that left a pair
        behind does not end, so `rollback` again continues there; the site-wide closing steps
        wait until every pair is done. The failures are raised together at the end."""
        self.ctx.phase = ROLLBACK
        events = self._events(ROLLBACK)
        finished = {e.state_id for e in events if e.kind == EventKind.STATE_ENDED}
        failed: dict[str, tuple[PlannedAction, OrsMigrateError]] = {}
        total = len(plan.states)
        for index, state in enumerate(plan.states, start=1):
            if state.id in finished:
                continue
            runnable = [s for s in state.actions if not self._left_behind(s, failed)]
            if not runnable:
                continue
            self._begin_state(index, total, state, ROLLBACK, events)
            self._gate(state, ROLLBACK, events)
            started = self.clock()
            self._deadline = started + state.timeout_s if state.timeout_s else None
            by_action = events_by_action(events)
            for step in state.actions:
                if self._left_behind(step, failed):
                    continue
                try:
                    self._run_action(state, step, by_action.get(step.key, []))
                except (GateStopped, RollbackRequested):
                    raise  # a stop or a person's answer pauses the rollback; the pair is not broken
                except OrsMigrateError as exc:
                    failed[self._pair_of(step) or "site"] = (step, exc)
            self._deadline = None
            if len(runnable) == len(state.actions) and not any(
                self._pair_of(s) in failed for s in state.actions
            ):
                self.ctx.record(
                    EventKind.STATE_ENDED,
                    state_id=state.id,
                    payload={"seconds": round(self.clock() - started, 3)},
                )
            events = self._events(ROLLBACK)
        if failed:
            raise RollbackIncomplete(failed)

    def _begin_state(
        self, index: int, total: int, state: PlannedState, phase: str, events: list[Event]
    ) -> None:
        """Mark `state` current and show it; journal its start once (a resumed state started
        before keeps its first start)."""
        self.journal.set_status(self.ctx.run_id, "running", current_state=state.id, phase=phase)
        self.ctx.ui.state_started(index, total, state.id, state.title, state.seed_step)
        if not any(e.kind == EventKind.STATE_STARTED and e.state_id == state.id for e in events):
            self.ctx.record(
                EventKind.STATE_STARTED, state_id=state.id, payload={"seed_step": state.seed_step}
            )

    def _pair_of(self, step: PlannedAction) -> str | None:
        """The HA pair an action belongs to (its own, or its application's); None site-wide."""
        if step.target.ha_pair:
            return step.target.ha_pair
        if step.target.app:
            return self.ctx.site.find_app(step.target.app)[1].name
        return None

    def _left_behind(
        self, step: PlannedAction, failed: dict[str, tuple[PlannedAction, OrsMigrateError]]
    ) -> bool:
        """A pair that failed goes no further; a site-wide step waits for every pair."""
        pair = self._pair_of(step)
        return pair in failed if pair is not None else bool(failed)

    def _plan_pairs(self, plan: Plan) -> list[str]:
        pairs = {self._pair_of(a) for s in plan.states for a in s.actions}
        return [p.name for _, p in self.ctx.site.pairs() if p.name in pairs]

    def _end_states(self, plan: Plan) -> str:
        """Each rolled-back pair as it stands now, read live and journaled: the outcome names
        every pair's end state."""
        seen: dict[str, Any] = {}
        lines = []
        for pair in self._plan_pairs(plan):
            try:
                statuses = self.ctx.services.pair_status(pair)
            except OrsMigrateError as exc:
                seen[pair] = {"error": str(exc)}
                lines.append(f"{pair}: could not be read ({exc})")
                continue
            seen[pair] = {n: {"role": s.role, "type": s.type} for n, s in statuses.items()}
            members = ", ".join(
                f"{n} {s.role}" + (f" ({s.type})" if s.type else "") for n, s in statuses.items()
            )
            lines.append(f"{pair}: {members}")
        self.ctx.record(EventKind.ROLLBACK_END_STATE, payload={"pairs": seen})
        return "End state: " + ("; ".join(lines) if lines else "no HA pair was rolled back")

    def _incomplete_message(self, plan: Plan, exc: RollbackIncomplete) -> str:
        """Which application needs a hand, what the rollback tried for its pair, how every pair
        stands, and how to continue."""
        parts = []
        for unit, (step, error) in exc.failed.items():
            who = self._who(step)
            parts.append(
                f"HA pair {unit} needs a hand ({who}): {error}. Tried: {self._tried(plan, unit)}"
                if unit != "site"
                else f"the rollback's closing step {step.key} failed: {error}"
            )
        done = [p for p in self._plan_pairs(plan) if p not in exc.failed]
        others = f" Every other pair was rolled back ({', '.join(done)})." if done else ""
        return (
            "the rollback could not finish: "
            + " ".join(parts)
            + others
            + f" {self._end_states(plan)}. Once it is fixed, run `ors-migrate rollback "
            + f"{self.ctx.run_id}` again: it continues where it stopped."
        )

    def _who(self, step: PlannedAction) -> str:
        """The application the failed action was about: the one its intent named (a restart
        resolves its member at run time), else its target."""
        for event in reversed(self._events(ROLLBACK)):
            if event.action_key == step.key and event.kind == EventKind.ACTION_INTENT:
                if event.payload.get("app"):
                    return str(event.payload["app"])
        return step.target.app or f"HA pair {step.target.ha_pair}"

    def _tried(self, plan: Plan, pair: str) -> str:
        """The rollback's actions for `pair` so far, in order, each done or failed (and how
        many times), from the journal of every rollback attempt."""
        mine = {a.key: a for s in plan.states for a in s.actions if self._pair_of(a) == pair}
        names: dict[str, str] = {}
        outcome: dict[str, str] = {}
        failures: dict[str, int] = {}
        for event in self._events(ROLLBACK):
            key = event.action_key
            if key not in mine:
                continue
            if event.kind == EventKind.ACTION_INTENT:
                app = event.payload.get("app") or ""
                names.setdefault(key, f"{mine[key].action} {app}".strip())
            elif event.kind == EventKind.ACTION_ENDED:
                outcome[key] = "done"
            elif event.kind == EventKind.ACTION_FAILED:
                failures[key] = failures.get(key, 0) + 1
                outcome[key] = f"failed ({failures[key]} attempts)"
        steps = [f"{name}: {outcome.get(key, 'started')}" for key, name in names.items()]
        return "; ".join(steps) if steps else "nothing yet"

    def _run_states(self, plan: Plan, phase: str) -> None:
        self.ctx.phase = phase
        events = self._events(phase)
        finished = {e.state_id for e in events if e.kind == EventKind.STATE_ENDED}
        total = len(plan.states)
        for index, state in enumerate(plan.states, start=1):
            if state.id in finished:
                continue
            self._begin_state(index, total, state, phase, events)
            run = _StateRun(plan, state, phase, events, events_by_action(events))
            units = pause_points(state)
            self._within_window(run, units[0])
            self._gate(state, phase, events)
            started = self.clock()
            self._deadline = started + state.timeout_s if state.timeout_s else None
            if self.parallel.applies_to(state):
                if state.enables_redis:  # checked whole, again: the gate may have taken a while
                    self._within_window(run, units[0])
                self._run_pairs(run)
            else:
                for unit in units:
                    self._within_window(run, unit)
                    for step in unit:
                        self._run_action(state, step, run.by_action.get(step.key, []))
            self._deadline = None
            self.ctx.record(
                EventKind.STATE_ENDED,
                state_id=state.id,
                payload={"seconds": round(self.clock() - started, 3)},
            )
            events = self._events(phase)

    def _run_pairs(self, run: _StateRun) -> None:
        """The state's HA pairs, several at once within `self.parallel`: a pair starts as soon
        as a slot (and one of its cluster's) is free, in plan order. Each pair's actions run in
        order in one worker, each journaled on its own. After a failure or an interrupt the
        run halts: the pairs in flight end their current action (a pair waiting for a quiet
        moment stops waiting and switches nothing) and no new action or pair starts. Only then,
        with every worker ended, does the state stop: the first interrupt is raised, or every
        pair's error together (`ranked_errors`); when the change window closes no new pair
        starts and those in flight finish (each pair is left settled)."""
        pairs = _InFlight(pair_groups(run.state.actions))
        halt = self.ctx.halt
        halt.clear()
        try:
            with interrupts_noted() as interrupts:
                self._drive_pairs(run, pairs, interrupts)
        finally:
            halt.clear()  # the halt ends with the state: a rollback after it runs in full
        if interrupts.count:
            raise KeyboardInterrupt
        if pairs.errors:
            raise ranked_errors(
                pairs.errors, [pair_name(g) for g in pair_groups(run.state.actions)]
            )
        if pairs.closing is not None:
            raise pairs.closing

    def _drive_pairs(self, run: _StateRun, pairs: _InFlight, interrupts: NotedInterrupts) -> None:
        """Start pairs as slots free up and collect those that end, until none is left in
        flight. Interrupts are only noted meanwhile (`interrupts_noted`): leaving before every
        worker has ended would release the run lock and close the transports under them."""
        halt = self.ctx.halt
        with ThreadPoolExecutor(self.parallel.pairs, thread_name_prefix="ha-pair") as pool:
            try:
                while pairs.pending or pairs.running:
                    self._heed_interrupts(pairs, interrupts)
                    if not halt.is_set() and pairs.closing is None:
                        pairs.closing = self._start_pairs(run, pairs, pool)
                    if not pairs.running:
                        if not halt.is_set() and pairs.closing is None and pairs.pending:
                            raise OrsMigrateError(
                                f"{len(pairs.pending)} HA pair(s) of state {run.state.id} could "
                                f"not start with {self.parallel.describe()}"
                            )
                        break
                    done, _ = wait(pairs.running, PAIRS_POLL_S, return_when=FIRST_COMPLETED)
                    for future in done:
                        group = pairs.running.pop(future)
                        error = future.exception()
                        if error is not None:
                            pairs.errors[pair_name(group)] = error
                            halt.set()
                self._heed_interrupts(pairs, interrupts)
            except BaseException:  # the pairs in flight end their current action, then leave
                halt.set()
                raise

    def _heed_interrupts(self, pairs: _InFlight, interrupts: NotedInterrupts) -> None:
        """An interrupt noted since the last look halts the run; say what it still waits for."""
        if interrupts.count == pairs.interrupts_seen:
            return
        first = pairs.interrupts_seen == 0
        pairs.interrupts_seen = interrupts.count
        self.ctx.halt.set()
        if not pairs.running:
            return
        flying = f"{len(pairs.running)} HA pair(s) to finish their current action"
        flying += f" ({', '.join(pair_name(g) for g in pairs.running.values())})"
        message = (
            f"interrupted: waiting for {flying}; nothing new starts and no waiting switchover "
            "is sent. The run stops once they have; continue with --resume."
            if first
            else f"still waiting for {flying}: stopping before they have could leave a command "
            f"running that a resume would send again (to end it at once: kill -KILL "
            f"{os.getpid()}; `run --resume` then reconciles what was in flight)"
        )
        try:
            self.ctx.ui.warn(message)
        except OSError:  # the terminal may be what went away (SIGHUP): keep waiting regardless
            pass

    def _start_pairs(
        self, run: _StateRun, pairs: _InFlight, pool: ThreadPoolExecutor
    ) -> WindowClosing | None:
        """Start every pending pair the limits allow; returns the change window closing when
        it stops the next pair."""
        for group in list(pairs.pending):
            cluster = cluster_of(group)
            if not self.parallel.may_start(cluster, map(cluster_of, pairs.running.values())):
                continue
            if not run.state.enables_redis:  # a state that enables Redis was checked whole
                try:
                    self._within_window(run, group)
                except WindowClosing as exc:
                    return exc
            pairs.pending.remove(group)
            future = pool.submit(self._run_pair, run.state, group, run.by_action)
            pairs.running[future] = group
        return None

    def _run_pair(
        self, state: PlannedState, group: list[PlannedAction], by_action: dict[str, list[Event]]
    ) -> None:
        """One pair's actions in order, until the pair is done or the run halts. Its own
        failure halts the run at once, so the other pairs start no further action. An error no
        action describes (a defect, a journal that cannot be written) is journaled, as far as
        the journal allows, and reported as a crash of the action it stopped."""
        token = WORKING_ON.set(group[0].target.ha_pair)
        step = group[0]
        try:
            for step in group:
                if self.ctx.halt.is_set():
                    return
                self._run_action(state, step, by_action.get(step.key, []))
        except OrsMigrateError:
            self.ctx.halt.set()
            raise
        except Exception as exc:
            self.ctx.halt.set()
            crashed = ActionCrashed(f"{step.key} failed unexpectedly: {type(exc).__name__}: {exc}")
            crashed.__cause__ = exc
            self._journal_crash(state, step, crashed)
            raise crashed from exc
        except BaseException:
            self.ctx.halt.set()
            raise
        finally:
            WORKING_ON.reset(token)

    def _journal_crash(
        self, state: PlannedState, step: PlannedAction, crashed: ActionCrashed
    ) -> None:
        try:
            self.ctx.record(
                EventKind.ACTION_FAILED,
                state_id=state.id,
                action_key=step.key,
                payload=failure(crashed),
            )
        except Exception as exc:  # the journal may be what failed: the outcome still names it
            self.ctx.ui.warn(f"could not journal the failure of {step.key}: {exc}")

    def _unit_seconds(self, window: ChangeWindow, steps: Sequence[PlannedAction]) -> float:
        """The estimate of `steps`: their sum, or with parallel pairs the schedule's wall."""
        groups = pair_groups(steps)
        if self.parallel.serial or len(groups) < 2:
            return sum(window.seconds(step) for step in steps)
        timed = [(cluster_of(g), sum(window.seconds(step) for step in g)) for g in groups]
        return schedule_seconds(timed, self.parallel)

    def _rollback_started_automatically(self) -> bool:
        """The rollback of this run was started by a failure or an earlier decision, not by a
        request now: its own gate (before its switchovers) is not shown."""
        if self.automatic_rollback:
            return True
        started = [e for e in self._events(ROLLBACK) if e.kind in ROLLBACK_EVENTS]
        return bool(started) and bool(started[-1].payload.get("automatic"))

    def _within_window(self, run: _StateRun, unit: list[PlannedAction]) -> None:
        """Pause before `unit` when it changes the world and its estimate ends after the change
        window. A unit already begun is finished: pausing inside it would leave a pair unsettled
        or half-enabled."""
        window = self.window
        if window is None or run.phase != FORWARD:
            return
        plan, state, events = run.plan, run.state, run.events
        ended = {e.action_key for e in events if e.kind == EventKind.ACTION_ENDED}
        begun = {e.action_key for e in events if e.kind == EventKind.ACTION_INTENT}
        pending = [step for step in unit if step.key not in ended]
        if not any(step.changes_world for step in pending):
            return
        if any(step.key in begun for step in pending):
            return
        needed = self._unit_seconds(window, pending)
        left = window.left_s()
        if needed <= left:
            return
        # What is left, from the journal as it is now: pairs in parallel may have ended
        # actions since the state began.
        ended = {e.action_key for e in self._events(run.phase) if e.kind == EventKind.ACTION_ENDED}
        position = plan.states.index(state)
        left_over = [
            [step for step in later_state.actions if step.key not in ended]
            for later_state in plan.states[position:]
        ]
        later = [step for steps in left_over for step in steps]
        remaining = sum(
            self._unit_seconds(window, steps)
            if self.parallel.applies_to(later_state)
            else sum(window.seconds(step) for step in steps)
            for later_state, steps in zip(plan.states[position:], left_over, strict=True)
        )
        payload = {
            "state_id": state.id,
            "window_end": window.end.isoformat(),
            "left_s": round(left, 1),
            "needed_s": round(needed, 1),
            "remaining_actions": len(later),
            "remaining_s": round(remaining, 1),
        }
        self.ctx.record(EventKind.WINDOW_PAUSE, state_id=state.id, payload=payload)
        what = pending[0].preview.description or pending[0].key
        raise WindowClosing(
            f"the change window ends {window.ends()} ({clock(max(left, 0))} left) and the next "
            f"step would take about {clock(needed)} ({what}); paused at a safe point before "
            f"'{state.id}': every pair has one primary and one backup. Left: {len(later)} "
            f"actions in {len(plan.states) - position} states, about {clock(remaining)}. "
            "Continue in the next window with `run --resume`."
        )

    def _gate(self, state: PlannedState, phase: str, events: list[Event]) -> None:
        if not state.gate:
            return
        if phase == ROLLBACK and self._rollback_started_automatically():
            return
        if any(
            e.kind == EventKind.GATE_DECISION
            and e.state_id == state.id
            and GateDecision.from_payload(e.payload).decision == "approve"
            for e in events
        ):
            return
        summary = [state.gate, *gate_summary(self.plan if phase == FORWARD else None, state)]
        view = build_gate_view(self.ctx, self.plan if phase == FORWARD else None, state)
        if self.window is not None:
            view.window = self.window.describe_left()
        decision = self.ctx.ui.gate(state.title, summary, view)
        self.ctx.record(
            EventKind.GATE_DECISION,
            state_id=state.id,
            payload=GateDecision(
                decision,
                self.ctx.operator,
                self.ctx.ui.assume_yes,
                {s.ha_pair: s.active for s in view.sessions},
            ).as_dict(),
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
        if any(e.kind == EventKind.ACTION_ENDED for e in mine):
            return
        self._within_timeout(state, step)
        action = self.actions[step.action]()
        intents = [e.payload for e in mine if e.kind == EventKind.ACTION_INTENT]
        started = time.monotonic()
        note = ""
        try:
            if intents and action.changes_world:
                intent = dict(intents[-1])  # the journal's events are shared: not changed here
                if self._reconcile(state, step, action, intent):
                    self._ended(state, step, {"reconciled": True, **intent}, started)
                    return
                note = "resumed after an interruption"
            else:
                intent = self._attempts(state, step, lambda _: action.prepare(self.ctx, step))
                self.ctx.record(
                    EventKind.ACTION_INTENT, state_id=state.id, action_key=step.key, payload=intent
                )
            observed = self._attempts(
                state, step, lambda attempt: self._apply(step, action, intent, attempt)
            )
        except Halted:
            raise  # nothing was sent: its intent alone tells a resume to check and run it again
        except OrsMigrateError as exc:
            self.ctx.record(
                EventKind.ACTION_FAILED,
                state_id=state.id,
                action_key=step.key,
                payload=failure(exc),
            )
            raise
        self._ended(state, step, observed, started, note)

    def _reconcile(
        self, state: PlannedState, step: PlannedAction, action: Action, intent: dict[str, Any]
    ) -> bool:
        done = bool(self._attempts(state, step, lambda _: action.check(self.ctx, step, intent)))
        self.ctx.record(
            EventKind.ACTION_RECONCILED,
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
                exc = as_run_error(raw, step, self.cause_of)
                if not is_transient(exc) or attempt >= state.retry_attempts:
                    if exc is raw:
                        raise
                    raise exc from raw
                self._retry_later(state, step, exc, attempt)

    def _retry_later(
        self, state: PlannedState, step: PlannedAction, exc: OrsMigrateError, attempt: int
    ) -> None:
        """Wait the backoff before the next attempt; none once the run is halting (its sleep
        ends then too), so a halted pair ends its current action without new commands."""
        delay = backoff_delay(state, attempt)
        self._within_timeout(state, step, delay)
        self._unless_halted(step, exc)
        message = self.ctx.secrets.mask(str(exc))
        self.ctx.ui.warn(f"{step.key}: transient failure ({message}); retry in {delay:g} s")
        self.ctx.record(
            EventKind.ACTION_RETRY,
            state_id=state.id,
            action_key=step.key,
            payload={"error": message, "attempt": attempt, "delay_s": delay},
        )
        self.sleep(delay)
        self._unless_halted(step, exc)

    def _unless_halted(self, step: PlannedAction, exc: OrsMigrateError) -> None:
        if self.ctx.halt.is_set():
            message = self.ctx.secrets.mask(str(exc))
            raise Halted(f"{step.key}: not retried after {message}: the run is stopping") from exc

    def _within_timeout(self, state: PlannedState, step: PlannedAction, wait_s: float = 0) -> None:
        """Stop the state when its `timeout_s` has passed (or would, after waiting `wait_s`),
        before `step` starts or retries. The check is cooperative: an action under way runs
        to its own end or timeout first."""
        if self._deadline is None or self.clock() + wait_s < self._deadline:
            return
        assert state.timeout_s is not None
        elapsed = state.timeout_s - (self._deadline - self.clock())
        self.ctx.record(
            EventKind.STATE_TIMED_OUT,
            state_id=state.id,
            action_key=step.key,
            payload={"timeout_s": state.timeout_s, "elapsed_s": round(elapsed, 3)},
        )
        raise StateTimedOut(
            f"state {state.id} ran past its timeout_s of {state.timeout_s:g} s "
            f"({elapsed:.1f} s spent; stopped before {step.key})"
        )

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
            EventKind.ACTION_ENDED,
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


def events_by_action(events: list[Event]) -> dict[str, list[Event]]:
    """The events of each action, in order: a resumed state looks up each of its actions
    without scanning the whole journal for each (10,000 events, thousands of actions)."""
    found: dict[str, list[Event]] = {}
    for event in events:
        if event.action_key is not None:
            found.setdefault(event.action_key, []).append(event)
    return found


def pause_points(state: PlannedState) -> list[list[PlannedAction]]:
    """The state's actions in the groups a change window may pause between: a state that
    enables Redis is one group (no pair is left half-enabled), a state per HA pair pauses only
    between pairs (each pair settled), any other state between its actions."""
    if state.enables_redis:
        return [list(state.actions)]
    if state.scope != "ha_pair":
        return [[step] for step in state.actions] or [[]]
    return pair_groups(state.actions) or [[]]


@dataclass(frozen=True)
class _StateRun:
    """One state being run: its plan and phase, and the journal's events as the state began
    (all of them, and by action), read once for the state."""

    plan: Plan
    state: PlannedState
    phase: str
    events: list[Event]
    by_action: dict[str, list[Event]]


@dataclass
class _InFlight:
    """The HA pairs of one state run in parallel: not started yet, running, the error each
    ended pair raised, the change window closing before the next pair, and how many interrupts
    the main thread has acted on."""

    pending: list[list[PlannedAction]]
    running: dict[Future[None], list[PlannedAction]] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    closing: WindowClosing | None = None
    interrupts_seen: int = 0


def pair_name(group: Sequence[PlannedAction]) -> str:
    return str(group[0].target.ha_pair)


def _rank(exc: BaseException) -> int:
    """How much an error of a pair weighs on the run's path: a failure (the procedure could
    not be followed) decides over a request to roll back, and that over a stop or pause."""
    if isinstance(exc, GateStopped):
        return 2
    if isinstance(exc, RollbackRequested):
        return 1
    return 0


_RANKED_AS = ("failed", "asked for a rollback", "stopped")


def ranked_errors(errors: dict[str, BaseException], order: Sequence[str]) -> BaseException:
    """The errors of several HA pairs of one state as one, of the kind of the weightiest (a
    failure takes the failure path even when another pair paused first), naming every pair,
    the weightiest first, then in plan order. One error stays as it is."""
    ranked = sorted(errors.items(), key=lambda item: (_rank(item[1]), order.index(item[0])))
    described = [(pair, e) for pair, e in ranked if isinstance(e, OrsMigrateError)]
    undescribed = [e for _, e in ranked if not isinstance(e, OrsMigrateError)]
    if undescribed:
        return undescribed[0]  # neither an action's error nor a crash: raised as serial runs do
    top = described[0][1]
    if len(described) == 1:
        return top
    message = "; ".join(f"HA pair {pair} {_RANKED_AS[_rank(e)]}: {e}" for pair, e in described)
    combined: OrsMigrateError
    if _rank(top) == 0:
        combined = PairsFailed(message, dict(described))
    elif _rank(top) == 1:
        combined = RollbackRequested(message)
    else:
        combined = GateStopped(message)
    combined.exit_code = top.exit_code  # a pause for want of a terminal keeps its exit 2
    return combined


class _RollbackRequested(RollbackRequested):
    """The operator chose rollback at a gate."""

"""How long a plan will take, and the change window it must fit in.

Each action's duration comes, in this order, from the site file (`durations:` for restarts,
switchovers and upgrades), from the latest succeeded run of the same site in the state
directory (the median of that action's journaled durations), or from our own defaults, which
are guesses labelled as ours. A first switchover that waits for a quiet moment (`wait_for_quiet`
under a switchover policy) adds the longest the policy lets it wait, labelled with where that
figure comes from; a measured switchover counts without the wait it journaled. A state adds what
the earlier run spent in it outside its actions (gate views, settling); the run adds its own
start-up. Pure: no network, no clock but the one given."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ors_migrate.errors import InputError
from ors_migrate.events import EventKind
from ors_migrate.journal import Event, Journal, RunRecord
from ors_migrate.parallel import Parallelism, cluster_of, pair_groups, schedule_seconds, waves
from ors_migrate.site import Site
from ors_migrate.step import FORWARD, Plan, PlannedAction, PlannedState, SwitchoverPolicy

# Our own guesses for a production estate when neither the site nor an earlier run says more.
# They are not from the vendor documents; `durations:` in the site file overrides the first three.
OUR_DEFAULT_SECONDS: dict[str, float] = {
    "service.restart": 90.0,
    "service.switchover": 30.0,
    "ors.upgrade": 300.0,
    "service.verify_pair": 5.0,
    "options.set": 3.0,
    "options.restore_original": 3.0,
}
OUR_FALLBACK_SECONDS = 5.0
SITE_KEYS = {
    "restart_s": "service.restart",
    "switchover_s": "service.switchover",
    "upgrade_s": "ors.upgrade",
}
SOURCE_SITE = "site file"
SOURCE_OURS = "ours (no site value, no earlier run)"
QUIET_FROM_SITE = "quiet_switchover.window_s in the site file (up to that long per pair)"
QUIET_OURS = (
    "quiet_switchover.window_s: our default {seconds:g} s, not from the documents "
    "(up to that long per pair; set it in the site file)"
)
QUIET_FROM_RUN = "--switchover-wait of the run (up to that long per pair)"


@dataclass(frozen=True)
class QuietWait:
    """The longest a first switchover may wait for a quiet moment, and where that figure comes
    from. It is the policy's bound, not a measurement: a quiet moment may come sooner."""

    seconds: float
    source: str

    @staticmethod
    def applies_to(step: PlannedAction) -> bool:
        return step.action == "service.switchover" and bool(step.args.get("wait_for_quiet"))


def quiet_wait_of(site: Site, policy: SwitchoverPolicy | None) -> QuietWait | None:
    """The wait the switchover policy in force adds: the site's `quiet_switchover` (its own
    window_s or our default), or the run's `--switchover-below`/`--switchover-wait`. None
    without a policy, or without `services.sessions` (then nothing waits)."""
    if policy is None or not site.services.sessions:
        return None
    quiet = site.quiet_switchover
    if quiet is not None and policy.wait_s == quiet.window_s and policy.policy == quiet.policy:
        if "window_s" in quiet.model_fields_set:
            return QuietWait(policy.wait_s, QUIET_FROM_SITE)
        return QuietWait(policy.wait_s, QUIET_OURS.format(seconds=policy.wait_s))
    return QuietWait(policy.wait_s, QUIET_FROM_RUN)


@dataclass(frozen=True)
class Measured:
    """Durations seen in an earlier run of the same site."""

    run_id: str
    actions: dict[str, float]  # action name -> median seconds
    state_overhead: dict[str, float]  # state id -> seconds outside its actions
    startup_s: float  # run created -> first state started


@dataclass(frozen=True)
class Durations:
    site: dict[str, float]
    measured: Measured | None = None
    windows: dict[str, float] = field(default_factory=dict)  # action -> the site's window
    quiet: QuietWait | None = None
    _timed: dict[tuple[str, Any, bool], tuple[float, tuple[str, ...]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def of(self, action: str, args: dict[str, Any] | None = None) -> tuple[float, str]:
        """Seconds for one action and where that figure comes from."""
        if action in self.site:
            return self.site[action], SOURCE_SITE
        if self.measured and action in self.measured.actions:
            return self.measured.actions[action], f"run {self.measured.run_id}"
        window = (args or {}).get("window_s", self.windows.get(action))
        if isinstance(window, int | float):
            return float(window), "the action's window"
        return OUR_DEFAULT_SECONDS.get(action, OUR_FALLBACK_SECONDS), SOURCE_OURS

    def seconds(self, step: PlannedAction) -> float:
        """The action's own seconds, plus the quiet wait it may spend before a switchover."""
        return self.timed(step)[0]

    def sources(self, step: PlannedAction) -> list[str]:
        return list(self.timed(step)[1])

    def timed(self, step: PlannedAction) -> tuple[float, tuple[str, ...]]:
        """`seconds` and `sources` of a step, worked out once for all steps alike (the same
        action with the same window and quiet wait): 500 HA pairs make 10,000 steps."""
        window = step.args.get("window_s")
        key = (step.action, window, QuietWait.applies_to(step))
        try:
            return self._timed[key]
        except KeyError:
            pass
        except TypeError:  # a window that cannot be a key
            return self._time(step)
        found = self._timed[key] = self._time(step)
        return found

    def _time(self, step: PlannedAction) -> tuple[float, tuple[str, ...]]:
        own, source = self.of(step.action, step.args)
        quiet = self._quiet_before(step)
        return (own + quiet.seconds, (source, quiet.source)) if quiet else (own, (source,))

    def _quiet_before(self, step: PlannedAction) -> QuietWait | None:
        return self.quiet if QuietWait.applies_to(step) else None


@dataclass(frozen=True)
class StateEstimate:
    state_id: str
    seconds: float
    sources: list[str] = field(default_factory=list)
    waves: list[list[str]] = field(default_factory=list)  # HA pairs run together, in order

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.state_id,
            "seconds": round(self.seconds, 1),
            "sources": self.sources,
        }
        if self.waves:
            shown["waves"] = self.waves
        return shown


@dataclass(frozen=True)
class Estimate:
    states: list[StateEstimate]
    startup_s: float
    parallel: Parallelism = Parallelism()

    @property
    def total_s(self) -> float:
        return self.startup_s + sum(s.seconds for s in self.states)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_s": round(self.total_s, 1),
            "startup_s": round(self.startup_s, 1),
            "parallel": self.parallel.as_dict(),
            "states": [s.as_dict() for s in self.states],
        }


def site_durations(site: Site) -> dict[str, float]:
    declared = site.durations.model_dump(exclude_none=True) if site.durations else {}
    return {SITE_KEYS[key]: float(value) for key, value in declared.items()}


def site_windows(site: Site) -> dict[str, float]:
    """Actions that last as long as a window the site sets."""
    return {"redis.monitor": site.redis.monitor.window_s}


def durations_of(
    site: Site, measured: Measured | None, policy: SwitchoverPolicy | None = None
) -> Durations:
    """`policy`: the switchover policy in force, whose quiet wait the estimate adds."""
    return Durations(
        site_durations(site), measured, site_windows(site), quiet_wait_of(site, policy)
    )


def estimate_plan(
    plan: Plan, durations: Durations, parallel: Parallelism | None = None
) -> Estimate:
    """Each state's actions one after another; with `parallel`, a state per HA pair as its
    pairs overlap (the engine's schedule), and the waves it runs them in."""
    parallel = parallel or Parallelism()
    states = []
    for state in plan.states:
        sources = {source for step in state.actions for source in durations.timed(step)[1]}
        seconds, shown = _state_seconds(state, durations, parallel)
        if durations.measured:
            seconds += durations.measured.state_overhead.get(state.id, 0.0)
        states.append(StateEstimate(state.id, seconds, sorted(sources), shown))
    startup = durations.measured.startup_s if durations.measured else 0.0
    return Estimate(states, startup, parallel)


def _state_seconds(
    state: PlannedState, durations: Durations, parallel: Parallelism
) -> tuple[float, list[list[str]]]:
    if not parallel.applies_to(state):
        return sum(durations.seconds(step) for step in state.actions), []
    groups = pair_groups(state.actions)
    timed = [(cluster_of(g), sum(durations.seconds(step) for step in g)) for g in groups]
    shown = [[str(g[0].target.ha_pair) for g in wave] for wave in waves(groups, parallel)]
    return schedule_seconds(timed, parallel), shown


def _ts(event: Event) -> dt.datetime:
    return dt.datetime.fromisoformat(event.ts)


def _actions_by_key(run: RunRecord) -> dict[str, str]:
    plan = json.loads(run.plan_json)
    return {a["key"]: a["action"] for s in plan.get("states", []) for a in s.get("actions", [])}


def measure(run: RunRecord, events: Iterable[Event]) -> Measured:
    """Action medians, per-state overhead and start-up of one finished run."""
    names = _actions_by_key(run)
    intents: dict[str, dt.datetime] = {}
    per_action: dict[str, list[float]] = {}
    per_state_actions: dict[str, float] = {}
    state_started: dict[str, dt.datetime] = {}
    state_wall: dict[str, float] = {}
    first_state: dt.datetime | None = None
    for event in events:
        if event.phase != FORWARD:
            continue
        if event.kind == EventKind.STATE_STARTED and event.state_id:
            state_started.setdefault(event.state_id, _ts(event))
            first_state = first_state or _ts(event)
        elif event.kind == EventKind.GATE_DECISION and event.state_id in state_started:
            # The time a person took to answer is not the state's: count from the answer.
            state_started[event.state_id] = _ts(event)
        elif event.kind == EventKind.STATE_ENDED and event.state_id in state_started:
            state_wall[event.state_id] = (
                _ts(event) - state_started[event.state_id]
            ).total_seconds()
        elif event.kind == EventKind.ACTION_INTENT and event.action_key:
            intents.setdefault(event.action_key, _ts(event))
        elif event.kind == EventKind.ACTION_ENDED and event.action_key in intents:
            seconds = (_ts(event) - intents[event.action_key]).total_seconds()
            name = names.get(event.action_key)
            if name:
                own = max(0.0, seconds - _quiet_waited(event))
                per_action.setdefault(name, []).append(own)
            if event.state_id:
                per_state_actions[event.state_id] = (
                    per_state_actions.get(event.state_id, 0.0) + seconds
                )
    overhead = {
        sid: max(0.0, wall - per_state_actions.get(sid, 0.0)) for sid, wall in state_wall.items()
    }
    created = dt.datetime.fromisoformat(run.created_at)
    startup = (first_state - created).total_seconds() if first_state else 0.0
    medians = {name: statistics.median(values) for name, values in per_action.items()}
    return Measured(run.run_id, medians, overhead, max(0.0, startup))


def _quiet_waited(event: Event) -> float:
    """The seconds a switchover spent waiting for a quiet moment: the estimate adds the policy's
    wait on its own, so the switchover's measured duration leaves it out."""
    observed = event.payload.get("observed")
    wait = observed.get("quiet_wait") if isinstance(observed, dict) else None
    waited = wait.get("waited_s") if isinstance(wait, dict) else None
    return float(waited) if isinstance(waited, int | float) else 0.0


def measured_for(journal: Journal, site_name: str) -> Measured | None:
    """Durations of the latest succeeded run of this site, if there is one."""
    finished = [r for r in journal.runs(site_name) if r.status == "succeeded"]
    if not finished:
        return None
    latest = finished[-1]
    return measure(latest, journal.events(latest.run_id))


def parse_window_end(text: str, now: dt.datetime) -> dt.datetime:
    """`--window-end`: a time of day (HH:MM, the next one after now, local time) or an ISO
    timestamp (local time when it names no offset). Returns an aware datetime."""
    value = text.strip()
    local = now.astimezone()
    try:
        if len(value) <= 5 and ":" in value:
            hour, minute = (int(part) for part in value.split(":"))
            end = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
            return end if end > local else end + dt.timedelta(days=1)
        end = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"--window-end '{text}': give a time of day (HH:MM) or an ISO timestamp "
            "(2026-12-01T05:00 or 2026-12-01T05:00+01:00)",
            rule="run.window-end",
        ) from None
    if end.tzinfo is None:
        end = end.replace(tzinfo=local.tzinfo)
    if end <= now:
        raise InputError(
            f"--window-end '{text}' is already past ({end.isoformat(timespec='minutes')})",
            rule="run.window-end",
        )
    return end

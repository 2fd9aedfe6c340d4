"""The composition root of a run: site + playbook -> plan -> journal, lock and engine.

Here, and only here, the concrete parts meet: the table of actions (built-ins and entry
points), the transports, service control and option stores of a run's context.

Starting, resuming and rolling back all go through here: the site's lock is taken first, a
resume is refused when the plan or the live topology no longer match the journal, and a run
interrupted by a signal is recorded as such.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from ors_migrate import playbook as playbooks
from ors_migrate.actions.client_errors import as_cause
from ors_migrate.actions.option_backends import open_store
from ors_migrate.actions.registry import build_action_table
from ors_migrate.actions.service_control import (
    ServiceControl,
    check_live_topology,
    live_primaries,
    settled_pair_status,
)
from ors_migrate.actions.transports import TransportPool
from ors_migrate.context import LiveRunContext
from ors_migrate.engine import Engine, Outcome
from ors_migrate.errors import (
    EXIT_INTERRUPTED,
    GateStopped,
    InputError,
    ResumeRefused,
    SiteError,
    TerminalRequired,
    VerificationFailed,
)
from ors_migrate.estate_lock import estate_claims
from ors_migrate.estimate import Durations, durations_of, estimate_plan, measured_for
from ors_migrate.events import ROLLBACK_EVENTS, EventKind
from ors_migrate.gate import session_counts
from ors_migrate.journal import Journal, RunLock, RunRecord, operator_name
from ors_migrate.options import PERSISTENCE, TYPE
from ors_migrate.parallel import Parallelism
from ors_migrate.plan import build_plan, plan_hash
from ors_migrate.playbook import LoadedPlaybook
from ors_migrate.secrets import Secrets
from ors_migrate.site import App, LoadedSite, Site, load_site
from ors_migrate.step import (
    ROLLBACK,
    ActionTable,
    ChangeWindow,
    OptionValues,
    Plan,
    RunContext,
    RunUi,
    SwitchoverPolicy,
    Transports,
    clock,
)
from ors_migrate.stored_plan import encode_plan, plan_inputs, stored_plan
from ors_migrate.undo import changed_apps, restricted, summarize

DEFAULT_PLAYBOOK = "migrate-to-redis"
UNFINISHED = ("running", "paused", "interrupted", "failed")
ABANDONABLE = ("paused", "interrupted", "failed")
STATE_FIELDS = ("title", "seed_step", "scope", "gate", "enables_redis", "on_failure", "retry")
TARGET_FIELDS = ("cluster", "ha_pair", "app", "host", "role")


TransportFactory = Callable[[Site, Secrets], Transports]


@cache
def action_table() -> ActionTable:
    """The built-in action families and every `ors_migrate.actions` entry point, once."""
    return build_action_table()


def load_playbook(name_or_path: str, actions: ActionTable | None = None) -> LoadedPlaybook:
    """A playbook checked against the action table (the process's own unless given)."""
    return playbooks.load_playbook(name_or_path, action_table() if actions is None else actions)


def build_context(
    loaded: LoadedSite,
    run_id: str,
    journal: Journal,
    ui: RunUi,
    *,
    secrets: Secrets | None = None,
    operator: str | None = None,
    switchover_policy: SwitchoverPolicy | None = None,
    transports: TransportFactory = TransportPool,
) -> RunContext:
    """The context of one run: one transport per host (`transports`: SSH or local by the
    site, unless a test hands in its own), service control over them and the site's option
    backend, handed to the engine and its actions."""
    secrets = secrets or Secrets()
    pool = transports(loaded.site, secrets)
    return LiveRunContext(
        loaded,
        run_id,
        journal,
        ui,
        secrets,
        operator or operator_name(),
        pool=pool,
        services=ServiceControl(loaded.site, pool),
        open_store=open_store,
        switchover_policy=switchover_policy,
    )


def local_option_reader(loaded: LoadedSite) -> Any:
    """Current option values for the plan, read only where no network is needed: ini files on
    hosts with the local transport. Elsewhere the plan shows the old values as unknown."""
    from ors_migrate.actions.options_file import read_options

    site = loaded.site
    backend = site.options_backend

    def read(app: App) -> OptionValues | None:
        if backend.kind != "ini-file" or site.hosts[app.host].transport != "local":
            return None
        path = site.options_path(app.name)
        try:
            return read_options(Path(path).read_text(encoding="utf-8"), path)
        except (OSError, UnicodeDecodeError, InputError):
            return None

    return read


def make_plan(
    loaded: LoadedSite,
    playbook: LoadedPlaybook,
    *,
    read_current: bool = True,
    flags: frozenset[str] = frozenset(),
) -> Plan:
    reader = local_option_reader(loaded) if read_current else None
    return build_plan(loaded, playbook, current_options=reader, flags=flags)


def forward_plan_inputs(loaded: LoadedSite, playbook: LoadedPlaybook) -> str | None:
    """What a run's plan (`make_plan` as a run makes it) is made from, as a digest."""
    return plan_inputs(loaded, playbook, read_current=True, flags=frozenset())


def plan_for_resume(
    journal: Journal, run: RunRecord, loaded: LoadedSite, playbook: LoadedPlaybook
) -> Plan:
    """The plan a resume acts on: the one the run stored, when the site file, the playbook and
    the code are those it was made from (planning again would give it back, at a cost that
    grows with the estate); otherwise planned again from the files as they are now, for the
    caller to compare with the run's plan hash."""
    recorded = journal.plan_inputs(run.run_id)
    if recorded is not None and recorded[0] == forward_plan_inputs(loaded, playbook):
        stored = stored_plan(run.plan_json, recorded[1], playbook)
        if stored is not None and stored.plan_hash == run.plan_hash:
            return stored
    return make_plan(loaded, playbook)


# What changed in a plan
def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _option_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    def values(action: dict[str, Any]) -> dict[tuple[str, str], Any]:
        return {(c["section"], c["option"]): c["new"] for c in action["option_changes"]}

    before, after = values(old), values(new)
    found = []
    for section, option in sorted(after.keys() - before.keys()):
        found.append(f"now also sets [{section}] {option}={after[(section, option)]}")
    for section, option in sorted(before.keys() - after.keys()):
        found.append(f"no longer sets [{section}] {option}")
    for key in sorted(before.keys() & after.keys()):
        if before[key] != after[key]:
            found.append(f"sets [{key[0]}] {key[1]}={after[key]} instead of {before[key]}")
    return found


def _action_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How one planned action differs, in the operator's terms."""
    found = []
    if old["action"] != new["action"]:
        found.append(f"does {new['action']} instead of {old['action']}")
    before = " ".join(str(old.get(k)) for k in TARGET_FIELDS)
    after = " ".join(str(new.get(k)) for k in TARGET_FIELDS)
    if before != after:
        found.append(f"targets {new.get('app') or new.get('ha_pair')} on {new.get('host')}")
    for name in sorted(set(old["args"]) | set(new["args"])):
        if old["args"].get(name) != new["args"].get(name):
            found.append(
                f"argument {name} is {_short(new['args'].get(name))} instead of "
                f"{_short(old['args'].get(name))}"
            )
    found += _option_changes(old, new)
    if old["commands"] != new["commands"]:
        pairs = [(o, n) for o, n in zip(old["commands"], new["commands"], strict=False) if o != n]
        if pairs:
            was, now = pairs[0]
            found.append(
                f"runs other commands: `{_short(now, 120)}` instead of `{_short(was, 120)}`"
            )
        else:
            found.append("runs other commands")
    if not found and old != new:
        found.append("is described differently")
    return found


def _without_old_values(action: dict[str, Any]) -> dict[str, Any]:
    """A stored action as the plan hash sees it: option values before the run left out."""
    changes = [
        {k: v for k, v in c.items() if k not in ("old", "old_known")}
        for c in action["option_changes"]
    ]
    return {**action, "option_changes": changes}


def _state_changes(sid: str, old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]]:
    """(what changed, where) pairs for one state present in both plans."""
    found = [
        (f"state {sid}: {name} is {_short(new.get(name))} instead of {_short(old.get(name))}", "")
        for name in STATE_FIELDS
        if old.get(name) != new.get(name)
    ]
    old_actions = {a["key"]: _without_old_values(a) for a in old["actions"]}
    new_actions = {a["key"]: a for a in new["actions"]}
    for key in old_actions.keys() - new_actions.keys():
        found.append((f"state {sid} no longer has action {key}", ""))
    for key in new_actions.keys() - old_actions.keys():
        found.append((f"state {sid} has a new action {key}", ""))
    for key in [k for k in new_actions if k in old_actions]:
        where = key.split("/")[1] if key.count("/") >= 2 else key
        for change in _action_changes(old_actions[key], new_actions[key]):
            found.append((f"{sid}: {change}", where))
    return found


def _grouped(found: list[tuple[str, str]]) -> list[str]:
    """One line per kind of change, naming where it happens: the same option added to every
    application reads as one change, not one per application."""
    places: dict[str, list[str]] = {}
    for what, where in found:
        places.setdefault(what, [])
        if where and where not in places[what]:
            places[what].append(where)
    lines = []
    for what, targets in places.items():
        if len(targets) > 3:
            lines.append(f"{what} (on {', '.join(targets[:3])} and {len(targets) - 3} more)")
        elif targets:
            lines.append(f"{what} (on {', '.join(targets)})")
        else:
            lines.append(what)
    return lines


def describe_plan_change(old_json: str, new: Plan) -> str:
    """What differs between the plan a run started with and the plan the files give now."""
    old = json.loads(old_json)
    old_states = {s["id"]: s for s in old["states"]}
    new_states = {s.id: s.as_dict(with_old=False) for s in new.states}
    found: list[tuple[str, str]] = []
    if old.get("rollback_playbook") != new.rollback_playbook:
        found.append((f"the rollback playbook is {new.rollback_playbook}", ""))
    found += [(f"state {sid} was removed", "") for sid in old_states if sid not in new_states]
    found += [(f"state {sid} was added", "") for sid in new_states if sid not in old_states]
    for sid in [s for s in new_states if s in old_states]:
        found += _state_changes(sid, old_states[sid], new_states[sid])
    lines = _grouped(found)
    if not lines:
        return "the plan hash differs"
    more = f" (and {len(lines) - 8} more)" if len(lines) > 8 else ""
    return "; ".join(lines[:8]) + more


def changed_files(run: RunRecord, loaded: LoadedSite, playbook: LoadedPlaybook) -> str:
    files = []
    if run.site_digest != loaded.digest:
        files.append(f"the site file {loaded.path}")
    if run.playbook_digest != playbook.digest:
        files.append(f"the playbook {playbook.path}")
    if not files:
        return "the plan"
    return " and ".join(files)


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM (a service manager, `kill`) and SIGHUP (a lost terminal or SSH session) stop the
    run the way Ctrl-C does: recorded as interrupted, resumable."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def refuse_rule_errors(
    loaded: LoadedSite, plan: Plan, playbook: LoadedPlaybook, overridden: frozenset[str]
) -> list[str]:
    """A new run starts only from a site and playbook that break no documented rule, unless the
    operator overrides each broken rule by its id. Returns the rule ids actually overridden."""
    from ors_migrate.rules import check, errors_in, render_findings

    errors = errors_in(check(loaded, plan, playbook))
    blocking = [f for f in errors if f.rule not in overridden]
    if blocking:
        raise SiteError(
            "the site and playbook break documented rules, so nothing was run (override a rule "
            "only deliberately, with --override-rule ID):\n"
            + render_findings(loaded.path, blocking),
            rule="rules",
        )
    return sorted({f.rule for f in errors})


def durations_for(loaded: LoadedSite, state_dir: Path) -> Durations:
    """For `plan`: the site's durations and those of its latest succeeded run, reading the state
    directory only when it holds a journal (planning creates nothing)."""
    journal_file = state_dir / "journal.sqlite3"
    policy = site_switchover_policy(loaded.site)
    if not journal_file.is_file():
        return durations_of(loaded.site, None, policy)
    journal = Journal(state_dir, create=False)
    try:
        return durations_of(loaded.site, measured_for(journal, loaded.site.name), policy)
    finally:
        journal.close()


class Runner:
    def __init__(
        self,
        state_dir: Path,
        ui: RunUi,
        *,
        switchover_policy: SwitchoverPolicy | None = None,
        transports: TransportFactory = TransportPool,
        create: bool = True,
        window_end: dt.datetime | None = None,
        parallel: Parallelism | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.transports = transports
        self.ui = ui
        self.journal = Journal(state_dir, create=create)
        self.switchover_policy = switchover_policy
        self.window_end = window_end
        self.parallel = parallel

    def durations(self, loaded: LoadedSite, policy: SwitchoverPolicy | None) -> Durations:
        """The site's declared durations, else those of its latest succeeded run here, with
        the quiet wait of the run's switchover `policy`."""
        return durations_of(loaded.site, measured_for(self.journal, loaded.site.name), policy)

    def _window(
        self, durations: Durations | None, loaded: LoadedSite, policy: SwitchoverPolicy | None
    ) -> ChangeWindow | None:
        """The change window, timed by `durations` (read only when there is a window), with the
        quiet wait of the switchover `policy`."""
        if self.window_end is None:
            return None
        timed = durations or self.durations(loaded, policy)
        return ChangeWindow(self.window_end, timed.seconds)

    def close(self) -> None:
        self.journal.close()

    # Where runs stand
    def display_status(self, run: RunRecord) -> str:
        """A run marked running whose holder is gone was interrupted (killed, lost power)."""
        if run.status != "running":
            return run.status
        holder = RunLock(self.state_dir, run.site_name).live_holder()
        if holder is not None and holder.get("run_id") == run.run_id:
            return "running"
        return "interrupted"

    def run_summary(self, run: RunRecord) -> dict[str, Any]:
        return {**run.summary(), "status": self.display_status(run)}

    def find_run(self, run_id: str | None, site_name: str | None = None) -> RunRecord:
        if run_id:
            run = self.journal.get_run(run_id)
            if run is None:
                raise InputError(f"no run {run_id} in {self.state_dir}", rule="run-exists")
            return run
        candidates = self.journal.runs(site_name)
        if not candidates:
            where = f" for site {site_name}" if site_name else ""
            raise InputError(f"no runs{where} in {self.state_dir}", rule="run-exists")
        return candidates[-1]

    # Composition
    def _context(self, loaded: LoadedSite, run_id: str) -> RunContext:
        policy = (
            self.switchover_policy
            or self._journaled_policy(run_id)
            or site_switchover_policy(loaded.site)
        )
        return build_context(
            loaded,
            run_id,
            self.journal,
            self.ui,
            switchover_policy=policy,
            transports=self.transports,
        )

    def _journaled_policy(self, run_id: str) -> SwitchoverPolicy | None:
        """A resumed run keeps the switchover policy it started with."""
        if not run_id:
            return None
        for event in self.journal.events(run_id):
            if event.kind == EventKind.SWITCHOVER_POLICY:
                return SwitchoverPolicy.from_dict(event.payload)
        return None

    def _parallelism(self, run_id: str) -> Parallelism:
        """A resume keeps the parallelism the run last started or resumed with, unless it is
        given again (a run journaled before that was recorded: the one its estimate names)."""
        if self.parallel is not None:
            return self.parallel
        latest = Parallelism()
        for event in self.journal.events(run_id):
            if event.kind == EventKind.PARALLELISM or (
                event.kind == EventKind.ESTIMATE and "parallel" in event.payload
            ):
                latest = Parallelism.from_dict(event.payload.get("parallel", event.payload))
        return latest

    def _rollback_plan_factory(
        self, loaded: LoadedSite, name: str | None, flags: frozenset[str], run_id: str
    ) -> Callable[[], Plan] | None:
        """The rollback plan, built when the rollback starts: cut down to the applications
        whose options the run changed by then (and their HA pairs), so nothing else restarts."""
        if name is None:
            return None
        playbook = load_playbook(name)

        def build() -> Plan:
            full = make_plan(loaded, playbook, read_current=False, flags=flags)
            run = self.journal.get_run(run_id)
            if run is None:
                return full
            apps = changed_apps(self.journal, run)
            pairs = {pair.name for _, pair, app in loaded.site.apps() if app.name in apps}
            plan = restricted(full, apps, pairs)
            plan.plan_hash = plan_hash(plan)
            return plan

        return build

    def _rollback_events(self, run_id: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.journal.events(run_id) if e.kind in ROLLBACK_EVENTS]

    def _rollback_flags(self, run_id: str) -> frozenset[str]:
        """Options of every rollback requested so far (`to_start`), so that resuming a rollback
        finishes all that was asked of it."""
        return frozenset(f for p in self._rollback_events(run_id) for f in p.get("flags", []))

    def _execute(
        self, engine: Engine, lock: RunLock, rollback_reason: str | None = None
    ) -> Outcome:
        try:
            with _signals_as_interrupt():
                if rollback_reason is not None:
                    return engine.run_rollback(reason=rollback_reason)
                return engine.run()
        except KeyboardInterrupt:
            self.journal.set_status(engine.ctx.run_id, "interrupted")
            return Outcome("interrupted", "interrupted; continue with --resume", EXIT_INTERRUPTED)
        finally:
            engine.ctx.close()
            lock.release()

    # Starting and resuming
    def start(
        self,
        site_path: str,
        playbook_name: str | None,
        *,
        resume: bool,
        run_id: str | None,
        auto_rollback: bool,
        override_rules: frozenset[str] = frozenset(),
    ) -> tuple[str, Outcome]:
        """A new run, or with `resume` the site's latest (or the named) unfinished run. Without
        a playbook name a resume uses the playbook its run started with."""
        loaded = load_site(site_path)
        lock = RunLock(self.state_dir, loaded.site.name, estate_claims(loaded.site))
        lock.acquire(run_id)
        try:
            if resume:
                engine = self._resumed(loaded, playbook_name, run_id, auto_rollback)
            else:
                engine = self._new(
                    loaded, playbook_name or DEFAULT_PLAYBOOK, auto_rollback, override_rules
                )
            lock.set_run(engine.ctx.run_id)
        except BaseException:
            lock.release()
            raise
        return engine.ctx.run_id, self._execute(engine, lock)

    def _new(
        self,
        loaded: LoadedSite,
        playbook_name: str,
        auto_rollback: bool,
        override_rules: frozenset[str] = frozenset(),
    ) -> Engine:
        playbook = load_playbook(playbook_name)
        plan = make_plan(loaded, playbook)
        overridden = refuse_rule_errors(loaded, plan, playbook, override_rules)
        self._refuse_unfinished(loaded.site.name)
        ctx = self._context(loaded, "")
        try:
            resolve_secrets(ctx, plan)
            primaries = live_primaries(ctx)
            refuse_end_state(ctx, plan)
            plan_json, layout = encode_plan(plan)
            inputs = forward_plan_inputs(loaded, playbook)
            run_id = self.journal.create_run(
                site_name=loaded.site.name,
                site_path=loaded.path,
                site_digest=loaded.digest,
                playbook=playbook.spec.name,
                playbook_digest=playbook.digest,
                plan_hash=plan.plan_hash,
                plan_json=plan_json,
                playbook_path=playbook.path,
                plan_inputs=None if inputs is None else (inputs, layout),
            )
            ctx.attach(run_id)
            ctx.record(EventKind.TOPOLOGY, payload={"primaries": primaries})
            if overridden:
                ctx.record(
                    EventKind.RULES_OVERRIDDEN, payload={"rules": overridden, "by": ctx.operator}
                )
            if ctx.switchover_policy is not None:
                ctx.record(EventKind.SWITCHOVER_POLICY, payload=ctx.switchover_policy.as_dict())
            recorded_rollback = rollback_plan_of(loaded, plan.rollback_playbook)
            if recorded_rollback is not None:
                ctx.record(
                    ROLLBACK_AT_START,
                    payload={
                        "plan_hash": recorded_rollback.plan_hash,
                        "plan_json": json.dumps(recorded_rollback.as_dict()),
                    },
                )
        except BaseException:
            ctx.close()
            raise
        durations = self.durations(loaded, ctx.switchover_policy)
        parallel = self.parallel or Parallelism()
        estimate = estimate_plan(plan, durations, parallel)
        ctx.record(EventKind.ESTIMATE, payload=estimate.as_dict())
        ctx.record(EventKind.PARALLELISM, payload=parallel.as_dict())
        self.ui.info(
            f"run {run_id}: {plan.title} ({len(plan.states)} states, "
            f"estimated {clock(estimate.total_s)}, {parallel.describe()})"
        )
        window = self._window(durations, loaded, ctx.switchover_policy)
        if window is not None:
            self.ui.info(window.describe_left())
        factory = self._rollback_plan_factory(loaded, plan.rollback_playbook, frozenset(), run_id)
        return Engine(
            ctx,
            plan,
            action_table(),
            auto_rollback=auto_rollback,
            rollback_plan=factory,
            cause_of=as_cause,
            window=window,
            parallel=parallel,
        )

    def _resumed(
        self,
        loaded: LoadedSite,
        playbook_name: str | None,
        run_id: str | None,
        auto_rollback: bool,
    ) -> Engine:
        run = self._resumable(loaded, run_id)
        playbook = load_playbook(playbook_name or run.playbook_path or run.playbook)
        plan = plan_for_resume(self.journal, run, loaded, playbook)
        if run.plan_hash != plan.plan_hash:
            raise ResumeRefused(
                f"run {run.run_id} cannot be resumed: {changed_files(run, loaded, playbook)} "
                f"changed since it started, and with it the plan: "
                f"{describe_plan_change(run.plan_json, plan)}. Restore the site file and "
                f"playbook it started with, or roll it back (`ors-migrate rollback {run.run_id}`)."
            )
        flags = self._rollback_flags(run.run_id)
        factory = self._rollback_plan_factory(loaded, plan.rollback_playbook, flags, run.run_id)
        if run.phase == ROLLBACK:
            self._refuse_changed_rollback(run, factory)
        ctx = self._context(loaded, run.run_id)
        parallel = self._parallelism(run.run_id)
        try:
            self.ui.info(f"resuming run {run.run_id} ({parallel.describe()})")
            check_live_topology(ctx, self._initial_primaries(ctx))
            ctx.record(EventKind.PARALLELISM, payload=parallel.as_dict())
        except BaseException:
            ctx.close()
            raise
        window = self._window(None, loaded, ctx.switchover_policy)
        if window is not None:
            self.ui.info(window.describe_left())
        return Engine(
            ctx,
            plan,
            action_table(),
            auto_rollback=auto_rollback,
            rollback_plan=factory,
            rollback_flags=flags,
            cause_of=as_cause,
            window=window,
            parallel=parallel,
        )

    def _resumable(self, loaded: LoadedSite, run_id: str | None) -> RunRecord:
        run = self.find_run(run_id, loaded.site.name)
        if run.site_name != loaded.site.name:
            raise ResumeRefused(
                f"run {run.run_id} belongs to site {run.site_name}, not {loaded.site.name}"
            )
        status = self.display_status(run)
        if status not in UNFINISHED:
            raise ResumeRefused(f"run {run.run_id} is {status}; there is nothing to resume")
        return run

    def _refuse_changed_rollback(self, run: RunRecord, factory: Callable[[], Plan] | None) -> None:
        recorded = [p.get("plan_hash") for p in self._rollback_events(run.run_id)]
        if factory is not None and recorded and recorded[-1] != factory().plan_hash:
            raise ResumeRefused(
                f"run {run.run_id} cannot be resumed: its rollback plan changed since the "
                "rollback started; restore the rollback playbook and site file it started with"
            )

    def _initial_primaries(self, ctx: RunContext) -> dict[str, str]:
        """The primaries recorded when the run started. A run killed before it recorded them
        had not run any action yet: the live primaries are its starting point."""
        for event in self.journal.events(ctx.run_id):
            if event.kind == EventKind.TOPOLOGY:
                return dict(event.payload.get("primaries", {}))
        primaries = live_primaries(ctx)
        ctx.record(EventKind.TOPOLOGY, payload={"primaries": primaries})
        return primaries

    def _refuse_unfinished(self, site_name: str) -> None:
        for run in self.journal.runs(site_name):
            status = self.display_status(run)
            if status in UNFINISHED:
                raise ResumeRefused(
                    f"run {run.run_id} of site {site_name} is {status} (state "
                    f"{run.current_state}); continue it with `run --resume`, roll it back with "
                    f"`rollback {run.run_id}`, or end it without touching the estate with "
                    f"`abandon {run.run_id} --reason TEXT` before starting a new run"
                )

    # Rolling back on demand
    def rollback(self, run_id: str | None, *, to_start: bool) -> tuple[str, Outcome]:
        """The rollback playbook for a run, from wherever it stands, with the site file and
        playbook the run recorded (refused when they would now do something else), limited to
        what the run changed, and only once the operator confirmed what it will do. Options
        asked for by an earlier, unfinished rollback request are kept."""
        run = self._rollback_target(run_id)
        loaded = load_site(run.site_path)
        lock = RunLock(self.state_dir, run.site_name, estate_claims(loaded.site))
        lock.acquire(run.run_id)
        try:
            self._refuse_drift(run, loaded)
            if run.phase != ROLLBACK and not changed_apps(self.journal, run):
                return run.run_id, self._nothing_to_roll_back(run)
            engine = self._rollback_engine(run, loaded, to_start)
            self._confirm_rollback(engine, run)
            lock.set_run(run.run_id)
        except BaseException:
            lock.release()
            raise
        reason = f"requested by {engine.ctx.operator}"
        return run.run_id, self._execute(engine, lock, reason)

    def _rollback_target(self, run_id: str | None) -> RunRecord:
        """The named run; without a name, the latest run, but only when every run in the state
        directory is of one site (otherwise the operator names the run)."""
        if run_id:
            run = self.find_run(run_id)
        else:
            runs = self.journal.runs()
            sites = {r.site_name for r in runs}
            if len(sites) > 1:
                latest = {r.site_name: r for r in runs}
                listed = "; ".join(
                    f"{r.run_id} (site {r.site_name}, {self.display_status(r)})"
                    for r in sorted(latest.values(), key=lambda r: r.site_name)
                )
                raise InputError(
                    f"runs of {len(sites)} sites are in {self.state_dir}: name the run to roll "
                    f"back (latest of each: {listed})",
                    rule="rollback-which-run",
                )
            run = self.find_run(None)
        if run.status == "abandoned":
            raise InputError(
                f"run {run.run_id} was abandoned; there is nothing of it to roll back",
                rule="rollback-abandoned",
            )
        return run

    def _refuse_drift(self, run: RunRecord, loaded: LoadedSite) -> None:
        """Like resume: refused when the recorded site file or playbook now give another plan
        (another `stop` command, other applications), naming what differs."""
        forward = load_playbook(run.playbook_path or run.playbook)
        plan = make_plan(loaded, forward)
        what = ""
        if plan.plan_hash != run.plan_hash:
            what = describe_plan_change(run.plan_json, plan)
        else:
            recorded = [
                e.payload for e in self.journal.events(run.run_id) if e.kind == ROLLBACK_AT_START
            ]
            current = rollback_plan_of(loaded, plan.rollback_playbook)
            if recorded and current is not None and current.plan_hash != recorded[0]["plan_hash"]:
                what = "its rollback " + describe_plan_change(recorded[0]["plan_json"], current)
        if what:
            raise ResumeRefused(
                f"run {run.run_id} cannot be rolled back with the files as they are now: "
                f"{changed_files(run, loaded, forward)} changed since it started, and with it "
                f"what the run does: {what}. Restore the site file ({run.site_path}) and "
                "playbook the run started with, then roll back."
            )

    def _nothing_to_roll_back(self, run: RunRecord) -> Outcome:
        """A run that changed no option ends here: no restart, no switchover."""
        message = "nothing to roll back: the run changed no option of any application"
        self.journal.record(
            run.run_id, EventKind.ROLLBACK_REQUESTED, phase=ROLLBACK, payload={"reason": message}
        )
        if self.display_status(run) in UNFINISHED:
            self.journal.set_status(run.run_id, "rolled_back", outcome=message)
        self.ui.info(message)
        return Outcome("rolled_back", message, 0)

    def _confirm_rollback(self, engine: Engine, run: RunRecord) -> None:
        """Show what the rollback will do (applications, restarts, switchovers, sessions in
        progress at risk) and ask. --yes confirms; no terminal and no --yes: exit 2, nothing
        done."""
        plan = engine.rollback_plan() if engine.rollback_plan else None
        if plan is None:
            return
        summary = summarize(plan, changed_apps(self.journal, run))
        pairs = sorted(
            {a.target.ha_pair for s in plan.states for a in s.actions if a.target.ha_pair}
        )
        lines = [f"roll back run {run.run_id} of site {run.site_name} ({run.status})"]
        lines += summary.lines()
        if summary.switchovers:
            counts = session_counts(engine.ctx, pairs)
            known = [c.active for c in counts if c.active is not None]
            at_risk = f"{sum(known)}" if counts and len(known) == len(counts) else "unknown"
            lines.append(f"sessions in progress at risk on the primaries switched over: {at_risk}")
        if self.ui.assume_yes:
            for line in lines:
                self.ui.info(line)
            return
        if not self.ui.interactive:
            raise TerminalRequired(
                "rollback restarts and switches over ORS applications and needs confirmation, "
                "but there is no terminal; nothing was done. It would: "
                + "; ".join(lines[1:])
                + ". Run it from a terminal, or confirm with --yes."
            )
        if not self.ui.confirm("\n".join(lines), "Roll back now?"):
            raise GateStopped("rollback not confirmed; nothing was done")

    def _rollback_engine(self, run: RunRecord, loaded: LoadedSite, to_start: bool) -> Engine:
        forward = load_playbook(run.playbook_path or run.playbook)
        flags = self._rollback_flags(run.run_id) | ({"to_start"} if to_start else set())
        name = forward.spec.rollback_playbook or "rollback"
        factory = self._rollback_plan_factory(loaded, name, frozenset(flags), run.run_id)
        plan = make_plan(loaded, forward, read_current=False)
        ctx = self._context(loaded, run.run_id)
        try:
            for _, pair in loaded.site.pairs():
                settled_pair_status(ctx, pair.name)
        except BaseException:
            ctx.close()
            raise
        return Engine(
            ctx,
            plan,
            action_table(),
            rollback_plan=factory,
            rollback_flags=frozenset(flags),
            cause_of=as_cause,
        )

    # Ending a run without touching the estate
    def abandon(self, run_id: str, reason: str) -> RunRecord:
        """End a failed, paused or interrupted run: journaled with who and why; refused while a
        live process holds its lock. Nothing on any host is touched."""
        if not reason.strip():
            raise InputError("--reason must say why the run is abandoned", rule="abandon-reason")
        run = self.find_run(run_id)
        lock = RunLock(self.state_dir, run.site_name)
        lock.acquire(run.run_id)
        try:
            status = self.display_status(run)
            if status not in ABANDONABLE:
                raise InputError(
                    f"run {run.run_id} is {status}; only a failed, paused or interrupted run "
                    "can be abandoned",
                    rule="abandon-status",
                )
            self.journal.record(
                run.run_id,
                EventKind.ABANDONED,
                phase=run.phase,
                payload={"by": operator_name(), "reason": reason, "was": status},
            )
            self.journal.set_status(
                run.run_id, "abandoned", outcome=f"abandoned by {operator_name()}: {reason}"
            )
        finally:
            lock.release()
        return self.find_run(run.run_id)


ROLLBACK_AT_START = EventKind.ROLLBACK_PLAN_AT_START


def rollback_plan_of(loaded: LoadedSite, name: str | None) -> Plan | None:
    """The whole rollback plan (every application, option files restored too) as the site
    file gives it: recorded when a run starts, so that a rollback can tell when an edited site
    file (another `stop` command) would make it do something else."""
    if name is None:
        return None
    playbook = load_playbook(name)
    return make_plan(loaded, playbook, read_current=False, flags=frozenset({"to_start"}))


# Which actions need which password: Redis's to write it into the options and to check the
# cluster, Cassandra's to check the cluster and to drop the keyspace.
NEEDS_REDIS_PASSWORD = ("options.set", "redis.")
NEEDS_CASSANDRA_PASSWORD = ("cassandra.", "cassandra_removal.")


def site_switchover_policy(site: Site) -> SwitchoverPolicy | None:
    """The site's `quiet_switchover`, as the policy the first switchovers follow."""
    quiet = site.quiet_switchover
    if quiet is None:
        return None
    watch_s = quiet.watch_s if quiet.watch_s is not None else quiet.window_s / 3
    return SwitchoverPolicy(quiet.below, quiet.window_s, quiet.policy, watch_s, quiet.margin)


def resolve_secrets(ctx: RunContext, plan: Plan) -> None:
    """Every password the plan's actions will need, resolved before anything is created or
    changed: an unset variable or unreadable file is bad input (exit 2), not a failed run."""
    names = {a.action for s in plan.states for a in s.actions}
    if any(n.startswith(NEEDS_REDIS_PASSWORD) for n in names):
        ctx.redis_password()
    if any(n.startswith(NEEDS_CASSANDRA_PASSWORD) for n in names):
        ctx.cassandra_password()


def refuse_end_state(ctx: RunContext, plan: Plan) -> None:
    """A migration to Redis on an estate where every application already runs with
    type=redis would only restart and switch over for nothing: refused (exit 3) before the run
    is created. Applications whose options cannot be read here are not counted as migrated."""
    if not any(s.enables_redis for s in plan.states):
        return
    if ctx.site.options_backend.kind == "manual":
        return
    apps = [app.name for _, _, app in ctx.site.apps()]
    for name in apps:
        try:
            current = ctx.option_store(name).read()
        except Exception:  # an unreadable store only means "not known to be migrated"
            return
        if current.get((PERSISTENCE, TYPE)) != "redis":
            return
    raise VerificationFailed(
        f"every application of site {ctx.site.name} ({', '.join(apps)}) already runs with "
        f"[{PERSISTENCE}] {TYPE}=redis: there is nothing to migrate, and nothing was run or "
        "restarted. Check the estate with `ors-migrate preflight SITE`; to finish the "
        "migration run `ors-migrate run SITE --playbook remove-cassandra`."
    )

"""The composition root of a run: site + playbook -> plan -> journal, lock and engine."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ors_migrate.engine import ROLLBACK, Engine, Outcome, RunContext, check_live_topology
from ors_migrate.errors import EXIT_INTERRUPTED, InputError, OrsMigrateError, ResumeRefused
from ors_migrate.journal import Journal, RunLock, RunRecord, operator_name
from ors_migrate.plan import OptionValues, Plan, build_plan
from ors_migrate.playbook import LoadedPlaybook, load_playbook
from ors_migrate.secrets import Secrets
from ors_migrate.site import App, LoadedSite, load_site
from ors_migrate.ui import Ui

UNFINISHED = ("running", "paused", "interrupted", "failed")


def local_option_reader(loaded: LoadedSite) -> Any:
    """Current option values for the plan, read only where no network is needed: ini files on
    hosts with the local transport. Elsewhere the plan shows the old values as unknown."""
    from ors_migrate.actions.options_file import read_options

    site = loaded.site
    backend = site.options_backend

    def read(app: App) -> OptionValues | None:
        if backend.kind != "ini-file" or site.hosts[app.host].transport != "local":
            return None
        cluster, pair, _ = site.find_app(app.name)
        path = app.options_path or (backend.path or "").format(
            app=app.name, cluster=cluster.name, pair=pair.name, host=app.host
        )
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


def describe_plan_change(old_json: str, new: Plan) -> str:
    """What differs between the plan a run started with and the plan the files give now."""
    old = json.loads(old_json)
    old_states = {s["id"]: s for s in old["states"]}
    new_states = {s.id: s for s in new.states}
    changes = []
    for sid in old_states.keys() - new_states.keys():
        changes.append(f"state {sid} was removed")
    for sid in new_states.keys() - old_states.keys():
        changes.append(f"state {sid} was added")
    for sid in old_states.keys() & new_states.keys():
        old_keys = {a["key"]: a for a in old_states[sid]["actions"]}
        new_keys = {a.key: a.as_dict(with_old=False) for a in new_states[sid].actions}
        gone = sorted(old_keys.keys() - new_keys.keys())
        added = sorted(new_keys.keys() - old_keys.keys())
        if gone:
            changes.append(f"state {sid} no longer has {', '.join(gone)}")
        if added:
            changes.append(f"state {sid} now also has {', '.join(added)}")
        for key in sorted(old_keys.keys() & new_keys.keys()):
            before = {k: v for k, v in old_keys[key].items() if k != "option_changes"}
            after = {k: v for k, v in new_keys[key].items() if k != "option_changes"}
            old_changes = [
                {k: v for k, v in c.items() if k != "old"} for c in old_keys[key]["option_changes"]
            ]
            if before != after or old_changes != new_keys[key]["option_changes"]:
                changes.append(f"action {key} changed")
        if not gone and not added:
            before_state = {k: v for k, v in old_states[sid].items() if k != "actions"}
            after_state = {k: v for k, v in new_states[sid].as_dict().items() if k != "actions"}
            if before_state != after_state:
                changes.append(
                    f"state {sid} changed ({', '.join(sorted(k for k in before_state if before_state[k] != after_state.get(k)))})"
                )
    return (
        "; ".join(changes[:8]) + (f" (and {len(changes) - 8} more)" if len(changes) > 8 else "")
        or "the plan hash differs"
    )


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Runner:
    def __init__(self, state_dir: Path, ui: Ui) -> None:
        self.state_dir = state_dir
        self.ui = ui
        self.journal = Journal(state_dir)

    def close(self) -> None:
        self.journal.close()

    def display_status(self, run: RunRecord) -> str:
        """A run marked running whose lock nobody holds was interrupted (killed, lost power)."""
        if run.status != "running":
            return run.status
        lock = RunLock(self.state_dir, run.site_name)
        try:
            lock.acquire(None)
        except OrsMigrateError:
            return "running"
        lock.release()
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

    def _rollback_plan_factory(
        self, loaded: LoadedSite, name: str | None, flags: frozenset[str] = frozenset()
    ) -> Any:
        if name is None:
            return None
        playbook = load_playbook(name)
        return lambda: make_plan(loaded, playbook, read_current=False, flags=flags)

    def _context(self, loaded: LoadedSite, run_id: str) -> RunContext:
        return RunContext(loaded, run_id, self.journal, self.ui, Secrets(), operator_name())

    def _execute(
        self, engine: Engine, ctx: RunContext, lock: RunLock, *, rollback_only: bool = False
    ) -> Outcome:
        try:
            with _terminate_as_interrupt():
                if rollback_only:
                    return engine.run_rollback(reason=f"requested by {ctx.operator}")
                return engine.run()
        except KeyboardInterrupt:
            self.journal.set_status(ctx.run_id, "interrupted")
            return Outcome("interrupted", "interrupted; continue with --resume", EXIT_INTERRUPTED)
        finally:
            ctx.close()
            lock.release()

    def start(
        self,
        site_path: str,
        playbook_name: str,
        *,
        resume: bool,
        run_id: str | None,
        auto_rollback: bool,
    ) -> tuple[str, Outcome]:
        loaded = load_site(site_path)
        playbook = load_playbook(playbook_name)
        plan = make_plan(loaded, playbook)
        lock = RunLock(self.state_dir, loaded.site.name)
        lock.acquire(run_id)
        try:
            if resume:
                run = self._resumable(loaded, run_id, plan)
                run_id = run.run_id
            else:
                self._refuse_unfinished(loaded.site.name)
                run_id = self.journal.create_run(
                    site_name=loaded.site.name,
                    site_path=loaded.path,
                    site_digest=loaded.digest,
                    playbook=playbook.spec.name,
                    playbook_digest=playbook.digest,
                    plan_hash=plan.plan_hash,
                    plan_json=json.dumps(plan.as_dict()),
                )
            lock.set_run(run_id)
            ctx = self._context(loaded, run_id)
        except BaseException:
            lock.release()
            raise
        try:
            if resume:
                self.ui.info(f"resuming run {run_id}")
                check_live_topology(ctx, self._initial_primaries(run_id))
            else:
                self.ui.info(f"run {run_id}: {plan.title} ({len(plan.states)} states)")
                primaries = {
                    pair.name: ctx.services.app_in_role(pair.name, "primary")
                    for _, pair in loaded.site.pairs()
                }
                self.journal.record(
                    run_id, "topology", phase="forward", payload={"primaries": primaries}
                )
        except BaseException:
            ctx.close()
            lock.release()
            raise
        engine = Engine(
            ctx,
            plan,
            auto_rollback=auto_rollback,
            rollback_plan=self._rollback_plan_factory(loaded, plan.rollback_playbook),
        )
        return run_id, self._execute(engine, ctx, lock)

    def _initial_primaries(self, run_id: str) -> dict[str, str]:
        for event in self.journal.events(run_id):
            if event.kind == "topology":
                return dict(event.payload.get("primaries", {}))
        return {}

    def _refuse_unfinished(self, site_name: str) -> None:
        for run in self.journal.runs(site_name):
            status = self.display_status(run)
            if status in UNFINISHED:
                raise ResumeRefused(
                    f"run {run.run_id} of site {site_name} is {status} (state "
                    f"{run.current_state}); continue it with `run --resume` or end it with "
                    "`rollback` before starting a new run"
                )

    def _resumable(self, loaded: LoadedSite, run_id: str | None, plan: Plan) -> RunRecord:
        run = self.find_run(run_id, loaded.site.name)
        status = self.display_status(run)
        if status not in UNFINISHED:
            raise ResumeRefused(f"run {run.run_id} is {status}; there is nothing to resume")
        if run.site_name != loaded.site.name:
            raise ResumeRefused(
                f"run {run.run_id} belongs to site {run.site_name}, not {loaded.site.name}"
            )
        if run.plan_hash != plan.plan_hash:
            raise ResumeRefused(
                f"run {run.run_id} cannot be resumed: its plan changed since it started "
                f"({describe_plan_change(run.plan_json, plan)}). Restore the site file and "
                "playbook it started with, or roll it back."
            )
        return run

    def rollback(self, run_id: str | None, *, to_start: bool) -> tuple[str, Outcome]:
        run = self.find_run(run_id)
        loaded = load_site(run.site_path)
        forward = load_playbook(run.playbook)
        name = forward.spec.rollback_playbook or "rollback"
        flags = frozenset({"to_start"}) if to_start else frozenset()
        lock = RunLock(self.state_dir, run.site_name)
        lock.acquire(run.run_id)
        ctx = self._context(loaded, run.run_id)
        plan = make_plan(loaded, forward, read_current=False)
        engine = Engine(ctx, plan, rollback_plan=self._rollback_plan_factory(loaded, name, flags))
        if run.phase == ROLLBACK and run.status == "rolled_back":
            self.journal.set_status(run.run_id, "running", phase=ROLLBACK)
        return run.run_id, self._execute(engine, ctx, lock, rollback_only=True)

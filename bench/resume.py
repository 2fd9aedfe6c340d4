"""(d) What `run --resume` does before it touches the world, on a journal of 10,000 events.

The journal is built through the journal API for the migrate-to-redis plan of a generated site:
the events a run writes (topology, state started/ended, action intent/ended with their payloads,
checks, gate decisions, status changes), in plan order, up to the 10,000th, as if the run had
been killed there. Then each step of a resume is timed on a fresh copy of that journal:

1. opening the journal;
2. loading the site file;
3. taking the run's lock: the site's, and one per application and options file (the estate
   lock), as `run --resume` does before it reads the run; the lock files are there, left by
   the run that was interrupted;
4. finding the site's runs and the one to resume, and naming it in the lock's holder file;
5. loading the playbook and taking the run's plan back from the journal, as `run --resume` does
   when the site file, the playbook and the code are those the plan was made from (its hash is
   then compared with the run's);
6. `expected_primaries`: the journal's side of the live topology check (the status commands
   that check runs on every pair are world reads, not timed here); it reads and decodes the
   events, once per resume;
7. `Engine.run()` up to the first action that is not done: it skips the finished states, scans
   the interrupted state's actions, records the state's restart. The engine is given an action
   table that refuses every lookup, so that the first action that would touch a host raises
   instead.

Outside the total: planning again instead of step 5, as a resume does when an input changed.
"""

from __future__ import annotations

import io
import json
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from ors_migrate.actions.service_control import expected_primaries
from ors_migrate.cli import fewer_collections
from ors_migrate.engine import Engine
from ors_migrate.estate_lock import estate_claims
from ors_migrate.journal import Journal, RunLock, RunRecord
from ors_migrate.playbook import LoadedPlaybook
from ors_migrate.runner import (
    build_context,
    forward_plan_inputs,
    load_playbook,
    make_plan,
    plan_for_resume,
)
from ors_migrate.secrets import Secrets
from ors_migrate.site import LoadedSite, load_site
from ors_migrate.step import Action, Plan, PlannedAction
from ors_migrate.stored_plan import encode_plan
from ors_migrate.ui import Ui

CHECK_ACTIONS = ("redis.", "cassandra.", "sessions.", "service.verify_pair")


class WorldReached(Exception):
    """The resumed engine asked for the first action that would touch a host."""

    def __init__(self, action: str) -> None:
        super().__init__(action)
        self.action = action


class RefusingTable(dict[str, type[Action]]):
    """An action table whose every lookup is the first action that would touch a host."""

    def __getitem__(self, name: str) -> type[Action]:
        raise WorldReached(name)


class EventWriter:
    """Writes the events a run of `plan` writes, until `limit` events are in the journal."""

    def __init__(
        self, journal: Journal, run_id: str, limit: int, members: dict[str, list[str]]
    ) -> None:
        self.journal = journal
        self.run_id = run_id
        self.left = limit - len(journal.events(run_id))
        self.members = members

    def __call__(self, kind: str, **fields: Any) -> None:
        if self.left <= 0:
            raise StopIteration
        self.journal.record(self.run_id, kind, phase="forward", **fields)
        self.left -= 1

    def write_run(self, plan: Plan, primaries: dict[str, str]) -> str:
        """Returns where the run stops: 'state/action' of the last event written."""
        where = "the end of the plan"
        try:
            self("topology", payload={"primaries": dict(primaries)})
            for state in plan.states:
                where = f"state {state.id}"
                self("state_started", state_id=state.id, payload={"seed_step": state.seed_step})
                if state.gate:
                    decision = {"decision": "approve", "by": "bench", "assumed": True}
                    self("gate_decision", state_id=state.id, payload=decision)
                for step in state.actions:
                    where = f"action {step.key}"
                    self.write_action(state.id, step, primaries)
                self("state_ended", state_id=state.id, payload={"seconds": 1.0})
        except StopIteration:
            return where
        return where

    def write_action(self, state_id: str, step: PlannedAction, primaries: dict[str, str]) -> None:
        intent: dict[str, Any] = {"app": step.target.app}
        pair = step.target.ha_pair
        if step.action == "service.switchover" and pair:
            old = primaries[pair]
            new = next(a for a in self.members[pair] if a != old)
            intent = {"pair": pair, "old_primary": old, "new_primary": new}
            primaries[pair] = new
        self("action_intent", state_id=state_id, action_key=step.key, payload=intent)
        if step.action.startswith(CHECK_ACTIONS):
            check = {"check": step.action, "severity": "ok", "message": "as expected"}
            self("check", state_id=state_id, payload=check)
        ended = {"observed": {**intent, "ok": True}, "seconds": 0.5}
        self("action_ended", state_id=state_id, action_key=step.key, payload=ended)


def build_journal(
    loaded: LoadedSite, playbook: LoadedPlaybook, plan: Plan, state_dir: Path, limit: int
) -> tuple[str, str]:
    """A journal holding one interrupted run of `plan` with `limit` events; (run id, where).

    The events go through the journal API; the run's plan JSON (with what it was made from,
    as `run` records it) is stored last, directly, as the large plan is not needed to write
    them."""
    journal = Journal(state_dir)
    journal.db.execute("PRAGMA synchronous=OFF")  # building only; every timed open uses FULL
    try:
        run_id = journal.create_run(
            site_name=loaded.site.name,
            site_path=loaded.path,
            site_digest=loaded.digest,
            playbook=playbook.spec.name,
            playbook_digest=playbook.digest,
            plan_hash=plan.plan_hash,
            plan_json="{}",
            playbook_path=playbook.path,
        )
        journal.set_status(run_id, "running", phase="forward")
        members = {p.name: [a.name for a in p.apps] for _, p in loaded.site.pairs()}
        writer = EventWriter(journal, run_id, limit, members)
        primaries = {p.name: p.app_with_role("primary").name for _, p in loaded.site.pairs()}
        where = writer.write_run(plan, primaries)
        plan_json, layout = encode_plan(plan)
        inputs = forward_plan_inputs(loaded, playbook)
        assert inputs is not None
        with journal.db:
            journal.db.execute(
                "UPDATE plans SET plan_json = ? WHERE run_id = ?", (plan_json, run_id)
            )
            journal.db.execute("INSERT INTO plan_inputs VALUES (?,?,?)", (run_id, inputs, layout))
    finally:
        journal.close()
    lock = RunLock(state_dir, loaded.site.name, estate_claims(loaded.site))
    lock.acquire(run_id)  # the lock files the interrupted run leaves behind
    lock.release()
    return run_id, where


def _timed(step: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    value = step()
    return time.perf_counter() - began, value


def _engine_until_world(journal: Journal, loaded: LoadedSite, plan: Plan, run_id: str) -> str:
    ui = Ui(assume_yes=True, quiet=True, interactive=False, console=Console(file=io.StringIO()))
    ctx = build_context(loaded, run_id, journal, ui, secrets=Secrets(), operator="bench")
    try:
        Engine(ctx, plan, RefusingTable(), auto_rollback=False).run()
    except WorldReached as reached:
        return reached.action
    finally:
        ctx.close()
    return "(none: every action was done)"


def _run_of(journal: Journal, site_name: str, run_id: str) -> RunRecord:
    return next(r for r in journal.runs(site_name) if r.run_id == run_id)


def _stored_plan(journal: Journal, run: RunRecord, loaded: LoadedSite) -> Plan:
    plan = plan_for_resume(journal, run, loaded, load_playbook(run.playbook_path or run.playbook))
    if plan.plan_hash != run.plan_hash:
        raise RuntimeError("the resume would be refused: the plan hash differs")
    return plan


def _locked(state_dir: Path, loaded: LoadedSite) -> RunLock:
    lock = RunLock(state_dir, loaded.site.name, estate_claims(loaded.site))
    lock.acquire(None)
    return lock


def _named_run(journal: Journal, lock: RunLock, site_name: str, run_id: str) -> RunRecord:
    run = _run_of(journal, site_name, run_id)
    lock.set_run(run.run_id)
    return run


def resume_once(site: Path, state_dir: Path, run_id: str) -> tuple[dict[str, float], str]:
    timings: dict[str, float] = {}
    timings["1. open the journal"], journal = _timed(lambda: Journal(state_dir))
    lock: RunLock | None = None
    try:
        timings["2. load the site file"], loaded = _timed(lambda: load_site(site))
        claims = len(estate_claims(loaded.site))
        timings[f"3. take the run lock (the site's and {claims:,} claims)"], held = _timed(
            lambda: _locked(state_dir, loaded)
        )
        lock = held
        timings["4. find the run, name it in the lock"], run = _timed(
            lambda: _named_run(journal, held, loaded.site.name, run_id)
        )
        timings["5. load the playbook, the stored plan, compare hashes"], plan = _timed(
            lambda: _stored_plan(journal, run, loaded)
        )
        initial = {p.name: p.app_with_role("primary").name for _, p in loaded.site.pairs()}
        timings["6. expected primaries from the journal"], _ = _timed(
            lambda: expected_primaries(journal, run_id, initial)
        )
        timings["7. engine: skip what is done, to the first action"], reached = _timed(
            lambda: _engine_until_world(journal, loaded, plan, run_id)
        )
        fresh = Journal(state_dir)
        try:
            timings["   (of which, in step 6: read and decode the events once)"], _ = _timed(
                lambda: fresh.events(run_id)
            )
        finally:
            fresh.close()
        timings["   (not in the total: plan again instead of step 5)"], _ = _timed(
            lambda: make_plan(loaded, load_playbook(run.playbook_path or run.playbook))
        )
    finally:
        if lock is not None:
            lock.release()
        journal.close()
    return timings, reached


def resume(site: Path, directory: Path, limit: int, repeat: int) -> Iterator[str]:
    loaded = load_site(site)
    playbook = load_playbook("migrate-to-redis")
    plan = make_plan(loaded, playbook)
    built = directory / "journal-built"
    began = time.perf_counter()
    run_id, where = build_journal(loaded, playbook, plan, built, limit)
    actions = sum(len(s.actions) for s in plan.states)
    yield (
        f"  journal: {limit} events of one run of a {len(plan.states)}-state, {actions}-action "
        f"plan, interrupted after {where} (built in {time.perf_counter() - began:.1f} s)"
    )
    rounds = []
    reached = ""
    # The collector as `ors-migrate` sets it before any command (what is loaded so far frozen,
    # a larger first generation): without it, every pass rescans this bench's own plans and
    # journals, which a resuming process does not hold.
    fewer_collections()
    for n in range(repeat):
        copy = directory / f"journal-{n}"
        shutil.copytree(built, copy)
        timings, reached = resume_once(site, copy, run_id)
        rounds.append(timings)
    for label in rounds[0]:
        seconds = statistics.median(r[label] for r in rounds)
        yield f"  {label:<52} {1000 * seconds:>9.1f} ms"
    total = statistics.median(sum(v for k, v in r.items() if k[0].isdigit()) for r in rounds)
    yield f"  {'total before the first world-touching action':<52} {1000 * total:>9.1f} ms"
    unlocked = statistics.median(
        sum(v for k, v in r.items() if k[0].isdigit() and not k.startswith("3.")) for r in rounds
    )
    yield f"  {'the same without step 3 (the lock)':<52} {1000 * unlocked:>9.1f} ms"
    yield f"  (median of {repeat}; the first action to run would have been {reached})"
    claims = estate_claims(loaded.site)
    seconds = run_lock_seconds(directory / "journal-lock", loaded.site.name, claims, run_id)
    yield (
        f"  not in the total: the first run of the site creates its {len(claims):,} claim files "
        f"as it takes the lock: {1000 * seconds:,.1f} ms"
    )
    tiny = journal_write_latency(directory / "journal-tiny-plan", None, 200)
    shutil.copytree(built, directory / "journal-writes")
    large = journal_write_latency(directory / "journal-writes", run_id, 20)
    plan_kib = len(json.dumps(plan.as_dict())) / 1024
    yield "  journal write, one event per transaction, WAL, synchronous=FULL:"
    yield f"    run with a tiny plan:                 {1000 * tiny:>8.2f} ms per event (N=200)"
    label = f"this run ({plan_kib:,.0f} KiB of plan JSON):"
    yield f"    {label:<38}{1000 * large:>8.2f} ms per event (N=20)"
    status = status_change_latency(directory / "journal-writes", run_id, 10)
    yield (
        f"    a status change of this run:          {1000 * status:>8.2f} ms (N=10; the plan "
        "lives in its own table, so the run's row stays small)"
    )


def run_lock_seconds(state_dir: Path, site_name: str, claims: dict[str, str], run_id: str) -> float:
    """Seconds to take the run lock with the estate's claims and name the run in it, as
    `run --resume` does before anything else, and to release it."""
    began = time.perf_counter()
    lock = RunLock(state_dir, site_name, claims)
    lock.acquire(None)
    lock.set_run(run_id)
    lock.release()
    return time.perf_counter() - began


def journal_write_latency(state_dir: Path, run_id: str | None, writes: int) -> float:
    """Seconds per event written as the engine writes them: one transaction each, WAL,
    synchronous=FULL. Without `run_id`, into a new run with a tiny plan."""
    journal = Journal(state_dir)
    try:
        if run_id is None:
            run_id = journal.create_run(
                site_name="bench",
                site_path=str(state_dir),
                site_digest="-",
                playbook="bench",
                playbook_digest="-",
                plan_hash="-",
                plan_json="{}",
            )
        began = time.perf_counter()
        for n in range(writes):
            journal.record(run_id, "check", phase="forward", payload={"n": n})
        return (time.perf_counter() - began) / writes
    finally:
        journal.close()


def status_change_latency(state_dir: Path, run_id: str, writes: int) -> float:
    """Seconds per status change (the engine makes one as each state starts)."""
    journal = Journal(state_dir)
    try:
        began = time.perf_counter()
        for _ in range(writes):
            journal.set_status(run_id, "running", current_state="bench", phase="forward")
        return (time.perf_counter() - began) / writes
    finally:
        journal.close()

"""What a gate shows, built from the run: the journal (what is done) and the live world (who is
primary now, how many sessions each primary has in progress). The engine builds the view; the
face (`ui`) only renders it."""

from __future__ import annotations

from typing import Any

from ors_migrate.errors import OrsMigrateError
from ors_migrate.events import EventKind, GateDecision
from ors_migrate.step import (
    GateView,
    Plan,
    PlannedState,
    RunContext,
    SessionCount,
    sessions_in_progress,
)


def gate_summary(plan: Plan | None, state: PlannedState) -> list[str]:
    """What comes next and where, for the gate prompt."""
    lines = [f"next: {state.id} ({state.seed_step or 'tool step'}) - {state.title}"]
    hosts = sorted({a.target.host for a in state.actions if a.target.host})
    if hosts:
        lines.append("hosts: " + ", ".join(hosts))
    for action in state.actions:
        lines.append(f"  - {action.preview.description}")
    return lines


def build_gate_view(ctx: RunContext, plan: Plan | None, state: PlannedState) -> GateView:
    """The gate of `state` from the journal (what is done) and the live world (who is primary
    now and how many sessions each primary has in progress). `plan`, when given, places the
    state in it."""
    states = plan.states if plan else []
    index = next((n for n, s in enumerate(states, start=1) if s.id == state.id), 0)
    pairs = list(dict.fromkeys(a.target.ha_pair for a in state.actions if a.target.ha_pair))
    return GateView(
        title=state.title,
        state_id=state.id,
        seed_step=state.seed_step,
        position=f"state {index} of {len(states)}" if index else "",
        risk=state.gate,
        done=done_from_journal(ctx.journal.events(ctx.run_id)),
        next_actions=[a.preview.description for a in state.actions],
        hosts=sorted({a.target.host for a in state.actions if a.target.host}),
        sessions=session_counts(ctx, pairs),
    )


def done_from_journal(events: list[Any]) -> list[str]:
    """States ended, gate decisions and switchovers, oldest first."""
    seeds: dict[str, str | None] = {}
    lines = []
    for event in events:
        if event.kind == EventKind.STATE_STARTED:
            seeds[event.state_id] = event.payload.get("seed_step")
        elif event.kind == EventKind.STATE_ENDED:
            seed = seeds.get(event.state_id) or "tool step"
            seconds = float(event.payload.get("seconds", 0.0))
            rollback = " (rollback)" if event.phase == "rollback" else ""
            lines.append(f"{seed:<10} {event.state_id}{rollback}  {seconds:.1f} s")
        elif event.kind == EventKind.GATE_DECISION:
            gate = GateDecision.from_payload(event.payload)
            how = " (--yes)" if gate.assumed else ""
            lines.append(f"gate {event.state_id}: {gate.decision} by {gate.by}{how}")
    return lines


def session_counts(ctx: RunContext, pairs: list[str]) -> list[SessionCount]:
    """Each pair's live primary and its sessions in progress; empty when the site has no
    `sessions` command. A command that fails gives an unknown count, never a failed gate."""
    if not ctx.site.services.sessions:
        return []
    counts = []
    for pair in pairs:
        try:
            primary = ctx.services.app_in_role(pair, "primary")
        except OrsMigrateError as exc:
            counts.append(SessionCount(pair, "?", "?", None, str(exc)))
            continue
        host = ctx.site.find_app(primary)[2].host
        counts.append(_count_on(ctx, pair, primary, host))
    return counts


def _count_on(ctx: RunContext, pair: str, primary: str, host: str) -> SessionCount:
    try:
        result = ctx.services.run("sessions", primary, check=False)
    except OrsMigrateError as exc:
        return SessionCount(pair, primary, host, None, str(exc))
    count = sessions_in_progress(result)
    if isinstance(count, str):
        return SessionCount(pair, primary, host, None, count)
    return SessionCount(pair, primary, host, count)

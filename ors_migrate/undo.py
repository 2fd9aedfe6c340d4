"""What a run changed, and so what rolling it back must undo: no more.

A rollback restarts and switches over only the HA pairs of applications whose options the run
changed, and writes options only on those applications. A run that changed nothing (it failed
at a check, or before its first edit) has nothing to roll back and restarts nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ors_migrate.journal import Journal, RunRecord
from ors_migrate.step import Plan, PlannedAction

# Actions that edit an application's options (each captures the originals before its first edit).
OPTION_EDITS = ("options.set", "cassandra_removal.remove_options", "fips.set_option")
FORWARD = "forward"


def _option_edit_keys(run: RunRecord) -> set[str]:
    plan = json.loads(run.plan_json)
    return {
        action["key"]
        for state in plan.get("states", [])
        for action in state.get("actions", [])
        if action.get("action") in OPTION_EDITS
    }


def _changed_anything(observed: dict[str, Any]) -> bool:
    """Whether an ended option edit changed a value. A reconciled edit (found done after an
    interruption) did; an edit whose every value was already in place did not."""
    changes = observed.get("changes")
    if observed.get("reconciled") or not isinstance(changes, list):
        return True
    return any(c.get("old") != c.get("new") or c.get("new") == "***" for c in changes)


def changed_apps(journal: Journal, run: RunRecord) -> set[str]:
    """Applications whose options this run changed, or may have changed (an edit started and
    not known to have ended), from the journal's forward phase."""
    keys = _option_edit_keys(run)
    started: dict[str, str] = {}
    changed: set[str] = set()
    for event in journal.events(run.run_id):
        if event.phase != FORWARD or event.action_key not in keys:
            continue
        if event.kind == "action_intent" and event.payload.get("app"):
            started[event.action_key or ""] = str(event.payload["app"])
        elif event.kind == "action_ended" and event.action_key in started:
            app = started.pop(event.action_key or "")
            if _changed_anything(event.payload.get("observed") or {}):
                changed.add(app)
    return changed | set(started.values())


def restricted(plan: Plan, apps: set[str], pairs: set[str]) -> Plan:
    """The rollback plan cut down to `apps` (application actions) and `pairs` (pair actions);
    site-wide actions stay. A state left with no action is left out."""

    def kept(scope: str, action: PlannedAction) -> bool:
        # A pair's action may name the member it targets (the backup to restart): the pair
        # decides, not that member.
        target = action.target
        if scope == "ha_pair" or (not target.app and target.ha_pair):
            return target.ha_pair in pairs
        if target.app:
            return target.app in apps
        return True

    states = []
    for state in plan.states:
        actions = [a for a in state.actions if kept(state.scope, a)]
        if actions:
            states.append(replace(state, actions=actions))
    return replace(plan, states=states)


@dataclass(frozen=True)
class RollbackSummary:
    """What a rollback will do, shown before it is confirmed."""

    apps: list[str]
    restarts: int
    switchovers: int
    option_edits: int

    def lines(self) -> list[str]:
        return [
            f"applications whose options go back: {', '.join(self.apps) or 'none'}",
            f"restarts: {self.restarts}, switchovers: {self.switchovers}, "
            f"option edits: {self.option_edits}",
        ]


def summarize(plan: Plan, apps: set[str]) -> RollbackSummary:
    actions = [a for s in plan.states for a in s.actions]
    return RollbackSummary(
        apps=sorted(apps),
        restarts=sum(a.action == "service.restart" for a in actions),
        switchovers=sum(a.action == "service.switchover" for a in actions),
        option_edits=sum(a.action in OPTION_EDITS for a in actions),
    )

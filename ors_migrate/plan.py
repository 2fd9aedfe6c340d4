"""A playbook expanded against a site: the concrete, deterministic plan and its hash.

Pure: no host, Redis or Cassandra is contacted. Roles are predicted from the site file and the
switchovers planned before each step; the run resolves them again from the live world.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ors_migrate.actions.base import Preview, Target
from ors_migrate.actions.registry import get_action
from ors_migrate.errors import InputError
from ors_migrate.playbook import LoadedPlaybook, StateSpec
from ors_migrate.site import App, LoadedSite, Site
from ors_migrate.yamlfile import LocatedDocument

OptionValues = dict[tuple[str, str], str]
CurrentOptions = Callable[[App], OptionValues | None]


@dataclass
class PlannedAction:
    key: str
    action: str
    target: Target
    args: dict[str, Any]
    role: str | None
    changes_world: bool
    preview: Preview = field(default_factory=lambda: Preview(""))

    def as_dict(self, *, with_old: bool = True) -> dict[str, Any]:
        changes = [
            {k: v for k, v in c.items() if with_old or k not in ("old", "old_known")}
            for c in self.preview.option_changes
        ]
        return {
            "key": self.key,
            "action": self.action,
            **self.target.as_dict(),
            "changes_world": self.changes_world,
            "args": self.args,
            "description": self.preview.description,
            "commands": self.preview.commands,
            "option_changes": changes,
        }


@dataclass
class PlannedState:
    id: str
    title: str
    seed_step: str | None
    scope: str
    gate: str | None
    enables_redis: bool
    on_failure: str | None
    retry_attempts: int
    retry_backoff_s: float
    timeout_s: float | None
    actions: list[PlannedAction]

    def as_dict(self, *, with_old: bool = True) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "seed_step": self.seed_step,
            "scope": self.scope,
            "gate": self.gate,
            "enables_redis": self.enables_redis,
            "on_failure": self.on_failure,
            "retry": {"attempts": self.retry_attempts, "backoff_s": self.retry_backoff_s},
            "timeout_s": self.timeout_s,
            "actions": [a.as_dict(with_old=with_old) for a in self.actions],
        }


@dataclass
class Plan:
    playbook: str
    title: str
    site: str
    rollback_playbook: str | None
    states: list[PlannedState]
    plan_hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook,
            "title": self.title,
            "site": self.site,
            "plan_hash": self.plan_hash,
            "rollback_playbook": self.rollback_playbook,
            "states": [s.as_dict() for s in self.states],
        }

    def state(self, state_id: str) -> PlannedState:
        return next(s for s in self.states if s.id == state_id)

    def action(self, key: str) -> PlannedAction:
        for state in self.states:
            for action in state.actions:
                if action.key == key:
                    return action
        raise KeyError(key)

    def rollback_point(self) -> str | None:
        """The first state after which a failure rolls back instead of stopping."""
        return next((s.id for s in self.states if s.enables_redis), None)


class PlanningView:
    """What the planner predicts about the world as the plan unfolds: who is primary in each
    pair, and each application's option values (None where they could not be read)."""

    def __init__(
        self,
        site: Site,
        current_options: CurrentOptions | None,
        document: LocatedDocument | None = None,
    ) -> None:
        self.site = site
        self.document = document
        self.primary: dict[str, str] = {
            pair.name: pair.app_with_role("primary").name for _, pair in site.pairs()
        }
        self.options: dict[str, OptionValues | None] = {}
        for _, _, app in site.apps():
            self.options[app.name] = current_options(app) if current_options else None

    def app_in_role(self, pair_name: str, role: str) -> str:
        _, pair = self.site.find_pair(pair_name)
        primary = self.primary[pair_name]
        if role == "primary":
            return primary
        return next(a.name for a in pair.apps if a.name != primary)

    def switch(self, pair_name: str) -> None:
        self.primary[pair_name] = self.app_in_role(pair_name, "backup")

    def option(self, app: str, section: str, option: str) -> str | None:
        values = self.options.get(app)
        return None if values is None else values.get((section, option))

    def options_known(self, app: str) -> bool:
        return self.options.get(app) is not None

    def set_option(self, app: str, section: str, option: str, value: str | None) -> None:
        values = self.options.get(app)
        if values is None:
            return
        if value is None:
            values.pop((section, option), None)
        else:
            values[(section, option)] = value


def _condition_holds(site: Site, when: str) -> bool:
    if when == "cassandra_in_use":
        return site.cassandra is not None and site.cassandra.in_use
    if when == "redis_tls":
        return site.redis.tls.enabled
    removal = site.cassandra.removal if site.cassandra else None
    if when == "cassandra_drop_keyspace":
        return removal is not None and removal.drop_keyspace
    if when == "cassandra_snapshot":
        return removal is not None and removal.drop_keyspace and removal.snapshot
    return True


def _state_included(site: Site, state: StateSpec, flags: frozenset[str]) -> bool:
    """`to_start` states are switched on by a flag; the others by the site's settings."""
    if state.when == "to_start":
        return "to_start" in flags
    return _condition_holds(site, state.when)


def _units(site: Site, scope: str) -> list[Target]:
    """The targets a state's scope iterates over, in site-file order."""
    if scope == "site":
        return [Target()]
    if scope == "ors_cluster":
        return [Target(cluster=c.name) for c in site.ors_clusters]
    if scope == "ha_pair":
        return [Target(cluster=c.name, ha_pair=p.name) for c, p in site.pairs()]
    return [
        Target(cluster=c.name, ha_pair=p.name, app=a.name, host=a.host) for c, p, a in site.apps()
    ]


def _with_role(site: Site, unit: Target, role: str | None, view: PlanningView) -> Target:
    if role is None or unit.ha_pair is None:
        return unit
    app_name = view.app_in_role(unit.ha_pair, role)
    _, _, app = site.find_app(app_name)
    return Target(
        cluster=unit.cluster,
        ha_pair=unit.ha_pair,
        app=app_name,
        host=app.host,
        role=role,
        role_resolved_at_run_time=True,
    )


def _expand_state(site: Site, state: StateSpec, view: PlanningView) -> PlannedState:
    # Scope is the outer loop: every action of a state happens for one pair (or app) before the
    # next, so a rolling restart finishes one HA pair before it touches another.
    planned: list[PlannedAction] = []
    for unit in _units(site, state.scope):
        for index, spec in enumerate(state.actions):
            if not _condition_holds(site, spec.when):
                continue
            action = get_action(spec.do)
            step = PlannedAction(
                key=f"{state.id}/{unit.label()}/{index}",
                action=spec.do,
                target=_with_role(site, unit, spec.role, view),
                args=dict(spec.with_),
                role=spec.role,
                changes_world=action.changes_world,
            )
            try:
                step.preview = action.preview(step, view)
            except InputError as exc:
                raise locate_in_site(exc, view.site, view.document, step) from None
            planned.append(step)
    return PlannedState(
        id=state.id,
        title=state.title,
        seed_step=state.seed_step,
        scope=state.scope,
        gate=state.gate,
        enables_redis=state.enables_redis,
        on_failure=state.on_failure,
        retry_attempts=state.retry.attempts,
        retry_backoff_s=state.retry.backoff_s,
        timeout_s=state.timeout_s,
        actions=planned,
    )


def locate_in_site(
    exc: InputError, site: Site, document: LocatedDocument | None, step: PlannedAction
) -> InputError:
    """A site problem an action found while planning, placed in the site file: at the field
    it names, else at the application (or site) the step is about."""
    if exc.file is not None or document is None:
        return exc
    loc: tuple[str | int, ...] = ()
    if exc.field:
        loc = tuple(
            int(p) if p.isdigit() else p
            for p in exc.field.replace("]", "").replace("[", ".").split(".")
        )
    line = document.line_of(loc) if loc else None
    if (line is None or line == 1) and step.target.app:
        line = document.line_of(site.app_loc(step.target.app))
    return type(exc)(exc.detail, file=document.path, line=line, field=exc.field, rule=exc.rule)


def plan_hash(plan: Plan) -> str:
    """Hash of what the plan will do: states, targets, commands and new values. Current (old)
    option values are left out so that the hash does not change as the run edits them."""
    body = {
        "playbook": plan.playbook,
        "site": plan.site,
        "rollback_playbook": plan.rollback_playbook,
        "states": [s.as_dict(with_old=False) for s in plan.states],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_plan(
    loaded_site: LoadedSite,
    playbook: LoadedPlaybook,
    *,
    current_options: CurrentOptions | None = None,
    flags: frozenset[str] = frozenset(),
) -> Plan:
    """`flags` switch on optional states (`to_start`: restore option files as before the run)."""
    site = loaded_site.site
    view = PlanningView(site, current_options, loaded_site.document)
    states = [
        _expand_state(site, state, view)
        for state in playbook.spec.states
        if _state_included(site, state, flags)
    ]
    plan = Plan(
        playbook=playbook.spec.name,
        title=playbook.spec.title,
        site=site.name,
        rollback_playbook=playbook.spec.rollback_playbook,
        states=states,
    )
    plan.plan_hash = plan_hash(plan)
    return plan

"""A playbook expanded against a site: the concrete, deterministic plan and its hash.

Pure: no host, Redis or Cassandra is contacted; the actions come from the table the playbook
was loaded with. Roles are predicted from the site file and the
switchovers planned before each step; the run resolves them again from the live world.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from ors_migrate.errors import InputError
from ors_migrate.playbook import LoadedPlaybook, StateSpec
from ors_migrate.site import LoadedSite, Site
from ors_migrate.step import (
    ActionTable,
    CurrentOptions,
    Plan,
    PlannedAction,
    PlannedState,
    PlanningView,
    Target,
)
from ors_migrate.yamlfile import LocatedDocument


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


class _Targets:
    """The targets of one plan. A target is immutable, so one object serves every state and
    action that acts there: a site of 500 HA pairs is planned in some 10,000 actions over a
    few thousand distinct targets, and building each anew was a third of the expansion."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._units: dict[str, list[Target]] = {}
        self._by_role: dict[tuple[Target, str, str], Target] = {}

    def units(self, scope: str) -> list[Target]:
        """The targets a state's scope iterates over, in site-file order."""
        if scope not in self._units:
            self._units[scope] = _units(self.site, scope)
        return self._units[scope]

    def with_role(self, unit: Target, role: str | None, view: PlanningView) -> Target:
        if role is None or unit.ha_pair is None:
            return unit
        app_name = view.app_in_role(unit.ha_pair, role)
        key = (unit, role, app_name)
        if key not in self._by_role:
            self._by_role[key] = _with_role(self.site, unit, role, app_name)
        return self._by_role[key]


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


def _with_role(site: Site, unit: Target, role: str, app_name: str) -> Target:
    """`unit` narrowed to the member of its pair expected to hold `role`."""
    _, _, app = site.find_app(app_name)
    return Target(
        cluster=unit.cluster,
        ha_pair=unit.ha_pair,
        app=app_name,
        host=app.host,
        role=role,
        role_resolved_at_run_time=True,
    )


def _expand_state(
    site: Site, state: StateSpec, view: PlanningView, actions: ActionTable, targets: _Targets
) -> PlannedState:
    # Scope is the outer loop: every action of a state happens for one pair (or app) before the
    # next, so a rolling restart finishes one HA pair before it touches another.
    planned: list[PlannedAction] = []
    included = [
        (index, spec)
        for index, spec in enumerate(state.actions)
        if _condition_holds(site, spec.when)
    ]
    for unit in targets.units(state.scope):
        for index, spec in included:
            action = actions[spec.do]()
            step = PlannedAction(
                key=f"{state.id}/{unit.label()}/{index}",
                action=spec.do,
                target=targets.with_role(unit, spec.role, view),
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


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def plan_hash(plan: Plan) -> str:
    """Hash of what the plan will do: states, targets, commands and new values. Current (old)
    option values are left out so that the hash does not change as the run edits them.

    It is the SHA-256 of the plan's canonical JSON (sorted keys, no spaces), fed to the digest
    state by state rather than built as one string, each distinct list of option changes
    encoded once (`SharedChanges`)."""
    digest = hashlib.sha256()
    changes = SharedChanges(_CANONICAL)
    head = {
        "playbook": plan.playbook,
        "site": plan.site,
        "rollback_playbook": plan.rollback_playbook,
        "states": [changes.marker],
    }
    before, after = _CANONICAL.encode(head).split(changes.encoded_marker)
    digest.update(before.encode("utf-8"))
    for index, state in enumerate(plan.states):
        body = state.as_dict(with_old=False)
        body["actions"] = [changes.held(a) for a in body["actions"]]
        encoded = _CANONICAL.encode(body)
        digest.update(("," if index else "").encode("utf-8"))
        digest.update(changes.filled(encoded).encode("utf-8"))
    digest.update(after.encode("utf-8"))
    return digest.hexdigest()


class SharedChanges:
    """Planned actions' option changes in JSON, each distinct list encoded once by `encoder`
    and put back where `marker` holds its place: a plan of 500 HA pairs writes the same list
    for each of 1,000 applications, over half of its JSON."""

    def __init__(self, encoder: json.JSONEncoder) -> None:
        self.encoder = encoder
        self.marker = f"\0{os.urandom(8).hex()}"  # a string no plan holds
        self.encoded_marker = json.dumps(self.marker)
        self.known: dict[tuple[tuple[tuple[str, Any], ...], ...], str] = {}
        self.pending: list[str] = []

    def held(self, action: dict[str, Any]) -> dict[str, Any]:
        """`action` (as `PlannedAction.as_dict` gives it) with its changes left for `filled`."""
        changes = action.get("option_changes")
        if not changes:
            return action
        key = tuple(tuple(change.items()) for change in changes)
        try:
            encoded = self.known.get(key)
        except TypeError:  # a value that cannot be a key: encoded where it stands
            return action
        if encoded is None:
            encoded = self.known[key] = self.encoder.encode(changes)
        self.pending.append(encoded)
        return {**action, "option_changes": self.marker}

    def filled(self, encoded: str) -> str:
        """`encoded` (the JSON of what `held` gave, in order) with the changes put back."""
        pieces = encoded.split(self.encoded_marker)
        out = [pieces[0]]
        for value, piece in zip(self.pending, pieces[1:], strict=True):
            out += [value, piece]
        self.pending = []
        return "".join(out)


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
    targets = _Targets(site)
    states = [
        _expand_state(site, state, view, playbook.actions, targets)
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

"""The action protocol and the registry of built-in and third-party actions.

An action family is a small module of classes implementing `Action`. Third-party actions are
loaded from the `ors_migrate.actions` entry-point group.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ors_migrate.actions.base import Preview
    from ors_migrate.engine import RunContext
    from ors_migrate.plan import PlannedAction, PlanningView
    from ors_migrate.playbook import ActionSpec

ENTRY_POINT_GROUP = "ors_migrate.actions"


class Action:
    """One kind of step. `preview` is pure (the plan); `prepare` resolves run-time targets and
    records what the journal needs; `check` says whether the desired state already holds (used
    to reconcile an action interrupted mid-way); `apply` makes it hold; `verify` confirms."""

    name: ClassVar[str] = ""
    scopes: ClassVar[frozenset[str]] = frozenset({"site", "ors_cluster", "ha_pair", "app"})
    changes_world: ClassVar[bool] = False
    takes_role: ClassVar[bool] = False
    needs_role: ClassVar[bool] = False

    @classmethod
    def check_spec(cls, scope: str, spec: ActionSpec) -> str | None:
        if scope not in cls.scopes:
            return f"action '{cls.name}' works at scope {sorted(cls.scopes)}, not '{scope}'"
        if spec.role is not None and not (cls.takes_role and scope == "ha_pair"):
            return f"action '{cls.name}' does not take a role here"
        if cls.needs_role and scope == "ha_pair" and spec.role is None:
            return f"action '{cls.name}' needs a role (primary or backup) at scope ha_pair"
        return None

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        raise NotImplementedError

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        return {}

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        return False

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def verify(
        self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any]:
        return {}


def _builtin_modules() -> list[str]:
    return [
        "ors_migrate.actions.service",
        "ors_migrate.actions.option_actions",
        "ors_migrate.actions.checks",
        "ors_migrate.actions.operator",
        "ors_migrate.actions.fips",
        "ors_migrate.actions.cassandra_removal",
    ]


@cache
def known_actions() -> dict[str, type[Action]]:
    import importlib
    from importlib.metadata import entry_points

    found: dict[str, type[Action]] = {}
    for module_name in _builtin_modules():
        module = importlib.import_module(module_name)
        for action in getattr(module, "ACTIONS", ()):
            found[action.name] = action
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        action = entry.load()
        found[action.name] = action
    return found


def get_action(name: str) -> Action:
    return known_actions()[name]()

"""The table of actions: the built-in families plus third-party ones from the
`ors_migrate.actions` entry-point group.

A family is one module of `step.Action` classes listed in its `ACTIONS`; adding one means that
module plus its line here (or, outside this package, an entry point naming the module or a
single action class). The composition root builds the table once and hands it to the
playbook loader, the planner and the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points
from types import ModuleType

from ors_migrate.actions import (
    cassandra_removal,
    checks,
    fips,
    host_checks,
    operator,
    option_actions,
    service,
)
from ors_migrate.step import Action

ENTRY_POINT_GROUP = "ors_migrate.actions"
BUILTIN_FAMILIES: tuple[ModuleType, ...] = (
    service,
    option_actions,
    checks,
    host_checks,
    operator,
    fips,
    cassandra_removal,
)


def _actions_of(loaded: object) -> Iterable[type[Action]]:
    """An entry point names a family module (its `ACTIONS`) or one action class."""
    if isinstance(loaded, type) and issubclass(loaded, Action):
        return [loaded]
    return list(getattr(loaded, "ACTIONS", ()))


def build_action_table(group: str = ENTRY_POINT_GROUP) -> dict[str, type[Action]]:
    """Every known action by name: built-ins first, then each entry point of `group` (a
    third-party action may replace a built-in of the same name)."""
    table: dict[str, type[Action]] = {}
    for family in BUILTIN_FAMILIES:
        for action in family.ACTIONS:
            table[action.name] = action
    for entry in entry_points(group=group):
        for action in _actions_of(entry.load()):
            table[action.name] = action
    return table

"""The plan a run started with, taken back from the journal when nothing it was made from changed.

A resume must act on the plan its journal describes. Planning again from the site file and the
playbook tells whether they still give that plan, but on a large estate it costs more than
everything else a resume does before its first action. So a run records, beside its plan, the
inputs that plan was made from (`plan_inputs`): the bytes of the site file and of the playbook,
the flags it was planned with, and the code that planned it (the tool's version and the source
of every package that provides one of its actions, plugins included). A resume whose inputs are
the same takes the stored plan back (`stored_plan`); any difference, or a run recorded before
there were inputs, plans again and compares hashes as before, with the same refusals.

The option values read from the hosts while planning are no input: they are the plan's "old"
values, shown to the operator but left out of what the plan will do (its hash), so that the plan
stays the same as the run edits them. The stored plan keeps those it was made with.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import sys
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import ors_migrate
from ors_migrate.errors import OrsMigrateError
from ors_migrate.playbook import LoadedPlaybook, StateSpec
from ors_migrate.site import LoadedSite
from ors_migrate.step import ActionTable, Plan, PlannedAction, PlannedState, Preview, Target

INPUTS_FORMAT = 1
SOURCE_SUFFIXES = (".py", *importlib.machinery.EXTENSION_SUFFIXES)


@cache
def _source_digest(root: str) -> str:
    """The digest of every source file under a package's folder (or of one module's file),
    read once per process."""
    path = Path(root)
    files = [path]
    if path.is_dir():
        found = path.rglob("*")
        files = sorted(p for p in found if p.name.endswith(SOURCE_SUFFIXES) and p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode("utf-8") + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _package_root(module_name: str) -> str | None:
    """The folder of the top-level package a module belongs to (its own file for a lone
    module); None when it has no source on disk."""
    top = sys.modules.get(module_name.split(".")[0])
    origin = getattr(top, "__file__", None)
    if origin is None:
        return None
    path = Path(origin)
    return str(path.parent if path.name == "__init__.py" else path)


def code_identity(actions: ActionTable) -> dict[str, Any] | None:
    """What planned: the tool's version, each action's class, and the source of every package
    providing an action (ours, and each plugin's). None when a package has no source to read:
    then no stored plan is ever taken back."""
    packages = {_package_root(ors_migrate.__name__)}
    packages |= {_package_root(action.__module__) for action in actions.values()}
    if None in packages:
        return None
    return {
        "version": ors_migrate.__version__,
        "actions": {
            name: f"{action.__module__}.{action.__qualname__}"
            for name, action in sorted(actions.items())
        },
        "sources": {root: _source_digest(root) for root in sorted(str(p) for p in packages)},
    }


def plan_inputs(
    loaded: LoadedSite,
    playbook: LoadedPlaybook,
    *,
    read_current: bool,
    flags: frozenset[str],
) -> str | None:
    """The digest of everything the plan is made from (see the module's docstring); None when
    the code cannot be identified."""
    code = code_identity(playbook.actions)
    if code is None:
        return None
    inputs = {
        "format": INPUTS_FORMAT,
        "site": loaded.digest,
        "playbook": playbook.digest,
        "read_current": read_current,
        "flags": sorted(flags),
        "code": code,
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def encode_plan(plan: Plan) -> tuple[str, str]:
    """The plan as the journal stores it (the JSON of `Plan.as_dict`), and its layout: where
    each state's list of actions lies in that text, so that a resume decodes only the states
    it runs."""
    whole = plan.as_dict()
    states = whole.pop("states")
    parts = [json.dumps(whole)[:-1] + ', "states": [']
    at = len(parts[0])
    spans = []
    for index, state in enumerate(states):
        actions = json.dumps(state.pop("actions"))
        head = (", " if index else "") + json.dumps(state)[:-1] + ', "actions": '
        spans.append((at + len(head), at + len(head) + len(actions)))
        parts += [head, actions, "}"]
        at += len(head) + len(actions) + 1
    parts.append("]}")
    return "".join(parts), json.dumps(spans)


class StoredPlanError(OrsMigrateError):
    """The journal's stored plan does not read as a plan of its playbook."""


class StoredState(PlannedState):
    """A state of the stored plan whose actions are decoded from the journal's text when first
    used: a resume does not decode the states it skips as finished."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()
        self._decode: Callable[[], list[PlannedAction]] | None = None
        super().__init__(*args, **kwargs)

    @classmethod
    def decoded_when_used(
        cls, head: dict[str, Any], decode: Callable[[], list[PlannedAction]]
    ) -> StoredState:
        """The state whose head (`PlannedState.as_dict` without its actions) is `head`, its
        actions left to `decode` until first used."""
        state = cls.from_dict(head, actions=[])
        state._decode = decode
        return state

    @property  # type: ignore[override]
    def actions(self) -> list[PlannedAction]:
        with self._lock:
            if self._decode is not None:
                self._actions, self._decode = self._decode(), None
            return self._actions

    @actions.setter
    def actions(self, value: list[PlannedAction]) -> None:
        with self._lock:
            self._actions, self._decode = value, None


def _action(data: dict[str, Any], spec_state: StateSpec) -> PlannedAction:
    """One stored action. Its role and arguments are the playbook's own (the stored JSON leaves
    the role out and would turn the arguments into JSON); the rest is as planned."""
    index = int(data["key"].rsplit("/", 1)[1])
    spec = spec_state.actions[index]
    if spec.do != data["action"]:
        raise StoredPlanError(
            f"the stored plan's action {data['key']} is {data['action']}, its playbook's "
            f"{spec.do}: the journal was altered; roll the run back or abandon it"
        )
    return PlannedAction(
        key=data["key"],
        action=data["action"],
        target=Target.from_dict(data),
        args=dict(spec.with_),
        role=spec.role,
        changes_world=data["changes_world"],
        preview=Preview(data["description"], data["commands"], data["option_changes"]),
    )


def _decoder(text: str, span: list[int], spec: StateSpec) -> Callable[[], list[PlannedAction]]:
    def decode() -> list[PlannedAction]:
        try:
            return [_action(a, spec) for a in json.loads(text[span[0] : span[1]])]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise StoredPlanError(
                f"the stored plan's state {spec.id} cannot be read ({type(exc).__name__}: "
                f"{exc}): the journal was altered; roll the run back or abandon it"
            ) from None

    return decode


def stored_plan(plan_json: str, layout: str, playbook: LoadedPlaybook) -> Plan | None:
    """The plan as the run stored it (`encode_plan`), made from `playbook`: its states read
    now, their actions when first used. None when it does not read as a plan of that playbook
    with that layout (plan again)."""
    try:
        spans = json.loads(layout)
        heads, last = [], 0
        for start, end in spans:
            if plan_json[start] != "[" or plan_json[end - 1] != "]":
                return None
            heads += [plan_json[last:start], "[]"]
            last = end
        data = json.loads("".join([*heads, plan_json[last:]]))
        specs = {s.id: s for s in playbook.spec.states}
        if len(data["states"]) != len(spans):
            return None
        states: list[PlannedState] = [
            StoredState.decoded_when_used(head, _decoder(plan_json, span, specs[head["id"]]))
            for head, span in zip(data["states"], spans, strict=True)
        ]
        return Plan(
            playbook=data["playbook"],
            title=data["title"],
            site=data["site"],
            rollback_playbook=data["rollback_playbook"],
            states=states,
            plan_hash=data["plan_hash"],
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return None

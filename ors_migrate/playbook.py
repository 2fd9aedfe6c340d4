"""Playbooks: the documented procedures as ordered states, loaded strictly from YAML."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ors_migrate.errors import PlaybookError
from ors_migrate.site import site_error_from_validation
from ors_migrate.step import ActionTable
from ors_migrate.yamlfile import LocatedDocument, load_yaml

PLAYBOOK_DIR = Path(__file__).resolve().parent / "playbooks"
SEED_STEP = re.compile(
    r"^(prepare\.[1-6]|enable\.[1-5]|rollback\.[1-3]|post\.1|fips-windows\.[1-6]|fips-linux\.[1-2])$"
)

Scope = Literal["site", "ors_cluster", "ha_pair", "app"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Retry(_Strict):
    """Attempts for transient failures only (a timeout, a refused or reset connection); a failed
    verification is never retried."""

    attempts: int = Field(default=3, ge=1, le=20)
    backoff_s: float = Field(default=2.0, ge=0)


class ActionSpec(_Strict):
    do: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
    role: Literal["primary", "backup"] | None = None
    when: Literal[
        "cassandra_in_use", "redis_tls", "cassandra_snapshot", "cassandra_drop_keyspace", "always"
    ] = "always"
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class StateSpec(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    title: str = Field(min_length=1)
    seed_step: str | None
    scope: Scope = "site"
    gate: str | None = None
    when: Literal["always", "to_start", "cassandra_snapshot", "cassandra_drop_keyspace"] = "always"
    enables_redis: bool = False
    on_failure: Literal["stop", "rollback"] | None = None
    retry: Retry = Retry()
    timeout_s: float | None = Field(default=None, gt=0)
    actions: list[ActionSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _seed_step_known(self) -> StateSpec:
        if self.seed_step is not None and not SEED_STEP.match(self.seed_step):
            raise ValueError(
                f"seed_step '{self.seed_step}' is not a documented step id "
                "(prepare.1-6, enable.1-5, rollback.1-3, post.1, fips-windows.1-6, fips-linux.1-2) "
                "or null"
            )
        return self


class PlaybookSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    title: str
    description: str = ""
    rollback_playbook: str | None = None
    states: list[StateSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_state_ids(self) -> PlaybookSpec:
        seen: set[str] = set()
        for state in self.states:
            if state.id in seen:
                raise ValueError(f"state id '{state.id}' is used twice")
            seen.add(state.id)
        return self


@dataclass(frozen=True)
class LoadedPlaybook:
    spec: PlaybookSpec
    path: str
    digest: str
    document: LocatedDocument
    actions: ActionTable = field(repr=False, compare=False)


def resolve_playbook_path(name_or_path: str) -> Path:
    """A bundled playbook by name (`migrate-to-redis`) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return PLAYBOOK_DIR / f"{name_or_path}.yaml"


def bundled_playbooks() -> list[str]:
    return sorted(p.stem for p in PLAYBOOK_DIR.glob("*.yaml"))


def load_playbook(name_or_path: str, actions: ActionTable) -> LoadedPlaybook:
    """Load and check a playbook against the table of known actions (which it keeps, for the
    planner)."""
    path = resolve_playbook_path(name_or_path)
    if not path.exists() and path.parent == PLAYBOOK_DIR:
        raise PlaybookError(
            f"no bundled playbook named '{name_or_path}' "
            f"(bundled: {', '.join(bundled_playbooks())})",
            rule="playbook-exists",
        )
    document = load_yaml(path, PlaybookError, "playbook")
    try:
        spec = PlaybookSpec.model_validate(document.data())
    except ValidationError as exc:
        err = site_error_from_validation(exc, document)
        raise PlaybookError(
            err.detail, file=err.file, line=err.line, field=err.field, rule=err.rule
        ) from None
    for s_index, state in enumerate(spec.states):
        for a_index, action in enumerate(state.actions):
            if action.do not in actions:
                raise PlaybookError(
                    f"unknown action '{action.do}' (known: {', '.join(sorted(actions))})",
                    file=str(path),
                    line=document.line_of(("states", s_index, "actions", a_index, "do")),
                    field=f"states[{s_index}].actions[{a_index}].do",
                    rule="action-known",
                )
            problem = actions[action.do].check_spec(state.scope, action)
            if problem:
                raise PlaybookError(
                    problem,
                    file=str(path),
                    line=document.line_of(("states", s_index, "actions", a_index)),
                    field=f"states[{s_index}].actions[{a_index}]",
                    rule="action-scope",
                )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return LoadedPlaybook(spec, str(path), digest, document, actions)

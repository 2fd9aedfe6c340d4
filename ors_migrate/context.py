"""The run context the composition root hands to the engine and the actions: the site, the
journal, the operator's screen, secrets, and the transports, service control and option stores
built for this run. It builds nothing itself (`runner.build_context` does)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ors_migrate.events import EventKind
from ors_migrate.journal import Journal
from ors_migrate.options import PERSISTENCE, OptionChange, tracked_options
from ors_migrate.secrets import Secrets
from ors_migrate.site import LoadedSite, Site
from ors_migrate.step import (
    FORWARD,
    CheckResult,
    OptionStore,
    RunContext,
    RunUi,
    Services,
    SwitchoverPolicy,
    Transports,
)

OpenStore = Callable[[RunContext, str], OptionStore]


@dataclass
class LiveRunContext:
    """`step.RunContext` for a run against the live world."""

    loaded_site: LoadedSite
    run_id: str
    journal: Journal
    ui: RunUi
    secrets: Secrets
    operator: str
    pool: Transports
    services: Services
    open_store: OpenStore
    origin_run_id: str = ""
    phase: str = FORWARD
    switchover_policy: SwitchoverPolicy | None = None
    halt: threading.Event = field(default_factory=threading.Event, repr=False)
    _stores: dict[str, OptionStore] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.origin_run_id = self.origin_run_id or self.run_id

    def attach(self, run_id: str) -> None:
        """Name the run once the journal has created it (the live world is read before)."""
        self.run_id = run_id
        self.origin_run_id = run_id

    @property
    def site(self) -> Site:
        return self.loaded_site.site

    def redis_password(self) -> str | None:
        return self.secrets.resolve(self.site.redis.password, what="Redis password")

    def cassandra_password(self) -> str | None:
        cass = self.site.cassandra
        return self.secrets.resolve(cass.password if cass else None, what="Cassandra password")

    def secret_option_value(self, change: OptionChange) -> str | None:
        if change.key == (PERSISTENCE, "password"):
            return self.redis_password()
        raise KeyError(change.key)

    def option_store(self, app_name: str) -> OptionStore:
        if app_name not in self._stores:
            self._stores[app_name] = self.open_store(self, app_name)
        return self._stores[app_name]

    def capture_originals(self, app_name: str) -> None:
        """Before the first edit of an application in this run: its current values of every
        option the procedures may touch, and (where the backend can) the whole file."""
        if self.journal.has_originals(self.origin_run_id, app_name):
            return
        current = self.option_store(app_name).keep_original(self.origin_run_id)
        values = [
            (c.section, c.option, current.get(c.key), c.secret) for c in tracked_options(self.site)
        ]
        self.journal.save_originals(self.origin_run_id, app_name, values)

    def record(
        self,
        kind: str,
        *,
        state_id: str | None = None,
        action_key: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Journal an event of this run, with every secret value resolved so far masked."""
        self.journal.record(
            self.run_id,
            kind,
            phase=self.phase,
            state_id=state_id,
            action_key=action_key,
            payload=self.masked(payload or {}),
        )

    def masked(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.secrets.mask(value)
        if isinstance(value, dict):
            return {k: self.masked(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.masked(v) for v in value]
        return value

    def record_checks(self, results: list[CheckResult]) -> None:
        for result in results:
            self.record(EventKind.CHECK, payload=result.as_dict())
            if result.severity == "warning":
                self.ui.warn(f"{result.message}" + (f" (fix: {result.fix})" if result.fix else ""))

    def close(self) -> None:
        self.pool.close_all()

"""The step protocol: what a plan is made of, what an action is, and what an action may use.

The bottom of the run layers. Plan, playbook and engine build on these types; every action
family implements `Action` against the `RunContext` protocol and never sees the engine, the
runner or a face; the composition root (`runner.py`) hands in the concrete parts.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Hashable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Self, TypeVar, cast

from ors_migrate.errors import CommandFailed

if TYPE_CHECKING:
    from ors_migrate.journal import Journal
    from ors_migrate.options import OptionChange
    from ors_migrate.secrets import Secrets
    from ors_migrate.site import App, LoadedSite, Site
    from ors_migrate.yamlfile import LocatedDocument

FORWARD = "forward"
ROLLBACK = "rollback"
T = TypeVar("T")
Severity = Literal["ok", "warning", "error"]
Decision = str  # "approve" | "stop" | "rollback"
OptionValues = dict[tuple[str, str], str]
CurrentOptions = Callable[["App"], OptionValues | None]


# What commands and checks return
@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def sessions_in_progress(result: CommandResult) -> int | str:
    """What the site's `sessions` command said: the count of sessions in progress (the first
    word of its output), or why there is no count."""
    words = result.stdout.split()
    if result.exit_code != 0 or not words or not words[0].isdigit():
        return f"`sessions` exited {result.exit_code}: {result.stdout.strip()[:60]!r}"
    return int(words[0])


@dataclass(frozen=True)
class CheckResult:
    """One observation of a read-only check: what was seen, and what to do if it is wrong."""

    check: str
    severity: Severity
    message: str
    fix: str = ""
    observed: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        return self.severity == "error"

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "observed": self.observed,
        }


@dataclass(frozen=True)
class AppStatus:
    """What the status command said of one application. Only `role` is required of a site's
    command; the rest is used when the command reports it (the lab's does)."""

    app: str
    role: str
    version: str | None = None
    type: str | None = None
    instance: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SwitchoverPolicy:
    """Before a switchover that allows it (the first of each pair: its sessions in progress
    are lost), wait up to `wait_s` for a quiet moment on the primary. `below`: switch as soon
    as fewer than `below` are in progress. `lowest`: only watch for `watch_s`, then switch at
    the first count no higher than the lowest seen so far plus `margin` (the load's trough, as
    far as the wait has seen it); at `wait_s` switch anyway."""

    below: int | None
    wait_s: float
    policy: str = "below"
    watch_s: float = 0.0
    margin: int = 0

    def as_dict(self) -> dict[str, Any]:
        if self.policy == "below":
            return {"below": self.below, "wait_s": self.wait_s}
        return {
            "policy": self.policy,
            "wait_s": self.wait_s,
            "watch_s": self.watch_s,
            "margin": self.margin,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> SwitchoverPolicy:
        """As journaled by `as_dict` (a run started before `lowest` existed has `below`)."""
        policy = str(payload.get("policy", "below"))
        below = payload.get("below")
        return cls(
            int(below) if below is not None else None,
            float(payload["wait_s"]),
            policy,
            float(payload.get("watch_s", 0.0)),
            int(payload.get("margin", 0)),
        )

    def quiet_now(self, count: int | None, lowest: int | None, elapsed_s: float) -> bool:
        """Whether to switch at this poll (`lowest` includes `count`)."""
        if count is None:
            return False
        if self.policy == "lowest":
            return (
                elapsed_s >= self.watch_s and lowest is not None and count <= lowest + self.margin
            )
        return self.below is not None and count < self.below

    def describe(self) -> str:
        if self.policy == "lowest":
            near = f" (+{self.margin})" if self.margin else ""
            return f"the lowest number in progress{near} after watching {self.watch_s:g} s"
        return f"fewer than {self.below} sessions"


def clock(seconds: float) -> str:
    """A duration as an operator reads it: 45 s, 12 min 5 s, 2 h 3 min."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@dataclass(frozen=True)
class ChangeWindow:
    """`run --window-end`: no disruptive step starts when its estimate says it would end after
    `end`; the run pauses at the last safe point before it instead."""

    end: dt.datetime  # aware
    seconds: Callable[[PlannedAction], float]  # the estimate of one action
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def left_s(self) -> float:
        return (self.end - self.now()).total_seconds()

    def ends(self) -> str:
        return self.end.astimezone().strftime("%Y-%m-%d %H:%M %Z")

    def describe_left(self) -> str:
        left = self.left_s()
        shown = clock(left) if left > 0 else "no time"
        return f"change window: {shown} left (it ends {self.ends()})"


# The plan's value types
@dataclass(frozen=True)
class Target:
    """Where one planned action acts. `role_resolved_at_run_time` marks an application chosen by
    its role: the plan shows the member expected to hold that role, the run asks the live world."""

    cluster: str | None = None
    ha_pair: str | None = None
    app: str | None = None
    host: str | None = None
    role: str | None = None
    role_resolved_at_run_time: bool = False

    def label(self) -> str:
        return self.app or self.ha_pair or self.cluster or "site"

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "ha_pair": self.ha_pair,
            "app": self.app,
            "host": self.host,
            "role": self.role,
            "role_resolved_at_run_time": self.role_resolved_at_run_time,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        """The target `as_dict` wrote (a planned action's dict holds the same keys)."""
        return cls(
            cluster=data["cluster"],
            ha_pair=data["ha_pair"],
            app=data["app"],
            host=data["host"],
            role=data["role"],
            role_resolved_at_run_time=data["role_resolved_at_run_time"],
        )


@dataclass
class Preview:
    """What a planned action will do, for the dry-run plan: exact commands and option diffs."""

    description: str
    commands: list[str] = field(default_factory=list)
    option_changes: list[dict[str, Any]] = field(default_factory=list)


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
        # Written out rather than merged from `Target.as_dict`: the plan hash builds this for
        # each of the 10,000 actions of 500 HA pairs. The keys keep `Target.as_dict`'s order.
        if with_old:
            changes = [dict(c) for c in self.preview.option_changes]
        else:
            changes = [
                {k: v for k, v in c.items() if k != "old" and k != "old_known"}
                for c in self.preview.option_changes
            ]
        t = self.target
        return {
            "key": self.key,
            "action": self.action,
            "cluster": t.cluster,
            "ha_pair": t.ha_pair,
            "app": t.app,
            "host": t.host,
            "role": t.role,
            "role_resolved_at_run_time": t.role_resolved_at_run_time,
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

    @classmethod
    def from_dict(cls, data: dict[str, Any], actions: list[PlannedAction]) -> Self:
        """The state `as_dict` wrote, with `actions` in place of its "actions": those are
        the caller's to decode (a stored plan decodes them only when first used)."""
        return cls(
            id=data["id"],
            title=data["title"],
            seed_step=data["seed_step"],
            scope=data["scope"],
            gate=data["gate"],
            enables_redis=data["enables_redis"],
            on_failure=data["on_failure"],
            retry_attempts=data["retry"]["attempts"],
            retry_backoff_s=data["retry"]["backoff_s"],
            timeout_s=data["timeout_s"],
            actions=actions,
        )


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
        # Each application's peer in its HA pair (a pair has exactly two).
        self.peer: dict[str, str] = {
            app.name: other.name
            for _, pair in site.pairs()
            for app in pair.apps
            for other in pair.apps
            if other is not app
        }
        self.options: dict[str, OptionValues | None] = {}
        for _, _, app in site.apps():
            self.options[app.name] = current_options(app) if current_options else None
        self._derived: dict[Hashable, Any] = {}

    def derived(self, key: Hashable, make: Callable[[], T]) -> T:
        """What `make` derives from the site alone, made once per plan under `key`: a plan of
        500 HA pairs asks for the same option changes a thousand times."""
        if key not in self._derived:
            self._derived[key] = make()
        return cast(T, self._derived[key])

    def app_in_role(self, pair_name: str, role: str) -> str:
        primary = self.primary[pair_name]
        return primary if role == "primary" else self.peer[primary]

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


# What a gate shows
@dataclass(frozen=True)
class SessionCount:
    """Sessions in progress on one primary, from the site's `sessions` command."""

    ha_pair: str
    app: str
    host: str
    active: int | None
    error: str | None = None


@dataclass
class GateView:
    """Everything a gate shows before it asks."""

    title: str
    state_id: str
    seed_step: str | None
    position: str
    risk: str | None
    done: list[str] = field(default_factory=list)
    next_actions: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    sessions: list[SessionCount] = field(default_factory=list)
    window: str | None = None  # the change window's time left, with `run --window-end`

    def sessions_at_risk(self) -> int:
        return sum(s.active or 0 for s in self.sessions)


# What an action may use
class Transport(Protocol):
    """How commands and files reach one host. Implementations: local subprocess, SSH."""

    name: str
    platform: str

    def run(
        self,
        command: str,
        *,
        stdin: str | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        """Run a shell command; never raises for a non-zero exit, raises TransportError when the
        host cannot be reached or the command times out. Secrets go in `stdin` or `env`,
        never in `command`."""
        ...

    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        ...

    def write_file_atomic(self, path: str, data: bytes, *, backup_path: str | None) -> None:
        """Write via a temporary file in the same directory and a rename, keeping the old
        file's mode and owner (a new file is 0600); copy the old file to `backup_path` first
        when given, with mode 0600 (it may hold the Redis password)."""
        ...

    def close(self) -> None: ...


def run_checked(
    transport: Transport,
    command: str,
    *,
    stdin: str | None = None,
    timeout: float | None = None,
    shown_as: str | None = None,
    stdout_when_silent: bool = False,
) -> CommandResult:
    """Run a command that must succeed: CommandFailed (host, command or `shown_as`, exit code,
    stderr) on a non-zero exit. The one "run, raise on failure" of the actions. Only with
    `stdout_when_silent` (scripts that report errors on stdout) does a failure quote stdout:
    a site command's output may hold option values."""
    result = transport.run(command, stdin=stdin, timeout=timeout)
    if result.exit_code != 0:
        tail = result.stderr
        if stdout_when_silent:
            tail = result.stderr.strip() or result.stdout.strip() or "no output"
        raise CommandFailed(transport.name, shown_as or command, result.exit_code, tail)
    return result


def poll_until(
    probe: Callable[[], T], done: Callable[[T], bool], *, timeout_s: float, interval_s: float
) -> tuple[T, bool]:
    """Call `probe` every `interval_s` until `done(result)` or `timeout_s` has passed since
    the first call: the last result and whether it was done. An exception of `probe` ends the
    polling at once. The one poll-until of the actions (tenacity does the waiting)."""
    from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

    polling = Retrying(
        retry=retry_if_result(lambda result: not done(result)),
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(interval_s),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )
    result: T = polling(probe)
    return result, done(result)


class Transports(Protocol):
    """One transport per host for the whole run."""

    def for_host(self, host_name: str) -> Transport: ...

    def close_all(self) -> None: ...


class Services(Protocol):
    """The site's service commands for applications and HA pairs."""

    def placeholders(self, app_name: str) -> dict[str, str]: ...

    def command(self, kind: str, app_name: str, **extra: str) -> str: ...

    def run(
        self, kind: str, app_name: str, *, check: bool = True, **extra: str
    ) -> CommandResult: ...

    def status(self, app_name: str) -> AppStatus: ...

    def pair_status(self, pair_name: str) -> dict[str, AppStatus]: ...

    def active_sessions(self, app_name: str) -> int | None: ...

    def log_tail(self, app_name: str, lines: int = 10) -> str | None: ...

    def app_in_role(self, pair_name: str, role: str) -> str: ...

    def wait_for_role(
        self, app_name: str, roles: tuple[str, ...], *, other_instance: str | None = None
    ) -> AppStatus: ...

    def restart(self, app_name: str) -> AppStatus: ...

    def switchover(self, pair_name: str, old_primary: str, new_primary: str) -> AppStatus: ...


class OptionStore(Protocol):
    """One application's options, through the site's option backend."""

    def read(self) -> OptionValues: ...

    def write(self, changes: list[tuple[OptionChange, str | None]]) -> None: ...

    def edit(self, changes: list[tuple[OptionChange, str | None]]) -> OptionValues:
        """Make `changes` and return the values before them, as read for this edit (one read
        where the backend reads to write)."""
        ...

    def keep_original(self, run_id: str) -> OptionValues:
        """Keep the options as they are now for `rollback --to start`, once per run (where the
        backend can), and return their values now."""
        ...

    def restore_original(self, run_id: str) -> bool: ...


class RunUi(Protocol):
    """What the operator sees and answers during a run (`ui.Ui` on a console)."""

    assume_yes: bool
    interactive: bool
    console: Any
    on_timeout: str | None

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def state_started(
        self,
        index: int,
        total: int,
        state_id: str,
        title: str,
        seed: str | None,
        actions: int | None = None,
    ) -> None: ...

    def action_done(self, key: str, description: str, seconds: float, note: str = "") -> None: ...

    def gate(self, title: str, summary: list[str], view: GateView | None = None) -> Decision: ...

    def confirm(self, shown: str, question: str) -> bool: ...

    def choose(self, title: str, lines: list[str], choices: list[tuple[str, str]]) -> str: ...

    def unattended(self) -> bool: ...

    def evidence_wait(
        self, description: str, window_s: float
    ) -> AbstractContextManager[Callable[[float, str], None]]: ...

    def operator_step(self, text: str, *, who: str) -> None: ...

    def monitor(
        self, window_s: float
    ) -> AbstractContextManager[Callable[[dict[str, Any]], None]]: ...

    def wait_for_quiet(
        self,
        what: str,
        probe: Callable[[], int | None],
        *,
        policy: SwitchoverPolicy,
        interval_s: float = 1.0,
        sleep: Callable[[float], object] | None = None,
        halt: threading.Event | None = None,
    ) -> dict[str, Any]: ...


class RunContext(Protocol):
    """Everything an action may use during a run. The composition root builds the concrete
    one (`runner.build_context`); tests may hand in their own."""

    loaded_site: LoadedSite
    run_id: str
    origin_run_id: str
    journal: Journal
    ui: RunUi
    secrets: Secrets
    operator: str
    phase: str
    pool: Transports
    services: Services
    switchover_policy: SwitchoverPolicy | None
    # Set while the run is stopping (an interrupt, or another HA pair's failure with pairs in
    # parallel): an action that waits before its command stops waiting and sends nothing.
    halt: threading.Event

    @property
    def site(self) -> Site: ...

    def attach(self, run_id: str) -> None: ...

    def redis_password(self) -> str | None: ...

    def cassandra_password(self) -> str | None: ...

    def secret_option_value(self, change: OptionChange) -> str | None: ...

    def option_store(self, app_name: str) -> OptionStore: ...

    def capture_originals(self, app_name: str) -> None: ...

    def record(
        self,
        kind: str,
        *,
        state_id: str | None = None,
        action_key: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None: ...

    def masked(self, value: Any) -> Any: ...

    def record_checks(self, results: list[CheckResult]) -> None: ...

    def close(self) -> None: ...


class ActionSpecLike(Protocol):
    """The part of a playbook's action entry an action checks (`playbook.ActionSpec`)."""

    @property
    def role(self) -> str | None: ...


# The action protocol
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
    def check_spec(cls, scope: str, spec: ActionSpecLike) -> str | None:
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


ActionTable = Mapping[str, type[Action]]

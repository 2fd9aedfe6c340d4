"""Service control: the site's service commands run for applications and HA pairs, and the
live topology read through them (who is primary, a pair's settled status, whether the live
roles match a run's journal). An HA pair never has both members down: a member is only stopped
while its peer is running as primary."""

from __future__ import annotations

import functools
import json
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ors_migrate.errors import OrsMigrateError, ResumeRefused, VerificationFailed
from ors_migrate.events import EventKind, SwitchoverIntent
from ors_migrate.journal import Journal
from ors_migrate.site import Site
from ors_migrate.step import (
    AppStatus,
    CommandResult,
    RunContext,
    Transports,
    poll_until,
    run_checked,
    sessions_in_progress,
)

ROLES = ("primary", "backup", "down")
T = TypeVar("T")
LOG_LINES = 10


def parse_status(app: str, result: CommandResult) -> AppStatus:
    """A JSON object with at least `role`, or text whose first word is the role."""
    text = result.stdout.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and str(data.get("role", "")).lower() in ROLES:
            return AppStatus(
                app=app,
                role=str(data["role"]).lower(),
                version=data.get("version"),
                type=data.get("type"),
                instance=None if data.get("instance") is None else str(data["instance"]),
                details=data,
            )
    words = text.split()
    if words and words[0].lower() in ROLES:
        return AppStatus(app=app, role=words[0].lower())
    if result.exit_code != 0 and not text:
        return AppStatus(app=app, role="down")
    raise VerificationFailed(
        f"status command for {app} printed neither a role (primary, backup, down) nor a JSON "
        f"object with 'role': {text[:200]!r}"
    )


_quote = functools.lru_cache(maxsize=8192)(shlex.quote)


def render(template: str, values: dict[str, str]) -> str:
    """Fill {placeholders} with shell-quoted values."""
    return render_each([template], values)[0]


def render_each(templates: list[str], values: dict[str, str]) -> list[str]:
    """`render` of several templates with the same values, quoting each value once (a plan of
    500 HA pairs renders some 15,000 service commands)."""
    quoted = {k: _quote(v) for k, v in values.items()}
    return [template.format_map(quoted) for template in templates]


class ServiceControl:
    """Runs the site's service commands for applications and HA pairs."""

    def __init__(self, site: Site, pool: Transports) -> None:
        self.site = site
        self.pool = pool
        self.services = site.services

    def placeholders(self, app_name: str) -> dict[str, str]:
        return self.site.placeholder_values(app_name)

    def command(self, kind: str, app_name: str, **extra: str) -> str:
        template = getattr(self.services, kind)
        if template is None:
            raise VerificationFailed(f"the site defines no '{kind}' service command")
        return render(template, {**self.placeholders(app_name), **extra})

    def run(self, kind: str, app_name: str, *, check: bool = True, **extra: str) -> CommandResult:
        _, _, app = self.site.find_app(app_name)
        transport = self.pool.for_host(app.host)
        command = self.command(kind, app_name, **extra)
        if check:
            return run_checked(transport, command, timeout=self.services.ready_timeout_s)
        return transport.run(command, timeout=self.services.ready_timeout_s)

    def status(self, app_name: str) -> AppStatus:
        return parse_status(app_name, self.run("status", app_name, check=False))

    def pair_status(self, pair_name: str) -> dict[str, AppStatus]:
        _, pair = self.site.find_pair(pair_name)
        return {a.name: self.status(a.name) for a in pair.apps}

    def active_sessions(self, app_name: str) -> int | None:
        """Sessions in progress on an application, from the site's `sessions` command; None when
        there is no such command or it does not answer with a number."""
        if self.services.sessions is None:
            return None
        try:
            result = self.run("sessions", app_name, check=False)
        except OrsMigrateError:
            return None
        count = sessions_in_progress(result)
        return None if isinstance(count, str) else count

    def log_tail(self, app_name: str, lines: int = LOG_LINES) -> str | None:
        """The last lines of the application's log, from the site's `log` command; None when
        the site has none or it cannot be read (the reason in its place)."""
        if self.services.log is None:
            return None
        try:
            result = self.run("log", app_name, check=False)
        except OrsMigrateError as exc:
            return f"(its log could not be read: {exc})"
        text = (result.stdout or result.stderr).rstrip()
        return "\n".join(text.splitlines()[-lines:]) or "(its log is empty)"

    def app_in_role(self, pair_name: str, role: str) -> str:
        return only_holder(pair_name, self.pair_status(pair_name), role)

    def wait_for_role(
        self, app_name: str, roles: tuple[str, ...], *, other_instance: str | None = None
    ) -> AppStatus:
        status, became = poll_until(
            lambda: self.status(app_name),
            lambda s: s.role in roles and (other_instance is None or s.instance != other_instance),
            timeout_s=self.services.ready_timeout_s,
            interval_s=self.services.poll_interval_s,
        )
        if not became:
            raise VerificationFailed(
                f"{app_name} did not become {' or '.join(roles)} within "
                f"{self.services.ready_timeout_s:g} s (last seen: {status.role})"
            )
        return status

    def ensure_peer_primary(self, app_name: str) -> None:
        """Refuse to stop an application unless its peer is up as primary."""
        peer = self.placeholders(app_name)["peer"]
        status = self.status(peer)
        if status.role != "primary":
            raise VerificationFailed(
                f"refusing to stop {app_name}: its peer {peer} is {status.role}, not primary; "
                "an HA pair must never have both members down"
            )

    def restart(self, app_name: str) -> AppStatus:
        before = self.status(app_name)
        if before.role == "primary":
            raise VerificationFailed(
                f"refusing to restart {app_name}: it is the primary; restart backups only, "
                "after a switchover"
            )
        self.ensure_peer_primary(app_name)
        if before.role != "down":
            self.run("stop", app_name)
            self.wait_for_role(app_name, ("down",))
        self.run("start", app_name)
        return self.wait_for_role(app_name, ("backup",), other_instance=before.instance)

    def switchover(self, pair_name: str, old_primary: str, new_primary: str) -> AppStatus:
        """Make `new_primary` the primary. When it already is (a switchover requested before an
        interruption took effect since), the command is not sent again: a second one would
        switch the pair back."""
        statuses = self.pair_status(pair_name)
        new, old = statuses[new_primary], statuses[old_primary]
        if new.role == "primary" and old.role == "backup":
            return new
        if new.role != "backup":
            raise VerificationFailed(
                f"cannot switch {pair_name} over to {new_primary}: it is {new.role}, not a "
                "running backup"
            )
        if old.role != "primary":
            raise VerificationFailed(
                f"cannot switch {pair_name} over from {old_primary}: it is {old.role}, not primary"
            )
        self.run("switchover", old_primary, primary=old_primary, backup=new_primary)
        promoted = self.wait_for_role(new_primary, ("primary",))
        self.wait_for_role(old_primary, ("backup",))
        return promoted


# The live topology on resume
def expected_primaries(
    journal: Journal, run_id: str, initial: dict[str, str]
) -> dict[str, set[str]]:
    """Per HA pair, the members that may be primary now according to the journal: the last
    completed switchover decides; a switchover started but not ended allows either member."""
    expected = {pair: {app} for pair, app in initial.items()}
    intents: dict[str, SwitchoverIntent] = {}
    for event in journal.events(run_id):
        switchover = None
        if event.kind == EventKind.ACTION_INTENT:
            switchover = SwitchoverIntent.from_payload(event.payload)
        if switchover is not None:
            intents[event.action_key or ""] = switchover
            expected[switchover.pair] = {switchover.old_primary, switchover.new_primary}
        elif event.kind == EventKind.ACTION_ENDED and event.action_key in intents:
            intent = intents.pop(event.action_key or "")
            expected[intent.pair] = {intent.new_primary}
        elif event.kind == EventKind.TOPOLOGY:
            for pair, app in event.payload.get("primaries", {}).items():
                expected[pair] = {app}
    return expected


def settled_pair_status(ctx: RunContext, pair_name: str) -> dict[str, AppStatus]:
    """The pair's roles once it has exactly one primary, waiting up to the site's ready timeout
    for a switchover or restart that is still in flight to finish."""
    services = ctx.site.services
    statuses, _ = poll_until(
        lambda: ctx.services.pair_status(pair_name),
        lambda seen: [s.role for s in seen.values()].count("primary") == 1,
        timeout_s=services.ready_timeout_s,
        interval_s=services.poll_interval_s,
    )
    return statuses


# How many reads of the topology run at once before a run (a status command per member, or
# per pair, mostly waiting on the network), bounded so that a large estate does not open every
# connection at the same moment.
TOPOLOGY_READERS = 8


def only_holder(pair_name: str, statuses: dict[str, AppStatus], role: str) -> str:
    """The one member of the pair in `role`; VerificationFailed when none or both are."""
    holders = [name for name, st in statuses.items() if st.role == role]
    if len(holders) != 1:
        seen = ", ".join(f"{n}={s.role}" for n, s in statuses.items())
        raise VerificationFailed(
            f"HA pair {pair_name} has no single {role} ({seen}); "
            "it must have one primary and one backup"
        )
    return holders[0]


def for_every_pair(ctx: RunContext, read: Callable[[str], T]) -> dict[str, T]:
    """`read(pair)` for every HA pair of the site, several at once (reads only), in site order;
    the first error in site order is raised, as a one-by-one loop would have raised it."""
    return _several_at_once([pair.name for _, pair in ctx.site.pairs()], read)


def for_every_app(ctx: RunContext, read: Callable[[str], T]) -> dict[str, T]:
    """`read(app)` for every application of the site, as `for_every_pair` does for pairs."""
    return _several_at_once([app.name for _, _, app in ctx.site.apps()], read)


def _several_at_once(names: list[str], read: Callable[[str], T]) -> dict[str, T]:
    if len(names) <= 1:
        return {name: read(name) for name in names}
    with ThreadPoolExecutor(min(TOPOLOGY_READERS, len(names)), "topology") as pool:
        futures = {name: pool.submit(read, name) for name in names}
        return {name: future.result() for name, future in futures.items()}


def switchover_unfinished(ctx: RunContext, pair_name: str) -> bool:
    """Whether this run journaled a switchover of the pair that it did not see end (it failed
    or was interrupted) and none of the pair's switchovers ended since: the pair may still be
    changing roles."""
    mine: set[str] = set()
    unfinished = False
    for event in ctx.journal.events(ctx.run_id):
        key = event.action_key or ""
        if event.kind == EventKind.ACTION_INTENT:
            intent = SwitchoverIntent.from_payload(event.payload)
            if intent is not None and intent.pair == pair_name:
                mine.add(key)
                unfinished = True
        elif event.kind == EventKind.ACTION_ENDED and key in mine:
            unfinished = False
    return unfinished


def steady_pair_status(
    ctx: RunContext, pair_name: str, steady_s: float
) -> tuple[dict[str, AppStatus], bool]:
    """The pair's roles once one member has been its only primary for `steady_s` (a switchover
    still under way has settled), waiting up to the site's ready timeout; and whether it
    settled."""
    services = ctx.site.services
    seen: dict[str, object] = {"primary": None, "since": 0.0}

    def probe() -> dict[str, AppStatus]:
        statuses = ctx.services.pair_status(pair_name)
        primaries = sorted(n for n, s in statuses.items() if s.role == "primary")
        primary = primaries[0] if len(primaries) == 1 else None
        if primary != seen["primary"]:
            seen.update(primary=primary, since=time.monotonic())
        return statuses

    def steady(statuses: dict[str, AppStatus]) -> bool:
        since = float(seen["since"])  # type: ignore[arg-type]
        return seen["primary"] is not None and time.monotonic() - since >= steady_s

    return poll_until(
        probe, steady, timeout_s=services.ready_timeout_s, interval_s=services.poll_interval_s
    )


def live_primaries(ctx: RunContext) -> dict[str, str]:
    """The primary of every HA pair, read from the live world (the status of every member at
    once, not pair by pair: each is a command on its own host); VerificationFailed when a pair
    has no single primary, the first such pair in site order."""
    statuses = for_every_app(ctx, ctx.services.status)
    return {
        pair.name: only_holder(pair.name, {a.name: statuses[a.name] for a in pair.apps}, "primary")
        for _, pair in ctx.site.pairs()
    }


def check_live_topology(ctx: RunContext, initial: dict[str, str]) -> None:
    """Refuse to resume when the live primaries cannot be explained by the journal."""
    expected = expected_primaries(ctx.journal, ctx.run_id, initial)
    problems = []
    settled = for_every_pair(ctx, lambda pair: settled_pair_status(ctx, pair))
    for _, pair in ctx.site.pairs():
        statuses = settled[pair.name]
        primaries = {n for n, s in statuses.items() if s.role == "primary"}
        allowed = expected.get(pair.name, set())
        if len(primaries) != 1 or not primaries <= allowed:
            seen = ", ".join(f"{n}={s.role}" for n, s in statuses.items())
            want = " or ".join(sorted(allowed)) or "a primary recorded at the start"
            problems.append(
                f"HA pair {pair.name}: the journal expects {want} as primary, "
                f"the live roles are {seen}"
            )
    if problems:
        raise ResumeRefused(
            "the live topology does not match the run's journal: "
            + "; ".join(problems)
            + ". Restore the expected roles (or start a new run) before resuming."
        )

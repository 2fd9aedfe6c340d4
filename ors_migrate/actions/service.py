"""Service actions: start, stop, restart and switchover through the site's Management Layer
commands, with readiness waits. An HA pair never has both members down: a member is only
stopped while its peer is running as primary."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ors_migrate.actions.base import CommandResult, Preview
from ors_migrate.actions.registry import Action
from ors_migrate.errors import CommandFailed, OrsMigrateError, VerificationFailed
from ors_migrate.options import CASSANDRA, PERSISTENCE, REDIS, TYPE, version_at_least
from ors_migrate.site import Site

if TYPE_CHECKING:
    from ors_migrate.actions.transports import TransportPool
    from ors_migrate.engine import RunContext
    from ors_migrate.plan import PlannedAction, PlanningView

ROLES = ("primary", "backup", "down")
SWITCHOVER_SETTLE_S = 2.0


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


def render(template: str, values: dict[str, str]) -> str:
    """Fill {placeholders} with shell-quoted values."""
    return template.format_map({k: shlex.quote(v) for k, v in values.items()})


class ServiceControl:
    """Runs the site's service commands for applications and HA pairs."""

    def __init__(self, site: Site, pool: TransportPool) -> None:
        self.site = site
        self.pool = pool
        self.services = site.services

    def placeholders(self, app_name: str) -> dict[str, str]:
        cluster, pair, app = self.site.find_app(app_name)
        peer = next(a.name for a in pair.apps if a.name != app_name)
        return {
            "app": app.name,
            "host": app.host,
            "cluster": cluster.name,
            "pair": pair.name,
            "peer": peer,
            "install_dir": app.install_dir or "",
        }

    def command(self, kind: str, app_name: str, **extra: str) -> str:
        template = getattr(self.services, kind)
        if template is None:
            raise VerificationFailed(f"the site defines no '{kind}' service command")
        return render(template, {**self.placeholders(app_name), **extra})

    def run(self, kind: str, app_name: str, *, check: bool = True, **extra: str) -> CommandResult:
        _, _, app = self.site.find_app(app_name)
        transport = self.pool.for_host(app.host)
        command = self.command(kind, app_name, **extra)
        result = transport.run(command, timeout=self.services.ready_timeout_s)
        if check and result.exit_code != 0:
            raise CommandFailed(transport.name, command, result.exit_code, result.stderr)
        return result

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
        words = result.stdout.split()
        if result.exit_code != 0 or not words or not words[0].isdigit():
            return None
        return int(words[0])

    def app_in_role(self, pair_name: str, role: str) -> str:
        statuses = self.pair_status(pair_name)
        holders = [name for name, st in statuses.items() if st.role == role]
        if len(holders) != 1:
            seen = ", ".join(f"{n}={s.role}" for n, s in statuses.items())
            raise VerificationFailed(
                f"HA pair {pair_name} has no single {role} ({seen}); "
                "it must have one primary and one backup"
            )
        return holders[0]

    def wait_for_role(
        self, app_name: str, roles: tuple[str, ...], *, other_instance: str | None = None
    ) -> AppStatus:
        deadline = time.monotonic() + self.services.ready_timeout_s
        while True:
            status = self.status(app_name)
            fresh = other_instance is None or status.instance != other_instance
            if status.role in roles and fresh:
                return status
            if time.monotonic() >= deadline:
                raise VerificationFailed(
                    f"{app_name} did not become {' or '.join(roles)} within "
                    f"{self.services.ready_timeout_s:g} s (last seen: {status.role})"
                )
            time.sleep(self.services.poll_interval_s)

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


def _service_preview(
    view: PlanningView, app_name: str | None, kinds: list[str], **extra: str
) -> list[str]:
    """The exact service commands an action will run for `app_name`, host first."""
    site = view.site
    assert app_name is not None
    commands = []
    for kind in kinds:
        template = getattr(site.services, kind)
        if template is None:
            continue
        cluster, pair, app = site.find_app(app_name)
        peer = next(a.name for a in pair.apps if a.name != app_name)
        values = {
            "app": app_name,
            "host": app.host,
            "cluster": cluster.name,
            "pair": pair.name,
            "peer": peer,
            "install_dir": app.install_dir or "",
            **extra,
        }
        commands.append(f"[{app.host}] {render(template, values)}")
    return commands


class Restart(Action):
    """Restart the pair member holding `role` (backup), after checking its peer is primary."""

    name = "service.restart"
    scopes = frozenset({"ha_pair"})
    changes_world = True
    takes_role = True
    needs_role = True

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        return Preview(
            f"restart {step.target.app} ({step.role} of {step.target.ha_pair}) and wait until it "
            "runs as backup; its peer must be primary first",
            _service_preview(view, step.target.app, ["status", "stop", "start", "status"]),
        )

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        assert step.target.ha_pair and step.role
        app = self._member(ctx, step.target.ha_pair, step.role)
        return {"app": app, "instance_before": ctx.services.status(app).instance}

    @staticmethod
    def _member(ctx: RunContext, pair: str, role: str) -> str:
        """The member holding `role`. A backup that is down (it failed to start, which is
        what a rollback often follows) is still the member to restart, next to a running
        primary."""
        if role == "backup":
            statuses = ctx.services.pair_status(pair)
            primaries = [n for n, s in statuses.items() if s.role == "primary"]
            down = [n for n, s in statuses.items() if s.role == "down"]
            if len(primaries) == 1 and len(down) == 1:
                return down[0]
        return ctx.services.app_in_role(pair, role)

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        status = ctx.services.status(intent["app"])
        return (
            status.role == "backup"
            and status.instance is not None
            and status.instance != intent["instance_before"]
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        status = ctx.services.restart(intent["app"])
        return {
            "app": intent["app"],
            "role": status.role,
            "version": status.version,
            "type": status.type,
            "instance": status.instance,
        }


class Switchover(Action):
    """Make the backup of a pair its primary. Reconciled from the live roles, never repeated."""

    name = "service.switchover"
    scopes = frozenset({"ha_pair"})
    changes_world = True

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        assert step.target.ha_pair
        old = view.app_in_role(step.target.ha_pair, "primary")
        new = view.app_in_role(step.target.ha_pair, "backup")
        view.switch(step.target.ha_pair)
        return Preview(
            f"switch {step.target.ha_pair} over: {new} becomes primary, {old} becomes backup "
            "(members resolved at run time)",
            _service_preview(view, old, ["switchover"], primary=old, backup=new),
        )

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        assert step.target.ha_pair
        old = ctx.services.app_in_role(step.target.ha_pair, "primary")
        new = ctx.services.app_in_role(step.target.ha_pair, "backup")
        return {"pair": step.target.ha_pair, "old_primary": old, "new_primary": new}

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        """Whether the interrupted switchover took effect. One the Management Layer accepted
        may still be under way, so decide only once the pair has shown the same single primary
        for a settle window."""
        services = ctx.site.services
        settle_s = max(SWITCHOVER_SETTLE_S, 4 * services.poll_interval_s)
        deadline = time.monotonic() + services.ready_timeout_s
        last: list[str] | None = None
        since = time.monotonic()
        while True:
            statuses = ctx.services.pair_status(intent["pair"])
            primaries = sorted(n for n, s in statuses.items() if s.role == "primary")
            now = time.monotonic()
            if primaries != last:
                last, since = primaries, now
            elif len(primaries) == 1 and now - since >= settle_s:
                if primaries[0] in (intent["new_primary"], intent["old_primary"]):
                    return primaries[0] == intent["new_primary"]
            if now >= deadline:
                seen = ", ".join(f"{n}={s.role}" for n, s in statuses.items())
                raise VerificationFailed(
                    f"cannot tell whether the switchover of {intent['pair']} happened: {seen}"
                )
            time.sleep(services.poll_interval_s)

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        quiet_wait = self._wait_for_quiet(ctx, step, intent)
        promoted = ctx.services.switchover(
            intent["pair"], intent["old_primary"], intent["new_primary"]
        )
        observed = {
            "primary": intent["new_primary"],
            "backup": intent["old_primary"],
            "type": promoted.type,
            "promotion": promoted.details.get("last_promotion"),
        }
        if quiet_wait is not None:
            observed["quiet_wait"] = quiet_wait
        return observed

    @staticmethod
    def _wait_for_quiet(
        ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any] | None:
        """With `--switchover-below N --switchover-wait T`, a switchover whose playbook step
        allows it (`wait_for_quiet: true`, the first one, where sessions in progress are lost)
        waits for a quieter moment on the old primary, up to T seconds."""
        policy = ctx.switchover_policy
        if policy is None or not step.args.get("wait_for_quiet") or not ctx.site.services.sessions:
            return None
        return ctx.ui.wait_for_quiet(
            f"{intent['pair']} ({intent['old_primary']})",
            lambda: ctx.services.active_sessions(intent["old_primary"]),
            below=policy.below,
            wait_s=policy.wait_s,
            interval_s=ctx.site.services.poll_interval_s,
        )


class VerifyPair(Action):
    """One primary and one backup, running the minimum version, each reporting the persistence
    type it is expected to have loaded. `type` applies to both members, `primary_type` and
    `backup_type` to one role; `original` is the type before the run. A status command that
    does not report the type gives no evidence: a person confirms from the ORS logs."""

    name = "service.verify_pair"
    scopes = frozenset({"ha_pair"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        wanted = []
        for role in ("primary", "backup"):
            value = self._wanted(step, role)
            if value:
                shown = "its type before the run" if value == "original" else value
                wanted.append(f"the {role} reports persistence type {shown}")
        types = "; ".join(wanted) if wanted else "persistence type not checked"
        return Preview(
            f"verify {step.target.ha_pair}: one primary and one backup, version >= "
            f"{view.site.ors.min_version}; {types} (a type the status command does not "
            "report: a person confirms)"
        )

    @staticmethod
    def _wanted(step: PlannedAction, role: str) -> str | None:
        return step.args.get(f"{role}_type") or step.args.get("type")

    def _expected_type(
        self, ctx: RunContext, step: PlannedAction, app: str, role: str
    ) -> str | None:
        """`original` means the type captured before the run (anything but redis is
        Cassandra persistence, as ORS reads it)."""
        wanted = self._wanted(step, role)
        if wanted != "original":
            return wanted
        try:
            present, value = ctx.journal.original(ctx.origin_run_id, app, PERSISTENCE, TYPE)
        except KeyError:
            return None
        return REDIS if present and value == REDIS else CASSANDRA

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        from ors_migrate.actions.evidence import confirm_by_hand

        assert step.target.ha_pair
        statuses = ctx.services.pair_status(step.target.ha_pair)
        roles = sorted(s.role for s in statuses.values())
        problems = []
        unreported = []
        if roles != ["backup", "primary"]:
            problems.append("roles are " + ", ".join(f"{n}={s.role}" for n, s in statuses.items()))
        for name, status in statuses.items():
            expected = self._expected_type(ctx, step, name, status.role)
            if status.version and not version_at_least(status.version, ctx.site.ors.min_version):
                problems.append(f"{name} runs {status.version} (< {ctx.site.ors.min_version})")
            if expected and status.type is None:
                unreported.append(f"{name} ({status.role}) loaded persistence type {expected}")
            elif expected and status.type != expected:
                problems.append(
                    f"{name} ({status.role}) loaded persistence type {status.type}, expected "
                    f"{expected}"
                )
        if problems:
            raise VerificationFailed(f"HA pair {step.target.ha_pair}: " + "; ".join(problems))
        observed: dict[str, Any] = {
            n: {"role": s.role, "version": s.version, "type": s.type} for n, s in statuses.items()
        }
        if unreported:
            observed["type_confirmed_by_hand"] = confirm_by_hand(
                ctx,
                step,
                "ors.persistence_type",
                "the ORS logs show that "
                + " and ".join(unreported)
                + " (the status command does not report the type)",
            )
        return observed


class Upgrade(Action):
    """Install ORS at the minimum version or later (seed prepare.3). With no upgrade command in
    the site, the operator does it and the tool checks the version afterwards. The new binaries
    take effect at the standard restart of prepare.5."""

    name = "ors.upgrade"
    scopes = frozenset({"app"})
    changes_world = True

    def _wanted(self, site: Site) -> str:
        return site.ors.target_version or site.ors.min_version

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        wanted = self._wanted(view.site)
        if view.site.services.upgrade:
            return Preview(
                f"install ORS {wanted} for {step.target.app} unless it already has "
                f">= {view.site.ors.min_version}",
                _service_preview(
                    view, step.target.app, ["version", "upgrade", "version"], version=wanted
                ),
            )
        return Preview(
            f"operator installs ORS {wanted} or later for {step.target.app} on "
            f"{step.target.host} (no upgrade command in the site); the tool checks the version",
            _service_preview(view, step.target.app, ["version"]),
        )

    def _installed(self, ctx: RunContext, app: str) -> str | None:
        if ctx.site.services.version:
            out = ctx.services.run("version", app).stdout.strip()
            return out.split()[-1] if out else None
        return ctx.services.status(app).version

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        assert step.target.app
        return {"app": step.target.app, "installed_before": self._installed(ctx, step.target.app)}

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        installed = self._installed(ctx, intent["app"])
        return installed is not None and version_at_least(installed, ctx.site.ors.min_version)

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        wanted = self._wanted(ctx.site)
        if ctx.site.services.upgrade:
            ctx.services.run("upgrade", intent["app"], version=wanted)
        else:
            ctx.ui.operator_step(
                f"Install ORS {wanted} or later for application {intent['app']} on host "
                f"{step.target.host}. Do not restart it: the standard restart comes later.",
                who=ctx.operator,
            )
        installed = self._installed(ctx, intent["app"])
        if installed is None or not version_at_least(installed, ctx.site.ors.min_version):
            raise VerificationFailed(
                f"{intent['app']} reports version {installed}, below {ctx.site.ors.min_version} "
                "which Redis persistence needs"
            )
        return {"app": intent["app"], "installed": installed}


ACTIONS = [Restart, Switchover, VerifyPair, Upgrade]

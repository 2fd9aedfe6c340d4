"""Service actions: start, stop, restart and switchover through the site's Management Layer
commands, with readiness waits. An HA pair never has both members down: a member is only
stopped while its peer is running as primary."""

from __future__ import annotations

import time
from typing import Any

from ors_migrate.actions.service_control import (
    render_each,
    steady_pair_status,
    switchover_unfinished,
)
from ors_migrate.errors import Halted, OrsMigrateError, VerificationFailed
from ors_migrate.events import SwitchoverDone, SwitchoverIntent
from ors_migrate.options import CASSANDRA, PERSISTENCE, REDIS, TYPE, version_at_least
from ors_migrate.site import Site
from ors_migrate.step import (
    ROLLBACK,
    Action,
    AppStatus,
    PlannedAction,
    PlanningView,
    Preview,
    RunContext,
    poll_until,
)

SWITCHOVER_SETTLE_S = 2.0


def _service_preview(
    view: PlanningView, app_name: str | None, kinds: list[str], **extra: str
) -> list[str]:
    """The exact service commands an action will run for `app_name`, host first."""
    site = view.site
    assert app_name is not None
    values = {**site.placeholder_values(app_name), **extra}
    templates = [getattr(site.services, kind) for kind in kinds]
    commands = render_each([t for t in templates if t is not None], values)
    return [f"[{values['host']}] {command}" for command in commands]


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
        """The member holding `role`, decided from the live pair. A pair whose switchover this
        run did not see end is first left to settle (one primary, steadily). A backup that is
        down (it failed to start, which is what a rollback often follows) is still the member
        to restart, next to a running primary; a pair without a running primary has no member
        that may be restarted."""
        if role != "backup":
            return ctx.services.app_in_role(pair, role)
        if switchover_unfinished(ctx, pair):
            statuses, settled = steady_pair_status(ctx, pair, SWITCHOVER_SETTLE_S)
            if not settled:  # a pair still changing roles: its backup of now may be primary next
                seen = ", ".join(f"{n}={s.role}" for n, s in statuses.items())
                raise VerificationFailed(
                    f"HA pair {pair} did not settle after its switchover within "
                    f"{ctx.site.services.ready_timeout_s:g} s (last seen {seen}); no member is "
                    "restarted until one member runs steadily as primary"
                )
        else:
            statuses = ctx.services.pair_status(pair)
        primaries = [n for n, s in statuses.items() if s.role == "primary"]
        others = [n for n, s in statuses.items() if s.role in ("backup", "down")]
        if len(primaries) == 1 and len(others) == 1:
            return others[0]
        seen = ", ".join(f"{n}={s.role}" for n, s in statuses.items())
        raise VerificationFailed(
            f"HA pair {pair} has no running primary beside a backup to restart ({seen}); "
            "no member is restarted until one member runs as primary"
        )

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        status = ctx.services.status(intent["app"])
        return (
            status.role == "backup"
            and status.instance is not None
            and status.instance != intent["instance_before"]
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        try:
            status = ctx.services.restart(intent["app"])
        except OrsMigrateError as exc:
            cause = did_not_start(ctx, intent["app"], exc)
            if cause is None:
                raise
            raise cause from exc
        return {
            "app": intent["app"],
            "role": status.role,
            "version": status.version,
            "type": status.type,
            "instance": status.instance,
        }


def did_not_start(ctx: RunContext, app: str, exc: OrsMigrateError) -> VerificationFailed | None:
    """When a restart left `app` down: that it cannot start, with the last lines of its log
    (from the site's `log` command), what a person needs to bring it back by hand. None when
    it is running (the restart was refused, or failed otherwise)."""
    if ctx.services.status(app).role != "down":
        return None
    options = "its original options" if ctx.phase == ROLLBACK else "its options"
    message = f"{app} cannot start with {options}: {exc}"
    tail = ctx.services.log_tail(app)
    if tail is None:
        message += " (the site has no `services.log` command to show its log)"
    else:
        message += "; its log ends:\n    " + tail.replace("\n", "\n    ")
    return VerificationFailed(message)


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
        return SwitchoverIntent(step.target.ha_pair, old, new).as_dict()

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        """Whether the interrupted switchover took effect. One the Management Layer accepted
        may still be under way, so decide only once the pair has shown the same single primary
        for a settle window."""
        services = ctx.site.services
        settle_s = max(SWITCHOVER_SETTLE_S, 4 * services.poll_interval_s)
        members = (intent["new_primary"], intent["old_primary"])
        seen: dict[str, Any] = {"primaries": None, "since": 0.0}

        def probe() -> tuple[dict[str, AppStatus], list[str]]:
            statuses = ctx.services.pair_status(intent["pair"])
            primaries = sorted(n for n, s in statuses.items() if s.role == "primary")
            if primaries != seen["primaries"]:
                seen.update(primaries=primaries, since=time.monotonic())
            return statuses, primaries

        def settled(result: tuple[dict[str, AppStatus], list[str]]) -> bool:
            primaries = result[1]
            steady = time.monotonic() - seen["since"] >= settle_s
            return len(primaries) == 1 and steady and primaries[0] in members

        (statuses, primaries), done = poll_until(
            probe, settled, timeout_s=services.ready_timeout_s, interval_s=services.poll_interval_s
        )
        if done:
            return primaries[0] == intent["new_primary"]
        roles = ", ".join(f"{n}={s.role}" for n, s in statuses.items())
        raise VerificationFailed(
            f"cannot tell whether the switchover of {intent['pair']} happened: {roles}"
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        quiet_wait = self._wait_for_quiet(ctx, step, intent)
        if ctx.halt.is_set():  # the last moment before the command: a resume waits again
            waited = f" after waiting {quiet_wait['waited_s']:g} s" if quiet_wait else ""
            raise Halted(
                f"the run is stopping: the switchover of {intent['pair']} was not sent{waited}; "
                "a resume checks the pair and switches it over then"
            )
        promoted = ctx.services.switchover(
            intent["pair"], intent["old_primary"], intent["new_primary"]
        )
        return SwitchoverDone(
            primary=intent["new_primary"],
            backup=intent["old_primary"],
            type=promoted.type,
            promotion=promoted.details.get("last_promotion"),
            quiet_wait=quiet_wait,
        ).as_dict()

    @staticmethod
    def _wait_for_quiet(
        ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any] | None:
        """With the site's `quiet_switchover` (or `--switchover-below N`), a switchover whose
        playbook step allows it (`wait_for_quiet: true`, the first one, where sessions in
        progress are lost) waits for a quiet moment on the old primary, each pair on its own."""
        policy = ctx.switchover_policy
        if policy is None or not step.args.get("wait_for_quiet") or not ctx.site.services.sessions:
            return None
        return ctx.ui.wait_for_quiet(
            f"{intent['pair']} ({intent['old_primary']})",
            lambda: ctx.services.active_sessions(intent["old_primary"]),
            policy=policy,
            interval_s=ctx.site.services.poll_interval_s,
            halt=ctx.halt,
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

"""Cassandra removal after the migration (seed post.1, "Remove Cassandra when you are satisfied
with the new ORS with Redis Cluster solution").

It starts only when every application persists to Redis: its `[persistence] type` reads
`redis`, and its running persistence type is `redis` where the status command reports it, or
else a migrate-to-redis run of the site succeeded in the journal. It then removes the
Cassandra options from every application (the backend keeps a backup), and, when the site asks
for it, snapshots and drops the ORS keyspace.

Dropping the keyspace cannot be undone, so it needs more than `--yes`: the operator types the
keyspace name back at a terminal, or, for an unattended run, names it in the environment
variable ORS_MIGRATE_CONFIRM_DROP_KEYSPACE for that one command. Without either the run pauses
before the drop, with nothing dropped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ors_migrate.actions.service_control import render
from ors_migrate.errors import GateStopped, SiteError, VerificationFailed
from ors_migrate.options import FOUND, PERSISTENCE, REDIS, SITE_FILE, TYPE, OptionChange
from ors_migrate.step import Action, OptionValues, Preview, run_checked

if TYPE_CHECKING:
    from ors_migrate.site import CassandraSettings, Site
    from ors_migrate.step import PlannedAction, PlanningView, RunContext, RunUi, Transport

CONFIRM_ENV = "ORS_MIGRATE_CONFIRM_DROP_KEYSPACE"
MIGRATION_PLAYBOOK = "migrate-to-redis"
# Options ORS needs to persist to Redis: never removed as "Cassandra options".
KEPT_OPTIONS = frozenset({TYPE, "redis-nodes", "username", "password"})
# Without cassandra.removal.options, the options of its section whose names begin with this,
# as found in each application's current options, are the ones removed.
FOUND_PREFIX = "cassandra"
COMMAND_TIMEOUT_S = 600.0
SECRET_NAME = re.compile(r"pass|secret|token|credential|auth|key(?!space)", re.IGNORECASE)


def cassandra_of(site: Site) -> CassandraSettings:
    if site.cassandra is None:
        raise SiteError(
            "the site has no 'cassandra' section: there is no Cassandra to remove",
            field="cassandra",
            rule="cassandra-defined",
        )
    return site.cassandra


def named_options(site: Site) -> list[OptionChange] | None:
    """The Cassandra options the site file names (`cassandra.removal.options`), or None when it
    names none: they are then found in each application's current options."""
    removal = cassandra_of(site).removal
    if removal.options is None:
        return None
    kept = sorted(set(removal.options) & KEPT_OPTIONS) if removal.section == PERSISTENCE else []
    if kept:
        raise SiteError(
            f"cassandra.removal.options lists {', '.join(kept)}, which ORS needs for Redis "
            f"persistence (without [persistence] type=redis, ORS goes back to Cassandra)",
            field="cassandra.removal.options",
            rule="removal-keeps-redis",
        )
    return [
        OptionChange(removal.section, option, None, source=SITE_FILE) for option in removal.options
    ]


def removed_options(site: Site, current: OptionValues | None) -> list[OptionChange] | None:
    """The Cassandra options to remove from one application. The documents name none, and
    ors-migrate guesses none: the site file's list, else the options of `removal.section` found
    in the application's current options whose names begin with `cassandra` (None while those
    are not known, as in a plan that could not read them)."""
    named = named_options(site)
    if named is not None:
        return named
    if current is None:
        return None
    section = cassandra_of(site).removal.section
    return [
        OptionChange(section, option, None, source=FOUND)
        for (where, option) in sorted(current)
        if where == section
        and option.lower().startswith(FOUND_PREFIX)
        and option not in KEPT_OPTIONS
    ]


def shown(option: str, value: str | None, source: str = SITE_FILE) -> str | None:
    """A value fit for the plan, the intent and the journal. The value of an option found at
    run time is never shown: nobody chose it, and any `cassandra*` option may hold a secret;
    a named option's value is masked when its name suggests a secret."""
    if value is None:
        return None
    return "***" if source == FOUND or SECRET_NAME.search(option) else value


def latest_migration(ctx: RunContext) -> tuple[str, str] | None:
    """(run id, status) of the site's latest migrate-to-redis run in the journal."""
    runs = [r for r in ctx.journal.runs(ctx.site.name) if r.playbook == MIGRATION_PLAYBOOK]
    return (runs[-1].run_id, runs[-1].status) if runs else None


class ReadyForRemoval(Action):
    """Refuse to go on while any application may still persist to Cassandra."""

    name = "cassandra_removal.ready"
    scopes = frozenset({"site"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        cassandra_of(view.site)
        return Preview(
            "refuse to continue unless every application reads [persistence] type=redis and runs "
            "with Redis persistence (from its status, else a succeeded migrate-to-redis run in "
            "the journal)"
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        migration = latest_migration(ctx)
        proven = migration is not None and migration[1] == "succeeded"
        problems: list[str] = []
        seen: dict[str, dict[str, str | None]] = {}
        for _, _, app in ctx.site.apps():
            configured = ctx.option_store(app.name).read().get((PERSISTENCE, TYPE))
            running = ctx.services.status(app.name).type
            seen[app.name] = {"configured": configured, "running": running}
            if configured != REDIS:
                problems.append(f"{app.name} is configured with type={configured or '(unset)'}")
            elif running is not None and running != REDIS:
                problems.append(f"{app.name} runs with {running} persistence")
            elif running is None and not proven:
                problems.append(f"{app.name} does not report the persistence type it runs with")
        if problems:
            evidence = (
                f"the latest migrate-to-redis run, {migration[0]}, is {migration[1]}"
                if migration
                else "no migrate-to-redis run of this site is in the journal"
            )
            raise VerificationFailed(
                "Cassandra is still needed: "
                + "; ".join(problems)
                + f" ({evidence}). Finish the migration to Redis before removing Cassandra."
            )
        return {"apps": seen, "migration_run": migration[0] if migration else None}


class RemoveOptions(Action):
    """Remove the Cassandra persistence options of one application; the backend keeps a backup
    of the file, and the first edit of the run a pristine copy."""

    name = "cassandra_removal.remove_options"
    scopes = frozenset({"app"})
    changes_world = True

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        app = step.target.app
        assert app
        backend = view.site.options_backend.kind
        named = named_options(view.site)
        if named is None:
            return self._found_preview(app, view)
        rows = []
        for change in named:
            old = view.option(app, change.section, change.option)
            rows.append(
                {
                    "section": change.section,
                    "option": change.option,
                    "old": shown(change.option, old),
                    "old_known": view.options_known(app),
                    "new": None,
                    "source": change.source,
                }
            )
            view.set_option(app, change.section, change.option, None)
        names = ", ".join(f"[{c.section}] {c.option}" for c in named)
        return Preview(
            f"remove {names} from {app} via the {backend} backend (backup kept)", [], rows
        )

    @staticmethod
    def _found_preview(app: str, view: PlanningView) -> Preview:
        """One row for the options found at run time. The names of those there now are its old
        value (never their values), which the plan hash leaves out: the plan stays the same as
        the run removes them."""
        section = cassandra_of(view.site).removal.section
        found = removed_options(view.site, view.options.get(app)) or []
        now = ", ".join(c.option for c in found)  # names only: see shown()
        for change in found:
            view.set_option(app, change.section, change.option, None)
        row = {
            "section": section,
            "option": f"{FOUND_PREFIX}*",
            "old": now or None,
            "old_known": view.options_known(app),
            "new": None,
            "source": FOUND,
        }
        return Preview(
            f"remove from {app} the [{section}] options whose names begin with "
            f"'{FOUND_PREFIX}', as found in its options at run time (the documents name none; "
            f"cassandra.removal.options names them instead), via the "
            f"{view.site.options_backend.kind} backend (backup kept)",
            [],
            [row],
        )

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        assert step.target.app
        ctx.capture_originals(step.target.app)
        current = ctx.option_store(step.target.app).read()
        changes = removed_options(ctx.site, current) or []
        return {
            "app": step.target.app,
            "options": [[c.section, c.option, c.source] for c in changes],
            "before": {c.option: shown(c.option, current.get(c.key), c.source) for c in changes},
        }

    @staticmethod
    def _changes(intent: dict[str, Any]) -> list[OptionChange]:
        """The options this application's removal chose at its start (journaled, so a resumed
        run removes the same ones even once they are gone)."""
        return [
            OptionChange(section, option, None, source=source)
            for section, option, source in intent["options"]
        ]

    def _left(self, ctx: RunContext, intent: dict[str, Any]) -> list[str]:
        current = ctx.option_store(intent["app"]).read()
        return [f"[{c.section}] {c.option}" for c in self._changes(intent) if c.key in current]

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        return not self._left(ctx, intent)

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        changes = self._changes(intent)
        if changes:
            ctx.option_store(intent["app"]).write([(c, None) for c in changes])
        sources = {c.option: c.source for c in changes}
        return {"app": intent["app"], "removed": intent["before"], "name_from": sources}

    def verify(
        self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any]:
        left = self._left(ctx, intent)
        if left:
            raise VerificationFailed(f"{intent['app']} still has {', '.join(left)}")
        return {}


def snapshot_hosts(site: Site) -> list[str]:
    cassandra = cassandra_of(site)
    hosts = cassandra.removal.snapshot_hosts or (
        [cassandra.nodetool_host] if cassandra.nodetool_host else []
    )
    if not hosts:
        raise SiteError(
            "a snapshot before dropping the keyspace needs cassandra.removal.snapshot_hosts "
            "(or cassandra.nodetool_host); set cassandra.removal.snapshot: false to drop "
            "without one",
            field="cassandra.removal.snapshot_hosts",
            rule="snapshot-hosts",
        )
    unknown = [h for h in hosts if h not in site.hosts]
    if unknown:
        raise SiteError(
            f"snapshot host(s) {', '.join(unknown)} are not defined under 'hosts'",
            field="cassandra.removal.snapshot_hosts",
            rule="snapshot-hosts",
        )
    return hosts


class SnapshotKeyspace(Action):
    """`nodetool snapshot` of the ORS keyspace on each Cassandra node listed, tagged with the
    run id, so that a resumed run sees the snapshot it already took."""

    name = "cassandra_removal.snapshot"
    scopes = frozenset({"site"})
    changes_world = True

    @staticmethod
    def command(site: Site, tag: str) -> str:
        removal = cassandra_of(site).removal
        return render(
            removal.snapshot_command, {"tag": tag, "keyspace": cassandra_of(site).keyspace}
        )

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        command = self.command(view.site, "ors-migrate-RUN_ID")
        return Preview(
            f"snapshot keyspace {cassandra_of(view.site).keyspace} (tag ors-migrate-<run id>) on "
            + ", ".join(snapshot_hosts(view.site)),
            [f"[{host}] {command}" for host in snapshot_hosts(view.site)],
        )

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        return {"tag": f"ors-migrate-{ctx.origin_run_id}", "hosts": snapshot_hosts(ctx.site)}

    def _taken(self, ctx: RunContext, transport: Transport, tag: str) -> bool:
        command = cassandra_of(ctx.site).removal.list_snapshots_command
        result = run_checked(transport, command, timeout=COMMAND_TIMEOUT_S)
        return tag in result.stdout.split()

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        return all(self._taken(ctx, ctx.pool.for_host(h), intent["tag"]) for h in intent["hosts"])

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        command = self.command(ctx.site, intent["tag"])
        taken = []
        for host in intent["hosts"]:
            transport = ctx.pool.for_host(host)
            if self._taken(ctx, transport, intent["tag"]):
                continue
            run_checked(transport, command, timeout=COMMAND_TIMEOUT_S)
            taken.append(host)
        return {"tag": intent["tag"], "taken_on": taken}

    def verify(
        self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any]:
        if not self.check(ctx, step, intent):
            raise VerificationFailed(
                f"snapshot {intent['tag']} is not listed on every host "
                f"({', '.join(intent['hosts'])})"
            )
        return {}


def confirm_drop(
    ui: RunUi, keyspace: str, who: str, environ: Mapping[str, str] = os.environ
) -> str:
    """How the operator confirmed dropping `keyspace` ("environment" or "typed"), or
    GateStopped. `--yes` alone never confirms it."""
    named = environ.get(CONFIRM_ENV)
    if named is not None:
        if named != keyspace:
            raise GateStopped(
                f"{CONFIRM_ENV} names keyspace '{named}', but the keyspace to drop is "
                f"'{keyspace}'; nothing dropped"
            )
        return "environment"
    if not ui.interactive:
        raise GateStopped(
            f"dropping keyspace '{keyspace}' cannot be undone and needs its name typed back at a "
            f"terminal; --yes does not confirm it. Resume from a terminal, or set "
            f"{CONFIRM_ENV}={keyspace} for an unattended run. Nothing was dropped."
        )
    import questionary

    ui.console.print(
        f"\nDropping keyspace '{keyspace}' deletes every ORS record left in Cassandra; it "
        "cannot be undone.",
        style="bold red",
        markup=False,
    )
    answer = questionary.text(f"{who}, type the keyspace name to drop it:").ask()
    if answer != keyspace:
        raise GateStopped(f"keyspace name not typed back; '{keyspace}' was not dropped")
    return "typed"


class DropKeyspace(Action):
    name = "cassandra_removal.drop_keyspace"
    scopes = frozenset({"site"})
    changes_world = True

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        cassandra = cassandra_of(view.site)
        return Preview(
            f"after the operator types the name back: DROP KEYSPACE IF EXISTS "
            f'"{cassandra.keyspace}" over CQL at {", ".join(cassandra.contact_points)}'
        )

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        keyspace = cassandra_of(ctx.site).keyspace
        method = confirm_drop(ctx.ui, keyspace, ctx.operator)
        return {"keyspace": keyspace, "confirmed_by": ctx.operator, "confirmation": method}

    def _exists(self, ctx: RunContext, keyspace: str) -> bool:
        from ors_migrate.actions.cassandra_checks import keyspace_exists

        return keyspace_exists(cassandra_of(ctx.site), ctx.cassandra_password(), keyspace)

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        return not self._exists(ctx, intent["keyspace"])

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        from ors_migrate.actions.cassandra_checks import drop_keyspace

        drop_keyspace(cassandra_of(ctx.site), ctx.cassandra_password(), intent["keyspace"])
        return {"dropped": intent["keyspace"]}

    def verify(
        self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any]:
        if self._exists(ctx, intent["keyspace"]):
            raise VerificationFailed(f"keyspace {intent['keyspace']} still exists")
        return {}


ACTIONS = [ReadyForRemoval, RemoveOptions, SnapshotKeyspace, DropKeyspace]

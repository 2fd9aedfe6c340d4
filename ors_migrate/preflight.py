"""`preflight`: every read-only check of the live estate before a run touches anything.

Hosts are reached and their keys checked, each HA pair's roles and versions read, the Redis
Cluster checked from here and from each ORS host, Cassandra checked, and the current option
values of every application read. Nothing is changed. A finding that blocks the migration is
an error; the exit code is 3 if any.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ors_migrate.errors import OrsMigrateError
from ors_migrate.options import PERSISTENCE, REDIS, TYPE, version_at_least
from ors_migrate.site import LoadedSite
from ors_migrate.step import CheckResult, Severity

ProbeResults = list[tuple[str, CheckResult]]


def _guard(
    target: str, check: str, fix: str, probe: Callable[[], list[CheckResult]]
) -> ProbeResults:
    """Run one probe; an error it raises becomes a blocking finding naming its cause, client
    library errors included (preflight never ends in an internal error)."""
    from ors_migrate.actions.client_errors import as_cause

    try:
        return [(target, r) for r in probe()]
    except OrsMigrateError as exc:
        return [(target, CheckResult(check, "error", str(exc), fix))]
    except Exception as exc:  # the net under every probe: a cause, never a traceback
        cause = as_cause(exc, target)
        message = str(cause) if cause else f"{target}: {type(exc).__name__}: {exc}"
        observed = {"error_type": type(exc).__name__}
        return [(target, CheckResult(check, "error", message, fix, observed))]


def _hosts(ctx: Any) -> ProbeResults:
    results: ProbeResults = []
    used = sorted({app.host for _, _, app in ctx.site.apps()})
    for name in used:

        def probe(name: str = name) -> list[CheckResult]:
            transport = ctx.pool.for_host(name)
            command = "exit 0" if transport.platform == "windows" else "true"
            result = transport.run(command, timeout=30)
            if result.exit_code != 0:
                return [
                    CheckResult(
                        "host.reachable",
                        "error",
                        f"`{command}` exited {result.exit_code} on {name}",
                        "check the login shell of the SSH user",
                    )
                ]
            how = ctx.site.hosts[name].transport
            return [CheckResult("host.reachable", "ok", f"{name} answers ({how})")]

        results += _guard(
            name,
            "host.reachable",
            "check the address, port, user, key and known_hosts entry of this host",
            probe,
        )
    return results


def _pairs(ctx: Any) -> ProbeResults:
    results: ProbeResults = []
    site = ctx.site
    for cluster, pair in site.pairs():

        def probe(pair: Any = pair) -> list[CheckResult]:
            statuses = ctx.services.pair_status(pair.name)
            found: list[CheckResult] = []
            roles = sorted(s.role for s in statuses.values())
            seen = ", ".join(f"{n}={s.role}" for n, s in statuses.items())
            if roles != ["backup", "primary"]:
                found.append(
                    CheckResult(
                        "ors.roles",
                        "error",
                        f"HA pair {pair.name} is not one primary and one backup: {seen}",
                        "bring both members up (one primary, one backup) first",
                    )
                )
            else:
                declared = pair.app_with_role("primary").name
                live = next(n for n, s in statuses.items() if s.role == "primary")
                note = (
                    ""
                    if live == declared
                    else f" (the site file says {declared}; roles are read live at run time)"
                )
                found.append(CheckResult("ors.roles", "ok", f"{pair.name}: {seen}{note}"))
            for name, status in statuses.items():
                version = status.version
                if version is None:
                    continue
                if version_at_least(version, site.ors.min_version):
                    found.append(CheckResult("ors.version", "ok", f"{name} runs {version}"))
                elif site.services.upgrade:
                    found.append(
                        CheckResult(
                            "ors.version",
                            "warning",
                            f"{name} runs {version}; the run upgrades it (prepare.3) "
                            "before Redis is enabled",
                        )
                    )
                else:
                    found.append(
                        CheckResult(
                            "ors.version",
                            "warning",
                            f"{name} runs {version}, below {site.ors.min_version}; "
                            "the run will ask an operator to upgrade it (prepare.3)",
                            f"install ORS {site.ors.min_version} or later, or set services.upgrade",
                        )
                    )
            return found

        results += _guard(
            f"{cluster.name}/{pair.name}",
            "ors.roles",
            "check the status command in the site's services",
            probe,
        )
    return results


def _options(ctx: Any) -> ProbeResults:
    results: ProbeResults = []
    if ctx.site.options_backend.kind == "manual":
        return [
            (
                "options",
                CheckResult(
                    "options.readable",
                    "warning",
                    "the manual option backend cannot read options; "
                    "the run will show each change to make",
                ),
            )
        ]
    for _, _, app in ctx.site.apps():

        def probe(app: Any = app) -> list[CheckResult]:
            values = ctx.option_store(app.name).read()
            current = values.get((PERSISTENCE, TYPE), "(unset: cassandra)")
            nodes = values.get((PERSISTENCE, "redis-nodes"))
            severity: Severity = "warning" if current == REDIS else "ok"
            message = f"{app.name}: [persistence] type={current}"
            if nodes:
                message += f", redis-nodes={nodes}"
            if current == REDIS:
                message += " (already on Redis)"
            return [
                CheckResult(
                    "options.current",
                    severity,
                    message,
                    observed={
                        k[0] + "/" + k[1]: v
                        for k, v in values.items()
                        if k[0] == PERSISTENCE and k[1] != "password"
                    },
                )
            ]

        results += _guard(
            app.name,
            "options.readable",
            "check the option backend settings (path or get_command) for this application",
            probe,
        )
    return results


def _redis(ctx: Any) -> ProbeResults:
    from ors_migrate.actions.redis_checks import cluster_health

    site = ctx.site

    def probe() -> list[CheckResult]:
        return cluster_health(
            site.redis,
            ctx.redis_password(),
            ors_app_memory_mb=[a.memory_mb for _, _, a in site.apps() if a.memory_mb],
            ha_pair_count=sum(1 for _ in site.pairs()),
        )

    return _guard(
        "redis", "redis.cluster", "check the Redis Cluster and the site's redis settings", probe
    )


def _from_ors_hosts(ctx: Any, unreachable: set[str]) -> ProbeResults:
    """Redis as each ORS host sees it (TCP, and with TLS its files and a handshake), checked on
    the host over its own transport; one host that cannot be reached does not hide the others,
    and is not dialled a second time."""
    from ors_migrate.actions.host_checks import check_host, ors_hosts

    results: ProbeResults = []
    for name in ors_hosts(ctx.site):
        if name in unreachable:
            not_checked = "Redis was not checked from this host: it cannot be reached"
            results.append((name, CheckResult("host.redis", "warning", not_checked)))
            continue

        def probe(name: str = name) -> list[CheckResult]:
            return check_host(ctx.site, name, ctx.pool.for_host(name))

        results += _guard(
            name,
            "host.redis",
            "check that the host runs a POSIX shell (Linux) or PowerShell (Windows)",
            probe,
        )
    return results


def _cassandra(ctx: Any) -> ProbeResults:
    cass = ctx.site.cassandra
    if cass is None:
        return []
    from ors_migrate.actions.cassandra_checks import check_cassandra

    def probe() -> list[CheckResult]:
        nodetool = ctx.pool.for_host(cass.nodetool_host) if cass.nodetool_host else None
        return check_cassandra(cass, ctx.cassandra_password(), nodetool=nodetool)

    return _guard("cassandra", "cassandra.reachable", "check the Cassandra contact points", probe)


def _static(loaded: LoadedSite) -> ProbeResults:
    from ors_migrate.rules import check_site

    return [
        ("site", CheckResult(f.rule, f.severity if f.severity != "info" else "ok", f.message))
        for f in check_site(loaded)
    ]


def run_preflight(loaded: LoadedSite, state_dir: Path, ui: Any) -> list[dict[str, Any]]:
    from ors_migrate.journal import Journal
    from ors_migrate.runner import build_context

    journal = Journal(state_dir, create=False)
    ctx = build_context(loaded, "preflight", journal, ui)
    try:
        findings = _static(loaded)
        for probe in (_hosts, _pairs, _options, _redis):
            findings += probe(ctx)
        unreachable = {t for t, r in findings if r.check == "host.reachable" and r.blocking}
        findings += _from_ors_hosts(ctx, unreachable)
        findings += _cassandra(ctx)
    finally:
        ctx.close()
        journal.close()
    return [{"target": target, **result.as_dict()} for target, result in findings]


def render_table(findings: list[dict[str, Any]], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="preflight", show_lines=False)
    for column in ("result", "check", "target", "what was seen", "fix"):
        table.add_column(column, overflow="fold")
    marks = {"ok": "ok", "warning": "WARN", "error": "FAIL"}
    for f in findings:
        cells = (
            marks.get(f["severity"], f["severity"]),
            f["check"],
            f["target"],
            f["message"],
            f["fix"] or "",
        )
        table.add_row(*(escape(str(c)) for c in cells))
    console.print(table)

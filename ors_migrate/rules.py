"""The documented ORS and Redis rules, as pure functions over the site and the options the
playbook would write. Each finding has a stable rule id, a severity and a message that says what
to change. No network."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ors_migrate.options import version_at_least, version_tuple
from ors_migrate.site import LoadedSite, Site


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # "error" | "warning"
    message: str
    field: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "field": self.field,
            "line": self.line,
        }


def rule_redis_cluster_only(site: Site) -> list[Finding]:
    if site.redis.mode != "cluster":
        return [
            Finding(
                "redis.cluster-only",
                "error",
                f"redis.mode is {site.redis.mode}: ORS supports Redis Cluster only; "
                "a standalone Redis or a Sentinel setup is not supported",
                "redis.mode",
            )
        ]
    return []


def rule_min_redis_nodes(site: Site) -> list[Finding]:
    if len(site.redis.nodes) < 3:
        return [
            Finding(
                "redis.min-nodes",
                "error",
                f"{len(site.redis.nodes)} Redis node(s) listed; use a Redis Cluster of at "
                "least 3 nodes",
                "redis.nodes",
            )
        ]
    return []


def rule_ors_version(site: Site) -> list[Finding]:
    findings = []
    for index, (_, _, app) in enumerate(site.apps()):
        if app.version is None:
            continue
        try:
            version_tuple(app.version)
        except ValueError as exc:
            findings.append(Finding("ors.version-syntax", "error", str(exc), f"app {app.name}"))
            continue
        if not version_at_least(app.version, site.ors.min_version) and not site.services.upgrade:
            findings.append(
                Finding(
                    "ors.min-version",
                    "warning",
                    f"{app.name} is declared at {app.version}; Redis persistence needs "
                    f"{site.ors.min_version} or later and the site has no upgrade command, so the "
                    "upgrade will be an operator step",
                    f"app {app.name}",
                )
            )
    return findings


RULES: list[Callable[[Site], list[Finding]]] = [
    rule_redis_cluster_only,
    rule_min_redis_nodes,
    rule_ors_version,
]


def check_site(loaded: LoadedSite) -> list[Finding]:
    findings: list[Finding] = []
    for rule in RULES:
        findings.extend(rule(loaded.site))
    return findings


def render_findings(path: str, findings: list[Finding]) -> str:
    if not findings:
        return f"{path}: valid"
    lines = []
    for f in findings:
        where = f"{path}:{f.line}" if f.line else path
        field = f" {f.field}:" if f.field else ""
        lines.append(f"{where}:{field} {f.severity}: {f.message} [{f.rule}]")
    errors = sum(1 for f in findings if f.severity == "error")
    lines.append(f"{errors} error(s), {len(findings) - errors} warning(s)")
    return "\n".join(lines)

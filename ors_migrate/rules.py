"""The documented ORS and Redis rules, as pure functions. No network.

Three kinds, by what they read:
- site rules read the site model (ORS version, Redis Cluster shape, TLS on Windows, ...);
- option rules read the ORS options one application will have when `type=redis` takes effect
  (`tls-cert` with `tls-key`, `redis-nodes` syntax, ...);
- plan rules read the playbook expanded against the site (`type=redis` last and in a later
  state, `sessionid-with-nodeid` first, one store per ORS cluster, the upgrade path).

Every rule has a stable id and one severity, declared where the rule is defined; a finding's
message says what to change. `check()` runs them all and names the file and line of each
finding: the site file, or the playbook for findings about a state.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ors_migrate.errors import InputError
from ors_migrate.options import (
    PERSISTENCE,
    REDIS,
    SESSIONID_WITH_NODEID,
    TYPE,
    preparation_changes,
    version_at_least,
    version_tuple,
)
from ors_migrate.site import LoadedSite, Site, field_path, parse_host_port

if TYPE_CHECKING:
    from ors_migrate.playbook import LoadedPlaybook
    from ors_migrate.step import Plan

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"

DOCUMENTED_MIN_VERSION = "8.1.401.10"
PAIRS_PER_THREE_NODES = 9
MIN_REDIS_NODES = 3
TRUE_VALUES = frozenset({"true", "1", "yes", "on"})
MANAGED_PERSISTENCE_OPTIONS = frozenset(
    {TYPE, "redis-nodes", "username", "password"}
    | {f"tls-{o}" for o in ("enabled", "cert", "key", "cacert", "cacertdir", "sni")}
)
OPTION_SOURCES: dict[str, tuple[str, ...]] = {
    "redis-nodes": ("redis", "nodes"),
    "tls-enabled": ("redis", "tls", "enabled"),
    "tls-cert": ("redis", "tls", "cert"),
    "tls-key": ("redis", "tls", "key"),
    "tls-cacert": ("redis", "tls", "cacert"),
    "tls-cacertdir": ("redis", "tls", "cacertdir"),
}

Loc = tuple[str | int, ...]
OptionValues = Mapping[tuple[str, str], str | None]


@dataclass(frozen=True)
class Finding:
    """One rule broken (error) or one recommendation not followed (warning), and where."""

    rule: str
    severity: Severity
    message: str
    loc: Loc = ()
    state: str | None = None
    file: str | None = None
    line: int | None = None

    @property
    def field(self) -> str | None:
        if self.state is not None:
            return f"state {self.state}"
        return field_path(self.loc) or None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "field": self.field,
        }


@dataclass(frozen=True)
class Problem:
    """What a rule function reports; the rule adds its id and severity."""

    message: str
    loc: Loc = ()
    state: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    summary: str
    check: Callable[..., Iterable[Problem]]

    def __call__(self, *args: Any) -> list[Finding]:
        return [
            Finding(self.id, self.severity, p.message, p.loc, p.state) for p in self.check(*args)
        ]


SITE_RULES: list[Rule] = []
OPTION_RULES: list[Rule] = []
PLAN_RULES: list[Rule] = []


def _rule(
    registry: list[Rule], rule_id: str, severity: Severity, summary: str
) -> Callable[[Callable[..., Iterable[Problem]]], Rule]:
    def register(check: Callable[..., Iterable[Problem]]) -> Rule:
        rule = Rule(rule_id, severity, summary, check)
        registry.append(rule)
        return rule

    return register


def all_rules() -> list[Rule]:
    return [*SITE_RULES, *OPTION_RULES, *PLAN_RULES]


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in TRUE_VALUES


def _below(version: str | None, minimum: str) -> bool:
    """True when `version` is declared, well-formed and below `minimum`."""
    try:
        return version is not None and not version_at_least(version, minimum)
    except ValueError:
        return False


def _names(items: Iterable[str]) -> str:
    return ", ".join(items)


# Site rules ------------------------------------------------------------------------------------


@_rule(SITE_RULES, "ors.version-syntax", ERROR, "ORS versions are dotted numbers (8.1.401.10)")
def ors_version_syntax(site: Site) -> Iterator[Problem]:
    declared: list[tuple[str | None, Loc]] = [
        (site.ors.min_version, ("ors", "min_version")),
        (site.ors.target_version, ("ors", "target_version")),
    ]
    declared += [(app.version, (*site.app_loc(app.name), "version")) for _, _, app in site.apps()]
    for version, loc in declared:
        if version is None:
            continue
        try:
            version_tuple(version)
        except ValueError:
            yield Problem(f"'{version}' is not an ORS version: write it as 8.1.401.12", loc)


@_rule(SITE_RULES, "ors.min-version", ERROR, "Redis persistence exists from ORS 8.1.401.10")
def ors_min_version(site: Site) -> Iterator[Problem]:
    ors = site.ors
    if _below(ors.min_version, DOCUMENTED_MIN_VERSION):
        yield Problem(
            f"ors.min_version is {ors.min_version}, but Redis persistence exists only from ORS "
            f"{DOCUMENTED_MIN_VERSION}: set it to {DOCUMENTED_MIN_VERSION} or later",
            ("ors", "min_version"),
        )
    if _below(ors.target_version, ors.min_version):
        yield Problem(
            f"ors.target_version {ors.target_version} is below ors.min_version "
            f"{ors.min_version}: the upgrade of prepare.3 would install a version without Redis "
            "persistence; set a target of at least the minimum",
            ("ors", "target_version"),
        )


@_rule(
    SITE_RULES,
    "ors.upgrade-manual",
    WARNING,
    "applications below the minimum version are upgraded in prepare.3",
)
def ors_upgrade_manual(site: Site) -> Iterator[Problem]:
    below = [a.name for _, _, a in site.apps() if _below(a.version, site.ors.min_version)]
    if below and not site.services.upgrade:
        yield Problem(
            f"{_names(below)} declared below {site.ors.min_version} and services.upgrade is not "
            "set: prepare.3 will wait for an operator to install ORS on each; add "
            "services.upgrade (placeholders {app} {version}) to automate it",
            ("services",),
        )


@_rule(SITE_RULES, "redis.cluster-only", ERROR, "ORS supports Redis Cluster only")
def redis_cluster_only(site: Site) -> Iterator[Problem]:
    if site.redis.mode != "cluster":
        yield Problem(
            f"redis.mode is {site.redis.mode}: ORS supports persistence with Redis Cluster only "
            "(a standalone Redis or a Sentinel setup is not supported); deploy a Redis Cluster "
            "and set mode: cluster",
            ("redis", "mode"),
        )


@_rule(SITE_RULES, "redis.min-nodes", ERROR, "a Redis Cluster of at least 3 nodes")
def redis_min_nodes(site: Site) -> Iterator[Problem]:
    count = len(set(site.redis.nodes))
    if count < MIN_REDIS_NODES:
        yield Problem(
            f"{count} distinct Redis node(s) listed: use a Redis Cluster of at least "
            f"{MIN_REDIS_NODES} nodes and list them in redis.nodes",
            ("redis", "nodes"),
        )


@_rule(SITE_RULES, "redis.capacity", WARNING, "about 9 ORS HA pairs per 3 Redis nodes")
def redis_capacity(site: Site) -> Iterator[Problem]:
    pairs = sum(1 for _ in site.pairs())
    nodes = len(set(site.redis.nodes))
    wanted = math.ceil(pairs * MIN_REDIS_NODES / PAIRS_PER_THREE_NODES)
    if nodes < wanted:
        yield Problem(
            f"{pairs} ORS HA pairs on {nodes} listed Redis node(s): the documented estimate is "
            f"about {PAIRS_PER_THREE_NODES} HA pairs per {MIN_REDIS_NODES} nodes, so plan for "
            f"{wanted} nodes (enable.3 monitors CPU and memory; preflight counts the masters)",
            ("redis", "nodes"),
        )


@_rule(SITE_RULES, "redis.node-memory", WARNING, "Redis node memory like the ORS application's")
def redis_node_memory(site: Site) -> Iterator[Problem]:
    node_mb = site.redis.node_memory_mb
    sized = [a for _, _, a in site.apps() if a.memory_mb is not None]
    if node_mb is None or not sized:
        return
    biggest = max(sized, key=lambda a: a.memory_mb or 0)
    if biggest.memory_mb and node_mb < biggest.memory_mb:
        yield Problem(
            f"redis.node_memory_mb is {node_mb} but {biggest.name} has {biggest.memory_mb} MB: "
            "give each Redis node about as much memory as the corresponding ORS application",
            ("redis", "node_memory_mb"),
        )


@_rule(SITE_RULES, "redis.aof", WARNING, "AOF persistence recommended on the Redis Cluster")
def redis_aof(site: Site) -> Iterator[Problem]:
    if site.redis.aof is False:
        yield Problem(
            "redis.aof is false: AOF persistence is recommended on the Redis Cluster "
            "(appendonly yes on every node)",
            ("redis", "aof"),
        )
    elif site.redis.aof is None:
        yield Problem(
            "AOF persistence is recommended on the Redis Cluster: turn it on and declare "
            "redis.aof: true (preflight checks every node)",
            ("redis",),
        )


@_rule(SITE_RULES, "redis.replicas", WARNING, "Redis Cluster high availability (replicas)")
def redis_replicas(site: Site) -> Iterator[Problem]:
    replicas = site.redis.replicas_per_master
    if replicas == 0:
        yield Problem(
            "redis.replicas_per_master is 0: high availability is recommended, add at least "
            "one replica per master",
            ("redis", "replicas_per_master"),
        )
    elif replicas is None:
        yield Problem(
            "high availability is recommended on the Redis Cluster: give every master a "
            "replica and declare redis.replicas_per_master (preflight checks them)",
            ("redis",),
        )


@_rule(SITE_RULES, "tls.windows", ERROR, "TLS to Redis is not available for ORS on Windows")
def tls_windows(site: Site) -> Iterator[Problem]:
    if not site.redis.tls.enabled:
        return
    apps_by_host: dict[str, list[str]] = {}
    for _, _, app in site.apps():
        apps_by_host.setdefault(app.host, []).append(app.name)
    for host, apps in apps_by_host.items():
        if site.hosts[host].platform == "windows":
            yield Problem(
                f"host {host} is windows and runs {_names(apps)}, but redis.tls.enabled is "
                "true: TLS is not available for ORS on Windows; turn TLS off or run these "
                "applications on Linux",
                ("hosts", host, "platform"),
            )


@_rule(SITE_RULES, "tls.settings-unused", WARNING, "TLS files are written only when TLS is on")
def tls_settings_unused(site: Site) -> Iterator[Problem]:
    tls = site.redis.tls
    given = [n for n in ("cert", "key", "cacert", "cacertdir", "sni") if getattr(tls, n)]
    if given and not tls.enabled:
        yield Problem(
            f"redis.tls has {_names(given)} but enabled is false, so no TLS option is written "
            "to ORS: set enabled: true (TLS on both sides) or remove them",
            ("redis", "tls", "enabled"),
        )


@_rule(SITE_RULES, "cassandra.version", ERROR, "a Cassandra version is written as 3.11.4")
def cassandra_version(site: Site) -> Iterator[Problem]:
    cassandra = site.cassandra
    if cassandra is None or cassandra.version is None:
        return
    if not cassandra.version.split(".")[0].isdigit():
        yield Problem(
            f"'{cassandra.version}' is not a Cassandra version: write it as 3.11.4",
            ("cassandra", "version"),
        )


@_rule(
    SITE_RULES,
    "cassandra.version-4",
    WARNING,
    "ORS could not have persisted sessions to Cassandra 4.x",
)
def cassandra_version_4(site: Site) -> Iterator[Problem]:
    """The documents say only that persistence cannot be enabled on Cassandra 4.x: no reason to
    block a move to Redis, but a reason to expect no sessions to restore from Cassandra."""
    cassandra = site.cassandra
    if cassandra is None or not cassandra.in_use or cassandra.version is None:
        return
    major = cassandra.version.split(".")[0]
    if major.isdigit() and int(major) > 3:
        yield Problem(
            f"Cassandra {cassandra.version}: the documents say ORS session persistence cannot "
            "be enabled on Cassandra 4.x, so ORS could not have persisted sessions there and "
            "none are restored from it; moving to Redis is still fine",
            ("cassandra", "version"),
        )


@_rule(
    SITE_RULES,
    "ors.digital-persistence-unset",
    WARNING,
    "disabling digital-session persistence is recommended",
)
def digital_persistence_unset(site: Site) -> Iterator[Problem]:
    if site.ors.digital_persistence is None:
        yield Problem(
            "ors.digital_persistence is not set: the documents recommend disabling persistence "
            "of digital (eServices) sessions but name no option for it; name the option of your "
            "ORS release that turns it off, as {section: ..., option: ..., value: 'false'}, so "
            "that prepare.4 writes it",
            ("ors",),
        )


@_rule(
    SITE_RULES,
    "ors.digital-persistence-enabled",
    ERROR,
    "digital-session persistence to Redis is disabled by design",
)
def digital_persistence_enabled(site: Site) -> Iterator[Problem]:
    digital = site.ors.digital_persistence
    if digital is not None and _is_true(digital.value):
        yield Problem(
            f"ors.digital_persistence sets [{digital.section}] {digital.option}={digital.value}, "
            "which turns digital-session persistence on: persistence of digital sessions to "
            "Redis is disabled by design; set value: 'false'",
            ("ors", "digital_persistence", "value"),
        )


@_rule(
    SITE_RULES,
    "options.managed-by-tool",
    ERROR,
    "options derived from the site are not set by hand",
)
def options_managed_by_tool(site: Site) -> Iterator[Problem]:
    for option in site.ors.extra_persistence_options:
        if option in MANAGED_PERSISTENCE_OPTIONS:
            yield Problem(
                f"ors.extra_persistence_options sets '{option}', which ors-migrate writes itself "
                "(type last, in enable.1 and enable.4; the others from redis.*, secrets from "
                "references): remove it",
                ("ors", "extra_persistence_options", option),
            )
    digital = site.ors.digital_persistence
    managed = {(PERSISTENCE, o) for o in MANAGED_PERSISTENCE_OPTIONS}
    managed.add((site.ors.sessionid_with_nodeid_section, SESSIONID_WITH_NODEID))
    if digital is not None and (digital.section, digital.option) in managed:
        yield Problem(
            f"ors.digital_persistence names [{digital.section}] {digital.option}, which "
            "ors-migrate writes itself: name the option of your ORS release that turns "
            "digital-session persistence off",
            ("ors", "digital_persistence", "option"),
        )


# Option rules: the options one application will have when type=redis takes effect -----------


def _host_port_list(value: str) -> bool:
    nodes = value.removesuffix(";").split(";")
    try:
        return all(n == n.strip() and parse_host_port(n) for n in nodes)
    except ValueError:
        return False


@_rule(OPTION_RULES, "redis.nodes-syntax", ERROR, "redis-nodes is host:port;host:port;...")
def redis_nodes_syntax(options: OptionValues) -> Iterator[Problem]:
    value = options.get((PERSISTENCE, "redis-nodes"))
    loc = OPTION_SOURCES["redis-nodes"]
    if value is None:
        if options.get((PERSISTENCE, TYPE)) == REDIS:
            yield Problem("type=redis is set but redis-nodes is not: list the Redis nodes", loc)
        return
    if not _host_port_list(value):
        yield Problem(
            f"redis-nodes '{value}' is not a list of host:port separated by ';' "
            "(for example redis-1:6379;redis-2:6379;redis-3:6379)",
            loc,
        )
        return
    counts = Counter(n for n in value.split(";") if n)
    doubled = sorted(n for n, count in counts.items() if count > 1)
    if doubled:
        yield Problem(f"redis-nodes lists {_names(doubled)} more than once", loc)


@_rule(OPTION_RULES, "tls.cert-key-pair", ERROR, "tls-cert and tls-key go together")
def tls_cert_key_pair(options: OptionValues) -> Iterator[Problem]:
    cert = options.get((PERSISTENCE, "tls-cert"))
    key = options.get((PERSISTENCE, "tls-key"))
    if bool(cert) != bool(key):
        given, missing = ("tls-cert", "tls-key") if cert else ("tls-key", "tls-cert")
        yield Problem(
            f"{given} is set without {missing}: if you specify one, you must also specify the "
            "other (set both redis.tls.cert and redis.tls.key, or neither)",
            OPTION_SOURCES[missing],
        )


@_rule(OPTION_RULES, "tls.ca-required", ERROR, "tls-cacert or tls-cacertdir when TLS is on")
def tls_ca_required(options: OptionValues) -> Iterator[Problem]:
    if not _is_true(options.get((PERSISTENCE, "tls-enabled"))):
        return
    if not (
        options.get((PERSISTENCE, "tls-cacert")) or options.get((PERSISTENCE, "tls-cacertdir"))
    ):
        yield Problem(
            "tls-enabled is true but neither tls-cacert nor tls-cacertdir is set: give "
            "redis.tls.cacert (a CA file) or redis.tls.cacertdir (a directory of certificates)",
            ("redis", "tls"),
        )


# Plan rules: the playbook expanded against the site -------------------------------------------


class OptionWrite(NamedTuple):
    """One option the plan writes to one application, in plan order. A tuple with its key and
    whether it enables Redis worked out once: 500 HA pairs make some 12,000 writes, which the
    plan rules read many times over."""

    state_index: int
    state_id: str
    section: str
    option: str
    new: str | None
    key: tuple[str, str]
    enables_redis: bool

    @classmethod
    def of(cls, state_index: int, state_id: str, row: Mapping[str, Any]) -> OptionWrite:
        """The write of one option-change row of a planned action."""
        key = (row["section"], row["option"])
        new = row["new"]
        enables = key == (PERSISTENCE, TYPE) and new == REDIS
        return cls(state_index, state_id, key[0], key[1], new, key, enables)


# While `check` runs, the option writes of the plan it checks (five rules read them).
_WRITES_BEING_CHECKED: dict[int, dict[str, list[OptionWrite]]] = {}


def option_writes(plan: Plan) -> dict[str, list[OptionWrite]]:
    """Every option write of the plan, per application, in execution order."""
    known = _WRITES_BEING_CHECKED.get(id(plan))
    if known is not None:
        return known
    writes: dict[str, list[OptionWrite]] = {}
    for index, state in enumerate(plan.states):
        for action in state.actions:
            app = action.target.app
            for row in action.preview.option_changes:
                if app is not None:
                    writes.setdefault(app, []).append(OptionWrite.of(index, state.id, row))
    return writes


def _first_enable(writes: list[OptionWrite]) -> OptionWrite | None:
    return next((w for w in writes if w.enables_redis), None)


def options_when_enabled(writes: list[OptionWrite]) -> dict[tuple[str, str], str | None]:
    """The values written up to and including the write of type=redis (all, if none)."""
    values: dict[tuple[str, str], str | None] = {}
    for write in writes:
        values[write.key] = write.new
        if write.enables_redis:
            break
    return values


@_rule(
    PLAN_RULES,
    "options.type-redis-last",
    ERROR,
    "type=redis only after every other persistence option, in a later state",
)
def type_redis_last(site: Site, plan: Plan) -> Iterator[Problem]:
    needed = [c.key for c in preparation_changes(site)]
    for app, writes in option_writes(plan).items():
        enable = _first_enable(writes)
        if enable is None:
            continue
        earlier = {w.key for w in writes if w.state_index < enable.state_index}
        missing = [f"[{s}] {o}" for s, o in needed if (s, o) not in earlier]
        if missing:
            yield Problem(
                f"{enable.state_id} sets type=redis on {app} before {_names(missing)} "
                "is configured: configure every other persistence option in an earlier state "
                "(prepare.4) and restart before enabling",
                state=enable.state_id,
            )
        late = sorted(
            {
                f"[{w.section}] {w.option} ({w.state_id})"
                for w in writes
                if w is not enable and not w.enables_redis and w.state_index >= enable.state_index
            }
        )
        if late:
            yield Problem(
                f"{app} gets type=redis in {enable.state_id} but {_names(late)} is written in "
                "the same or a later state: type=redis must be the last option set, alone in "
                "its state",
                state=enable.state_id,
            )


@_rule(
    PLAN_RULES,
    "options.sessionid-before-enable",
    ERROR,
    "sessionid-with-nodeid=true before Redis is enabled",
)
def sessionid_before_enable(site: Site, plan: Plan) -> Iterator[Problem]:
    key = (site.ors.sessionid_with_nodeid_section, SESSIONID_WITH_NODEID)
    for app, writes in option_writes(plan).items():
        enable = _first_enable(writes)
        if enable is None:
            continue
        before = [w for w in writes if w.key == key and w.state_index < enable.state_index]
        if not before or not _is_true(before[-1].new):
            now = before[-1].new if before else "not written"
            yield Problem(
                f"{enable.state_id} sets type=redis on {app} while [{key[0]}] "
                f"{SESSIONID_WITH_NODEID} is {now}: set it to true in an earlier state",
                state=enable.state_id,
            )


@_rule(
    PLAN_RULES,
    "ors.one-store-per-cluster",
    ERROR,
    "all ORS nodes of a cluster use the same persistent store once its phase completes",
)
def one_store_per_cluster(site: Site, plan: Plan) -> Iterator[Problem]:
    yield from _enable_states_cover_clusters(site, plan)
    writes = option_writes(plan)
    for cluster in site.ors_clusters:
        on_redis: list[str] = []
        elsewhere: list[str] = []
        for pair in cluster.ha_pairs:
            for app in pair.apps:
                types = [w.new for w in writes.get(app.name, []) if w.key == (PERSISTENCE, TYPE)]
                (on_redis if types and types[-1] == REDIS else elsewhere).append(app.name)
        if on_redis and elsewhere:
            yield Problem(
                f"at the end of the plan, {_names(on_redis)} of ORS cluster {cluster.name} "
                f"persist to Redis but {_names(elsewhere)} do not: every node of a cluster must "
                "use the same store, so enable Redis on the new backups too (enable.4)",
                state=plan.states[-1].id if plan.states else None,
            )


def _enable_states_cover_clusters(site: Site, plan: Plan) -> Iterator[Problem]:
    for state in plan.states:
        enabled_pairs = {
            a.target.ha_pair
            for a in state.actions
            for row in a.preview.option_changes
            if (row["section"], row["option"], row["new"]) == (PERSISTENCE, TYPE, REDIS)
        }
        for cluster in site.ors_clusters:
            names = [p.name for p in cluster.ha_pairs]
            left_out = [n for n in names if n not in enabled_pairs]
            if left_out and len(left_out) < len(names):
                yield Problem(
                    f"{state.id} enables Redis on part of ORS cluster {cluster.name} "
                    f"(not on {_names(left_out)}): an enable phase covers every HA pair of "
                    "the cluster",
                    state=state.id,
                )


@_rule(
    PLAN_RULES,
    "ors.upgrade-missing",
    ERROR,
    "ORS is at 8.1.401.10 or later before Redis is enabled (prepare.3)",
)
def upgrade_missing(site: Site, plan: Plan) -> Iterator[Problem]:
    upgraded_in: dict[str, int] = {}
    for index, state in enumerate(plan.states):
        for action in state.actions:
            if action.action == "ors.upgrade" and action.target.app:
                upgraded_in.setdefault(action.target.app, index)
    for app, writes in option_writes(plan).items():
        enable = _first_enable(writes)
        _, _, declared = site.find_app(app)
        if enable is None or not _below(declared.version, site.ors.min_version):
            continue
        if upgraded_in.get(app, len(plan.states)) >= enable.state_index:
            yield Problem(
                f"{app} is declared at {declared.version}, below {site.ors.min_version}, and "
                f"the playbook enables Redis on it in {enable.state_id} without upgrading it "
                "first: use a playbook with the ors.upgrade state (prepare.3), or upgrade it "
                "and update its version",
                (*site.app_loc(app), "version"),
            )


# Running every rule ---------------------------------------------------------------------------


def check_options(plan: Plan) -> list[Finding]:
    """The option rules on each application's options; the same finding is reported once."""
    found: dict[tuple[str, str], Finding] = {}
    checked: set[tuple[tuple[tuple[str, str], str | None], ...]] = set()
    for writes in option_writes(plan).values():
        values = options_when_enabled(writes)
        seen = tuple(sorted(values.items()))
        if seen in checked:
            continue  # the rules are pure: the same options give the same findings
        checked.add(seen)
        for rule in OPTION_RULES:
            for finding in rule(values):
                found.setdefault((finding.rule, finding.message), finding)
    return list(found.values())


def _locate(finding: Finding, loaded: LoadedSite, playbook: LoadedPlaybook | None) -> Finding:
    if finding.state is None:
        return replace(finding, file=loaded.path, line=loaded.document.line_of(finding.loc))
    if playbook is None:
        return finding
    index = next((i for i, s in enumerate(playbook.spec.states) if s.id == finding.state), None)
    line = playbook.document.line_of(("states", index)) if index is not None else None
    return replace(finding, file=playbook.path, line=line)


def check_site(loaded: LoadedSite) -> list[Finding]:
    """The site rules alone (no playbook), each finding with its line in the site file."""
    found = [f for rule in SITE_RULES for f in rule(loaded.site)]
    return [_locate(f, loaded, None) for f in found]


def check(loaded: LoadedSite, plan: Plan, playbook: LoadedPlaybook | None = None) -> list[Finding]:
    """Every rule on the site, its options and its plan; each finding with its file and line."""
    _WRITES_BEING_CHECKED[id(plan)] = option_writes(plan)
    try:
        found = check_options(plan) + [f for rule in PLAN_RULES for f in rule(loaded.site, plan)]
    finally:
        del _WRITES_BEING_CHECKED[id(plan)]
    located = check_site(loaded) + [_locate(f, loaded, playbook) for f in found]
    return sorted(located, key=lambda f: (f.file != loaded.path, f.file or "", f.line or 0))


def errors_in(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]


def render_findings(path: str, findings: list[Finding]) -> str:
    """`file:line: field: severity: message [rule]` lines and a count."""
    lines = []
    for f in findings:
        where = f.file or path
        if f.line:
            where += f":{f.line}"
        field = f" {f.field}:" if f.field else ""
        lines.append(f"{where}:{field} {f.severity}: {f.message} [{f.rule}]")
    errors = len(errors_in(findings))
    warnings = len(findings) - errors
    if errors:
        lines.append(f"{path}: {errors} error(s), {warnings} warning(s)")
    else:
        lines.append(f"{path}: valid" + (f", {warnings} warning(s)" if warnings else ""))
    return "\n".join(lines)


def findings_from_error(error: InputError) -> list[Finding]:
    """A file that could not be loaded, as error findings (one per located problem)."""
    problems = getattr(error, "problems", None) or [error]
    return [
        Finding(
            p.rule or "input",
            ERROR,
            p.detail,
            state=None,
            file=p.file,
            line=p.line,
            loc=(p.field,) if p.field else (),
        )
        for p in problems
    ]

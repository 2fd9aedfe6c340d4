"""The site file: what the operator's estate looks like, validated strictly.

Unknown keys are errors, secrets are references only, and every error names the file, line and
field. Nothing here touches the network. `site_json_schema()` publishes the same model as JSON
Schema for editors.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import re
import string
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from ors_migrate.errors import SiteError
from ors_migrate.yamlfile import LocatedDocument, load_yaml

SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+|prompt)$")
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9_.-]*):([0-9]{1,5})$")
SECRET_FIELDS = frozenset({"password", "key_passphrase"})
MAX_PROBLEMS_SHOWN = 10

Name = Annotated[
    str,
    Field(
        pattern=NAME,
        max_length=128,
        description="letters, digits, '_', '.', '-'; starts with a letter or digit",
    ),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class LocatedValueError(ValueError):
    """A cross-field problem found by a model validator, with the path (relative to the model)
    of the key to blame, so the error can name its line."""

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc


def parse_host_port(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) into its parts; ValueError with the rule on bad syntax."""
    match = HOST_PORT.match(value.strip())
    if not match:
        raise ValueError(f"'{value}' is not host:port")
    port = int(match.group(2))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} in '{value}' is outside 1-65535")
    return match.group(1).strip("[]"), port


def _host_port(value: str) -> str:
    parse_host_port(value)
    return value


HostPort = Annotated[
    str,
    AfterValidator(_host_port),
    WithJsonSchema({"type": "string", "pattern": HOST_PORT.pattern, "examples": ["redis-1:6379"]}),
]


class SecretRef(StrictModel):
    """A reference to a secret, never the secret itself: env:NAME, file:PATH or prompt."""

    ref: str

    def __str__(self) -> str:
        return self.ref


def _secret(value: Any) -> Any:
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str) or not SECRET_REF.match(value):
        raise ValueError(
            "secrets must be references (env:NAME, file:PATH or prompt), never inline values"
        )
    return SecretRef(ref=value)


Secret = Annotated[
    SecretRef,
    BeforeValidator(_secret),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": SECRET_REF.pattern,
            "description": "a reference: env:NAME, file:PATH or prompt; never the value",
        }
    ),
]


class SshSettings(StrictModel):
    """How to reach a host over SSH; `~/.ssh/config` is honoured."""

    address: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    key_file: str | None = None
    key_passphrase: Secret | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    ssh_config: str | None = "~/.ssh/config"
    jump_host: str | None = Field(
        default=None, description="one ProxyJump hop: [user@]host[:port], looked up in ssh_config"
    )
    accept_new_host_key: bool = False
    connect_timeout_s: float = Field(default=10.0, gt=0)
    command_timeout_s: float = Field(default=300.0, gt=0)
    keepalive_s: int = Field(default=15, ge=0)


JUMP_SPEC = re.compile(r"^(?:[^@\s,]+@)?(?:\[[0-9A-Fa-f:.]+\]|[^@:\s,\[\]]+)(?::\d{1,5})?$")


def _check_jump_chain(hosts: dict[str, Host], start: str) -> None:
    """The jump chain from `start`, as the SSH transport builder will follow it: every hop that
    names a site host must be an SSH host, the chain must not come back on itself, and a hop
    that names no site host must be one `[user@]host[:port]` hop with a domain name or IP
    address, or a Host of the ssh config (a bare unknown name is most likely a typo)."""
    chain: list[str] = []
    name = start
    while True:
        host = hosts[name]
        jump = host.ssh.jump_host if host.ssh and host.transport == "ssh" else None
        if jump is None:
            return
        loc: tuple[str | int, ...] = ("hosts", name, "ssh", "jump_host")
        chain.append(name)
        if jump in chain:
            raise LocatedValueError(
                f"jump hosts form a cycle: {' -> '.join((*chain, jump))}",
                ("hosts", start, "ssh", "jump_host"),
            )
        if jump in hosts:
            if hosts[jump].transport != "ssh":
                raise LocatedValueError(
                    f"host '{name}' jumps through '{jump}', which is not an SSH host "
                    f"(its transport is {hosts[jump].transport})",
                    loc,
                )
            name = jump
            continue
        if not JUMP_SPEC.match(jump) or not known_jump(jump, host.ssh):
            close = difflib.get_close_matches(jump.split("@")[-1], list(hosts), n=1)
            hint = f"; did you mean the site host '{close[0]}'?" if close else ""
            raise LocatedValueError(
                f"jump host '{jump}' of host '{name}' is unknown: not a site host (defined: "
                f"{', '.join(sorted(hosts))}), not a Host of the ssh config, and not one "
                f"[user@]host[:port] hop with a domain name or IP address{hint}",
                loc,
            )
        return


def known_jump(spec: str, ssh: SshSettings | None) -> bool:
    """A jump hop outside the site is known when it names a domain or an IP address, or a
    `Host` pattern of the ssh config matches it (a bare name would otherwise be a typo)."""
    hostname = spec.split("@")[-1]
    hostname = hostname.rsplit(":", 1)[0] if hostname.count(":") == 1 else hostname
    if "." in hostname or ":" in hostname:
        return True
    config = Path(ssh.ssh_config).expanduser() if ssh and ssh.ssh_config else None
    try:
        text = config.read_text(encoding="utf-8", errors="replace") if config else ""
    except OSError:
        return False
    for line in text.splitlines():
        words = line.strip().split()
        if len(words) >= 2 and words[0].lower() == "host":
            if any(fnmatch.fnmatch(hostname, p) and p != "*" for p in words[1:]):
                return True
    return False


class Host(StrictModel):
    """A machine that runs ORS applications (or Cassandra's nodetool)."""

    transport: Literal["local", "ssh"] = "ssh"
    platform: Literal["linux", "windows"] = "linux"
    ssh: SshSettings | None = None
    ors_account: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*[$]?$",
        description="the account ORS runs as on this host; the host-side checks read the "
        "Redis TLS files as it (when not given: the owner of the running ORS process)",
    )

    @model_validator(mode="after")
    def _ssh_only_for_ssh(self) -> Host:
        if self.transport == "local" and self.ssh is not None:
            raise LocatedValueError(
                "'ssh' settings given for a host with transport 'local'", ("ssh",)
            )
        return self


SERVICE_PLACEHOLDERS = frozenset({"app", "host", "cluster", "pair", "peer", "install_dir"})
SWITCHOVER_PLACEHOLDERS = SERVICE_PLACEHOLDERS | {"primary", "backup"}
UPGRADE_PLACEHOLDERS = SERVICE_PLACEHOLDERS | {"version"}
BACKEND_PLACEHOLDERS = frozenset({"app", "host", "cluster", "pair"})
SET_COMMAND_PLACEHOLDERS = BACKEND_PLACEHOLDERS | {"changes_file"}
FIPS_PATH_PLACEHOLDERS = frozenset({"host", "app", "install_dir"})
LCA_RESTART_PLACEHOLDERS = frozenset({"host", "env_file"})
SNAPSHOT_PLACEHOLDERS = frozenset({"tag", "keyspace"})
# Every template field of the site file and the placeholders it may use: the one source the
# model's validators and the wizard's answer checks read.
KEY_PATTERN_PLACEHOLDERS = frozenset({"cluster", "pair", "app"})
TEMPLATE_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "options_backend.path": BACKEND_PLACEHOLDERS,
    "options_backend.get_command": BACKEND_PLACEHOLDERS,
    "options_backend.set_command": SET_COMMAND_PLACEHOLDERS,
    **{
        f"services.{name}": SERVICE_PLACEHOLDERS
        for name in ("start", "stop", "status", "version", "sessions", "log")
    },
    "services.switchover": SWITCHOVER_PLACEHOLDERS,
    "services.upgrade": UPGRADE_PLACEHOLDERS,
    "cassandra.removal.snapshot_command": SNAPSHOT_PLACEHOLDERS,
    "cassandra.removal.list_snapshots_command": SNAPSHOT_PLACEHOLDERS,
    "ors.fips.lca_env_file": FIPS_PATH_PLACEHOLDERS,
    "ors.fips.openssl": FIPS_PATH_PLACEHOLDERS,
    "ors.fips.windows_config_dir": FIPS_PATH_PLACEHOLDERS,
    "ors.fips.lca_restart": LCA_RESTART_PLACEHOLDERS,
    "verification.app_key_pattern": KEY_PATTERN_PLACEHOLDERS,
}


def check_template(value: str | None, allowed: frozenset[str]) -> str | None:
    """A command or path template may use only its own {placeholders}; a literal brace is
    written doubled, as in `awk '{{print $1}}'`."""
    if value is None:
        return value
    hint = f"placeholders here: {', '.join('{' + a + '}' for a in sorted(allowed))}; " + (
        "write a literal brace doubled ({{ or }})"
    )
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        raise ValueError(f"'{value}' is not a valid template ({exc}); {hint}") from None
    for name in fields:
        if name not in allowed:
            raise ValueError(f"unknown placeholder {{{name}}} in '{value}'; {hint}")
    return value


def _templates(section: str, *names: str) -> Any:
    """Validate each named field of `section` against its entry in TEMPLATE_PLACEHOLDERS."""

    def check(value: str | None, info: ValidationInfo) -> str | None:
        return check_template(value, TEMPLATE_PLACEHOLDERS[f"{section}.{info.field_name}"])

    return field_validator(*names)(check)


class OptionsBackend(StrictModel):
    """Where application options are read and written (SPEC 3.4)."""

    kind: Literal["ini-file", "command", "manual"] = "ini-file"
    path: str | None = Field(
        default=None, description="ini-file: path template; placeholders {app} {cluster} {pair}"
    )
    backup_suffix: str = ".ors-migrate.bak"
    get_command: str | None = None
    set_command: str | None = None

    _check_templates = _templates("options_backend", "path", "get_command", "set_command")

    @model_validator(mode="after")
    def _fields_for_kind(self) -> OptionsBackend:
        if self.kind == "ini-file" and not self.path:
            raise LocatedValueError(
                "the ini-file backend needs 'path' (placeholders: {app} {cluster} {pair})",
                ("kind",),
            )
        if self.kind == "command" and not (self.get_command and self.set_command):
            raise LocatedValueError(
                "the command backend needs both 'get_command' and 'set_command'", ("kind",)
            )
        return self


class Services(StrictModel):
    """Site commands for the Management Layer; placeholders {app} {host} {cluster} {pair}."""

    start: str
    stop: str
    status: str
    switchover: str
    version: str | None = None
    sessions: str | None = None
    upgrade: str | None = Field(
        default=None, description="installs ORS {version} for {app}; without it, an operator step"
    )
    log: str | None = Field(
        default=None,
        description="prints the last lines of {app}'s log; shown when it cannot start",
    )
    ready_timeout_s: float = Field(default=120.0, gt=0)
    poll_interval_s: float = Field(default=0.5, gt=0)

    _check_templates = _templates(
        "services",
        "start",
        "stop",
        "status",
        "version",
        "sessions",
        "switchover",
        "upgrade",
        "log",
    )


class App(StrictModel):
    """One ORS Application object."""

    name: Name
    host: str = Field(description="a key of 'hosts'")
    role: Literal["primary", "backup"] = Field(description="the role now; checked at run time")
    memory_mb: int | None = Field(default=None, gt=0)
    version: str | None = Field(default=None, description="installed ORS version, e.g. 8.1.401.12")
    install_dir: str | None = None
    options_path: str | None = None


class HaPair(StrictModel):
    """A primary and its warm-standby backup."""

    name: Name
    apps: list[App]

    @model_validator(mode="after")
    def _one_primary_one_backup(self) -> HaPair:
        roles = sorted(a.role for a in self.apps)
        if roles != ["backup", "primary"]:
            raise LocatedValueError(
                "an HA pair has exactly two applications: one with role primary, one with "
                "role backup",
                ("apps",),
            )
        return self

    def app_with_role(self, role: str) -> App:
        return next(a for a in self.apps if a.role == role)


class OrsCluster(StrictModel):
    """An ORS cluster; its name is the `ORS:<name>` key prefix in Redis."""

    name: Name
    ha_pairs: list[HaPair] = Field(min_length=1)


class TlsSettings(StrictModel):
    """TLS between ORS and Redis (not available for ORS on Windows)."""

    enabled: bool = False
    cert: str | None = None
    key: str | None = None
    cacert: str | None = None
    cacertdir: str | None = None
    sni: str | None = None


class MonitorSettings(StrictModel):
    """The Redis monitoring window (seed enable.3). The documents give no thresholds: these are
    ors-migrate's own, and a load above them stops the run at a gate, never a rollback."""

    window_s: float = Field(default=60.0, gt=0)
    interval_s: float = Field(default=1.0, gt=0)
    max_cpu_percent: float = Field(
        default=80.0, gt=0, le=100, description="ours, not the documents': average CPU per node"
    )
    max_memory_percent: float = Field(
        default=80.0, gt=0, le=100, description="ours, not the documents': average memory use"
    )


class QuietSwitchover(StrictModel):
    """Before the first switchover of each HA pair (enable.1: the sessions in progress there
    are lost, they are not in Redis yet), wait for a quiet moment on its primary, read with
    `services.sessions`. The documents give no such policy: it and its defaults are ours."""

    policy: Literal["lowest", "below"] = Field(
        default="lowest",
        description="ours: 'lowest' switches at (or near) the lowest number in progress the "
        "wait has seen; 'below' as soon as fewer than `below` are in progress",
    )
    window_s: float = Field(default=120.0, gt=0, description="ours: how long one pair may wait")
    watch_s: float | None = Field(
        default=None,
        ge=0,
        description="lowest: only watch this long before switching (default: a third of window_s)",
    )
    margin: int = Field(
        default=0, ge=0, description="lowest: switch at most this many above the lowest seen"
    )
    below: int | None = Field(default=None, gt=0, description="below: the number to go under")

    @model_validator(mode="after")
    def _settings_of_the_policy(self) -> QuietSwitchover:
        if self.policy == "below" and self.below is None:
            raise LocatedValueError("policy 'below' needs `below`: the number to go under", ())
        if self.watch_s is not None and self.watch_s > self.window_s:
            raise LocatedValueError("watch_s is longer than window_s", ("watch_s",))
        return self


class VerificationSettings(StrictModel):
    """How long the verifications wait for fresh evidence. The documents give no windows: the
    defaults are ors-migrate's own, sized for a quiet maintenance window (few calls at night).
    When a window ends without evidence the run stops at a gate (wait longer / roll back /
    stop), never a pass and never a rollback by itself."""

    new_sessions_window_s: float = Field(
        default=300.0, gt=0, description="ours: wait this long for a primary's new session"
    )
    serialization_window_s: float = Field(
        default=300.0, gt=0, description="ours: wait this long for new ORS keys in Redis"
    )
    restore_window_s: float = Field(
        default=60.0, gt=0, description="ours: wait this long for a restore report"
    )
    app_key_pattern: str | None = Field(
        default=None,
        description="a Redis glob matching the keys of one ORS application (placeholders "
        "{cluster} {pair} {app}), where session ids carry its node id; makes serialization "
        "evidence per application instead of per ORS cluster",
    )

    _check_pattern = _templates("verification", "app_key_pattern")


class RedisSettings(StrictModel):
    """The Redis Cluster ORS will persist to."""

    mode: Literal["cluster", "standalone", "sentinel"] = Field(
        default="cluster", description="only 'cluster' is supported by ORS"
    )
    nodes: list[HostPort] = Field(min_length=1, description="host:port of the cluster's nodes")
    username: str | None = None
    password: Secret | None = None
    tls: TlsSettings = TlsSettings()
    node_memory_mb: int | None = Field(default=None, gt=0)
    aof: bool | None = Field(default=None, description="AOF persistence is on (recommended)")
    replicas_per_master: int | None = Field(
        default=None, ge=0, description="replicas of each master (at least 1 recommended)"
    )
    connect_timeout_s: float = Field(default=5.0, gt=0)
    monitor: MonitorSettings = MonitorSettings()

    def endpoints(self) -> list[tuple[str, int]]:
        return [parse_host_port(n) for n in self.nodes]


class CassandraRemoval(StrictModel):
    """How `remove-cassandra` (seed post.1) takes Cassandra out of ORS: the persistence options
    removed from every application, and whether the ORS keyspace is snapshotted and dropped."""

    section: str = "persistence"
    options: list[str] | None = Field(
        default=None,
        description="the Cassandra options to remove (the documents name none); without it, "
        "the options of `section` whose names begin with 'cassandra', as found in each "
        "application's options at run time",
    )
    drop_keyspace: bool = False
    snapshot: bool = True
    snapshot_hosts: list[str] = Field(default_factory=list)
    snapshot_command: str = "nodetool snapshot -t {tag} {keyspace}"
    list_snapshots_command: str = "nodetool listsnapshots"

    _check_templates = _templates("cassandra.removal", "snapshot_command", "list_snapshots_command")


class CassandraSettings(StrictModel):
    """The Cassandra cluster ORS persists to before the migration."""

    in_use: bool = True
    contact_points: list[HostPort] = Field(default_factory=list)
    thrift_port: int = Field(default=9160, ge=1, le=65535)
    keyspace: str = "orchestration"
    version: str | None = Field(default=None, description="e.g. 3.11.4; ORS needs 3.x or lower")
    username: str | None = None
    password: Secret | None = None
    nodetool_host: str | None = Field(default=None, description="a key of 'hosts'")
    nodetool_command: str = "nodetool version"
    connect_timeout_s: float = Field(default=5.0, gt=0)
    removal: CassandraRemoval = CassandraRemoval()


class OptionRef(StrictModel):
    section: str
    option: str
    value: str


class FipsSettings(StrictModel):
    """FIPS mode for ORS (seed "Configuring FIPS for ORS on Windows / on Linux"). Paths may use
    {host}, {app} and {install_dir}."""

    lca_env_file: str | None = None
    lca_restart: str | None = None
    openssl: str = "openssl"
    security_pack_dir: str | None = None
    windows_config_dir: str | None = None
    verify_providers: bool = True

    _check_templates = _templates(
        "ors.fips", "lca_env_file", "openssl", "windows_config_dir", "lca_restart"
    )


class OrsSettings(StrictModel):
    """Site-wide ORS settings."""

    min_version: str = "8.1.401.10"
    target_version: str | None = Field(default=None, description="version the upgrade installs")
    sessionid_with_nodeid_section: str = "orchestration"
    extra_persistence_options: dict[str, str] = Field(default_factory=dict)
    digital_persistence: OptionRef | None = Field(
        default=None,
        description="the option of your ORS release that turns digital-session persistence "
        "off (the documents recommend it but name no option), as {section, option, "
        "value: 'false'}",
    )
    fips_enabled: bool | None = None
    fips: FipsSettings = FipsSettings()


class RehearsalOf(StrictModel):
    """Written by `ors-migrate lab up --from SITE`: the site file this lab site rehearses."""

    site: str = Field(description="path of the production site file")
    name: Name = Field(description="its site name")
    sha256: str = Field(description="SHA-256 of that file when the lab was made")


class StepDurations(StrictModel):
    """How long this site's slow steps take, in seconds: the plan's estimate and `run
    --window-end` use them before any earlier run of the site has measured them."""

    restart_s: float | None = Field(
        default=None, gt=0, description="one ORS restart until it runs as backup"
    )
    switchover_s: float | None = Field(
        default=None, gt=0, description="one switchover until the pair has settled"
    )
    upgrade_s: float | None = Field(default=None, gt=0, description="one ORS upgrade")


class Site(StrictModel):
    """An ors-migrate site file."""

    version: Literal[1] = 1
    name: Name
    hosts: dict[str, Host] = Field(min_length=1)
    options_backend: OptionsBackend
    services: Services
    ors: OrsSettings = OrsSettings()
    ors_clusters: list[OrsCluster] = Field(min_length=1)
    redis: RedisSettings
    cassandra: CassandraSettings | None = None
    rehearsal_of: RehearsalOf | None = Field(
        default=None, description="set in a lab's site file made by `lab up --from`"
    )
    verification: VerificationSettings = VerificationSettings()
    durations: StepDurations | None = None
    quiet_switchover: QuietSwitchover | None = None

    @model_validator(mode="after")
    def _references_and_uniqueness(self) -> Site:
        seen: dict[str, set[str]] = {"ORS cluster": set(), "HA pair": set(), "application": set()}

        def once(kind: str, name: str, loc: tuple[str | int, ...]) -> None:
            if name in seen[kind]:
                raise LocatedValueError(f"{kind} '{name}' is named twice", loc)
            seen[kind].add(name)

        for c, cluster in enumerate(self.ors_clusters):
            once("ORS cluster", cluster.name, ("ors_clusters", c, "name"))
            for p, pair in enumerate(cluster.ha_pairs):
                once("HA pair", pair.name, ("ors_clusters", c, "ha_pairs", p, "name"))
                for a, app in enumerate(pair.apps):
                    loc = ("ors_clusters", c, "ha_pairs", p, "apps", a)
                    once("application", app.name, (*loc, "name"))
                    if app.host not in self.hosts:
                        raise LocatedValueError(
                            f"application '{app.name}' runs on host '{app.host}', which is not "
                            f"defined under 'hosts' (defined: {', '.join(sorted(self.hosts))})",
                            (*loc, "host"),
                        )
        nodetool = self.cassandra.nodetool_host if self.cassandra else None
        if nodetool is not None and nodetool not in self.hosts:
            raise LocatedValueError(
                f"cassandra.nodetool_host '{nodetool}' is not defined under 'hosts'",
                ("cassandra", "nodetool_host"),
            )
        for name in self.hosts:
            _check_jump_chain(self.hosts, name)
        if self.quiet_switchover is not None and not self.services.sessions:
            raise LocatedValueError(
                "quiet_switchover reads the sessions in progress: it needs services.sessions",
                ("quiet_switchover",),
            )
        return self

    # Navigation helpers used by the planner, the rules and the engine.
    def pairs(self) -> Iterator[tuple[OrsCluster, HaPair]]:
        for cluster in self.ors_clusters:
            for pair in cluster.ha_pairs:
                yield cluster, pair

    def apps(self) -> Iterator[tuple[OrsCluster, HaPair, App]]:
        for cluster, pair in self.pairs():
            for app in pair.apps:
                yield cluster, pair, app

    @functools.cached_property
    def _apps_by_name(self) -> dict[str, tuple[OrsCluster, HaPair, App]]:
        """The first application of each name (a site with 1,000 is planned in 10,000 steps,
        each looking its application up)."""
        found: dict[str, tuple[OrsCluster, HaPair, App]] = {}
        for entry in self.apps():
            found.setdefault(entry[2].name, entry)
        return found

    @functools.cached_property
    def _pairs_by_name(self) -> dict[str, tuple[OrsCluster, HaPair]]:
        found: dict[str, tuple[OrsCluster, HaPair]] = {}
        for entry in self.pairs():
            found.setdefault(entry[1].name, entry)
        return found

    def find_app(self, name: str) -> tuple[OrsCluster, HaPair, App]:
        return self._apps_by_name[name]

    def find_pair(self, name: str) -> tuple[OrsCluster, HaPair]:
        return self._pairs_by_name[name]

    def placeholder_values(self, app_name: str) -> dict[str, str]:
        """What an application's {placeholders} stand for in the site's commands and paths
        (SERVICE_PLACEHOLDERS; the backend's and the FIPS paths' are a subset)."""
        known = self._placeholders
        if app_name not in known:
            cluster, pair, app = self.find_app(app_name)
            known[app_name] = {
                "app": app.name,
                "host": app.host,
                "cluster": cluster.name,
                "pair": pair.name,
                "peer": next(a.name for a in pair.apps if a.name != app_name),
                "install_dir": app.install_dir or "",
            }
        return dict(known[app_name])

    @functools.cached_property
    def _placeholders(self) -> dict[str, dict[str, str]]:
        """placeholder_values by application, filled as they are asked for."""
        return {}

    def options_path(self, app_name: str) -> str:
        """Where the ini-file backend finds an application's options: its own `options_path`,
        or the backend's template filled in ({app} {cluster} {pair} {host})."""
        _, _, app = self.find_app(app_name)
        if app.options_path:
            return app.options_path
        template = self.options_backend.path or ""
        return template.format_map(self.placeholder_values(app_name))

    def app_loc(self, name: str) -> tuple[str | int, ...]:
        """The path of keys to an application in the site file, to name its line."""
        return self._app_locs[name]

    @functools.cached_property
    def _app_locs(self) -> dict[str, tuple[str | int, ...]]:
        found: dict[str, tuple[str | int, ...]] = {}
        for c, cluster in enumerate(self.ors_clusters):
            for p, pair in enumerate(cluster.ha_pairs):
                for a, app in enumerate(pair.apps):
                    found.setdefault(app.name, ("ors_clusters", c, "ha_pairs", p, "apps", a))
        return found


@dataclass(frozen=True)
class LoadedSite:
    """A validated site and where it came from."""

    site: Site
    path: str
    digest: str
    document: LocatedDocument


def field_path(loc: tuple[str | int, ...]) -> str:
    """`('redis', 'nodes', 1)` as `redis.nodes[1]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    # pydantic adds the name of a union member or a validator to loc; keep only real keys.
    return tuple(
        p for p in loc if isinstance(p, int) or not str(p).startswith(("function-", "literal["))
    )


def _unwrap(annotation: Any) -> Any:
    """The model or container inside Annotated[...] and X | None."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that holds the keys at `loc`, if the path leads to one."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) in (list, dict):
            current = get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_key(root: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    key = str(loc[-1])
    model = _model_at(root, loc[:-1])
    if model is None:
        return f"unknown key '{key}'"
    known = list(model.model_fields)
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key '{key}'; did you mean '{close[0]}'?"
    return f"unknown key '{key}' (allowed here: {', '.join(known)})"


EXPECTED = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list (lines starting with '- ')",
    "dict_type": "a mapping of keys to values",
    "model_type": "a mapping of keys to values",
    "model_attributes_type": "a mapping of keys to values",
}


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(err: ErrorDetails, loc: tuple[str | int, ...], root: type[BaseModel]) -> str:
    """A message that says what is expected and what was found (never a secret's value)."""
    kind = err["type"]
    msg = err["msg"].removeprefix("Value error, ")
    reveal = not (loc and str(loc[-1]) in SECRET_FIELDS)
    got = f", got {_shown(err.get('input'))}" if reveal else ""
    if kind == "extra_forbidden":
        return _unknown_key(root, loc)
    if kind in EXPECTED:
        return f"expected {EXPECTED[kind]}{got}"
    if kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME:
        return f"names use letters, digits, '_', '.' and '-' and start with a letter or digit{got}"
    if kind == "too_short":
        return f"must list at least {err.get('ctx', {}).get('min_length', 1)} item(s)"
    if kind == "value_error":
        return msg
    return msg.replace("Input should be", "must be") + got


def _problem(err: ErrorDetails, document: LocatedDocument, root: type[BaseModel]) -> SiteError:
    loc = _clean_loc(tuple(err["loc"]))
    located = err.get("ctx", {}).get("error")
    if isinstance(located, LocatedValueError):
        loc = (*loc, *located.loc)
    return SiteError(
        _describe(err, loc, root),
        file=document.path,
        line=document.line_of(loc),
        field=field_path(loc) or None,
        rule=f"schema.{err['type']}",
    )


def _missing_fields(errors: list[ErrorDetails], document: LocatedDocument) -> list[SiteError]:
    """One problem per mapping that lacks required keys, naming them all."""
    by_parent: dict[tuple[str | int, ...], list[str]] = {}
    for err in errors:
        if err["type"] == "missing":
            loc = _clean_loc(tuple(err["loc"]))
            by_parent.setdefault(loc[:-1], []).append(str(loc[-1]))
    problems = []
    for parent, names in by_parent.items():
        listed = ", ".join(f"'{n}'" for n in names)
        if len(names) == 1:
            message, field = f"required field {listed} is missing", field_path((*parent, *names))
        else:
            message, field = f"required fields {listed} are missing", field_path(parent)
        problems.append(
            SiteError(
                message,
                file=document.path,
                line=document.line_of(parent),
                field=field or None,
                rule="schema.missing",
            )
        )
    return problems


class SiteProblems(SiteError):
    """Every schema problem of one file, each with its line and field, in file order. The
    first one is the error's own file, line, field and rule."""

    def __init__(self, problems: list[SiteError]) -> None:
        self.problems = problems
        first = problems[0]
        super().__init__(
            first.detail, file=first.file, line=first.line, field=first.field, rule=first.rule
        )

    def render(self) -> str:
        shown = [p.render() for p in self.problems[:MAX_PROBLEMS_SHOWN]]
        hidden = len(self.problems) - len(shown)
        if hidden:
            shown.append(f"... and {hidden} more problem{'s' if hidden > 1 else ''}")
        return "\n".join(shown)


def site_error_from_validation(
    exc: ValidationError, document: LocatedDocument, root: type[BaseModel] | None = None
) -> SiteError:
    """Every validation error, each with its file, line and field (`root` names the keys an
    unknown one may have meant; the site model by default)."""
    errors = exc.errors(include_url=False)
    problems = [_problem(e, document, root or Site) for e in errors if e["type"] != "missing"]
    problems += _missing_fields(errors, document)
    problems.sort(key=lambda p: p.line or 0)
    return SiteProblems(problems) if len(problems) > 1 else problems[0]


def load_site(path: str | Path) -> LoadedSite:
    """Read, parse and validate a site file; SiteError names the file, line and field."""
    document = load_yaml(path, SiteError, "site file")
    try:
        site = Site.model_validate(document.data())
    except ValidationError as exc:
        raise site_error_from_validation(exc, document) from None
    raw = Path(path).read_bytes()
    return LoadedSite(site, str(path), hashlib.sha256(raw).hexdigest(), document)


def site_json_schema() -> dict[str, Any]:
    """The site file's JSON Schema (draft 2020-12), for editors and CI linters."""
    schema = Site.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ors-migrate site file",
        **{k: v for k, v in schema.items() if k != "title"},
    }

"""The site file: what the operator's estate looks like, validated strictly.

Unknown keys are errors, secrets are references only, and every error names the file, line and
field. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ors_migrate.errors import SiteError
from ors_migrate.yamlfile import LocatedDocument, load_yaml

SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+|prompt)$")
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9_.-]*):([0-9]{1,5})$")

Name = Annotated[str, Field(pattern=NAME, max_length=128)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def parse_host_port(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) into its parts; ValueError with the rule on bad syntax."""
    match = HOST_PORT.match(value.strip())
    if not match:
        raise ValueError(f"'{value}' is not host:port")
    port = int(match.group(2))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} in '{value}' is outside 1-65535")
    return match.group(1).strip("[]"), port


class SecretRef(StrictModel):
    """A reference to a secret, never the secret itself: env:NAME, file:PATH or prompt."""

    ref: str

    def __str__(self) -> str:
        return self.ref


def _secret(value: Any) -> Any:
    if value is None or isinstance(value, SecretRef):
        return value
    if not isinstance(value, str) or not SECRET_REF.match(value):
        raise ValueError(
            "secrets must be references (env:NAME, file:PATH or prompt), never inline values"
        )
    return SecretRef(ref=value)


class SshSettings(StrictModel):
    address: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    key_file: str | None = None
    key_passphrase: SecretRef | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    ssh_config: str | None = "~/.ssh/config"
    jump_host: str | None = None
    accept_new_host_key: bool = False
    connect_timeout_s: float = Field(default=10.0, gt=0)
    command_timeout_s: float = Field(default=300.0, gt=0)
    keepalive_s: int = Field(default=15, ge=0)

    _secret = field_validator("key_passphrase", mode="before")(_secret)


class Host(StrictModel):
    transport: Literal["local", "ssh"] = "ssh"
    platform: Literal["linux", "windows"] = "linux"
    ssh: SshSettings | None = None

    @model_validator(mode="after")
    def _ssh_only_for_ssh(self) -> Host:
        if self.transport == "local" and self.ssh is not None:
            raise ValueError("'ssh' settings given for a host with transport 'local'")
        return self


class OptionsBackend(StrictModel):
    """Where application options are read and written (SPEC 3.4)."""

    kind: Literal["ini-file", "command", "manual"] = "ini-file"
    path: str | None = None
    backup_suffix: str = ".ors-migrate.bak"
    get_command: str | None = None
    set_command: str | None = None

    @model_validator(mode="after")
    def _fields_for_kind(self) -> OptionsBackend:
        if self.kind == "ini-file" and not self.path:
            raise ValueError(
                "the ini-file backend needs 'path' (placeholders: {app} {cluster} {pair})"
            )
        if self.kind == "command" and not (self.get_command and self.set_command):
            raise ValueError("the command backend needs both 'get_command' and 'set_command'")
        return self


class Services(StrictModel):
    """Site commands for the Management Layer; placeholders {app} {host} {cluster} {pair}."""

    start: str
    stop: str
    status: str
    switchover: str
    version: str | None = None
    sessions: str | None = None
    upgrade: str | None = None
    ready_timeout_s: float = Field(default=120.0, gt=0)
    poll_interval_s: float = Field(default=0.5, gt=0)


class App(StrictModel):
    name: Name
    host: str
    role: Literal["primary", "backup"]
    memory_mb: int | None = Field(default=None, gt=0)
    version: str | None = None
    install_dir: str | None = None
    options_path: str | None = None


class HaPair(StrictModel):
    name: Name
    apps: list[App]

    @model_validator(mode="after")
    def _one_primary_one_backup(self) -> HaPair:
        roles = sorted(a.role for a in self.apps)
        if roles != ["backup", "primary"]:
            raise ValueError(
                "an HA pair has exactly two applications: one with role primary, one with role backup"
            )
        return self

    def app_with_role(self, role: str) -> App:
        return next(a for a in self.apps if a.role == role)


class OrsCluster(StrictModel):
    name: Name
    ha_pairs: list[HaPair] = Field(min_length=1)


class TlsSettings(StrictModel):
    enabled: bool = False
    cert: str | None = None
    key: str | None = None
    cacert: str | None = None
    cacertdir: str | None = None
    sni: str | None = None


class MonitorSettings(StrictModel):
    window_s: float = Field(default=60.0, gt=0)
    interval_s: float = Field(default=1.0, gt=0)
    max_cpu_percent: float = Field(default=80.0, gt=0, le=100)
    max_memory_percent: float = Field(default=80.0, gt=0, le=100)


class RedisSettings(StrictModel):
    mode: Literal["cluster", "standalone", "sentinel"] = "cluster"
    nodes: list[str] = Field(min_length=1)
    username: str | None = None
    password: SecretRef | None = None
    tls: TlsSettings = TlsSettings()
    node_memory_mb: int | None = Field(default=None, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    monitor: MonitorSettings = MonitorSettings()

    _secret = field_validator("password", mode="before")(_secret)

    @field_validator("nodes")
    @classmethod
    def _host_port(cls, nodes: list[str]) -> list[str]:
        for node in nodes:
            parse_host_port(node)
        return nodes

    def endpoints(self) -> list[tuple[str, int]]:
        return [parse_host_port(n) for n in self.nodes]


class CassandraRemoval(StrictModel):
    """How `remove-cassandra` (seed post.1) takes Cassandra out of ORS: the persistence options
    removed from every application, and whether the ORS keyspace is snapshotted and dropped."""

    section: str = "persistence"
    options: list[str] = Field(default_factory=lambda: ["cassandra-nodes", "cassandra-keyspace"])
    drop_keyspace: bool = False
    snapshot: bool = True
    snapshot_hosts: list[str] = Field(default_factory=list)
    snapshot_command: str = "nodetool snapshot -t {tag} {keyspace}"
    list_snapshots_command: str = "nodetool listsnapshots"


class CassandraSettings(StrictModel):
    in_use: bool = True
    contact_points: list[str] = Field(default_factory=list)
    thrift_port: int = Field(default=9160, ge=1, le=65535)
    keyspace: str = "orchestration"
    version: str | None = None
    username: str | None = None
    password: SecretRef | None = None
    nodetool_host: str | None = None
    nodetool_command: str = "nodetool version"
    connect_timeout_s: float = Field(default=5.0, gt=0)
    removal: CassandraRemoval = CassandraRemoval()

    _secret = field_validator("password", mode="before")(_secret)

    @field_validator("contact_points")
    @classmethod
    def _host_port(cls, points: list[str]) -> list[str]:
        for point in points:
            parse_host_port(point)
        return points


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


class OrsSettings(StrictModel):
    min_version: str = "8.1.401.10"
    target_version: str | None = None
    sessionid_with_nodeid_section: str = "orchestration"
    extra_persistence_options: dict[str, str] = Field(default_factory=dict)
    digital_persistence: OptionRef | None = None
    fips_enabled: bool | None = None
    fips: FipsSettings = FipsSettings()


class Site(StrictModel):
    version: Literal[1] = 1
    name: Name
    hosts: dict[str, Host] = Field(min_length=1)
    options_backend: OptionsBackend
    services: Services
    ors: OrsSettings = OrsSettings()
    ors_clusters: list[OrsCluster] = Field(min_length=1)
    redis: RedisSettings
    cassandra: CassandraSettings | None = None

    @model_validator(mode="after")
    def _references_and_uniqueness(self) -> Site:
        seen_apps: set[str] = set()
        seen_pairs: set[str] = set()
        seen_clusters: set[str] = set()
        for cluster in self.ors_clusters:
            if cluster.name in seen_clusters:
                raise ValueError(f"ORS cluster '{cluster.name}' is named twice")
            seen_clusters.add(cluster.name)
            for pair in cluster.ha_pairs:
                if pair.name in seen_pairs:
                    raise ValueError(f"HA pair '{pair.name}' is named twice")
                seen_pairs.add(pair.name)
                for app in pair.apps:
                    if app.name in seen_apps:
                        raise ValueError(f"application '{app.name}' is named twice")
                    seen_apps.add(app.name)
                    if app.host not in self.hosts:
                        raise ValueError(
                            f"application '{app.name}' runs on host '{app.host}', "
                            "which is not defined under 'hosts'"
                        )
        for name, host in self.hosts.items():
            jump = host.ssh.jump_host if host.ssh else None
            if jump is not None and jump == name:
                raise ValueError(f"host '{name}' cannot be its own jump host")
        return self

    # Navigation helpers used by the planner and the engine.
    def pairs(self) -> Iterator[tuple[OrsCluster, HaPair]]:
        for cluster in self.ors_clusters:
            for pair in cluster.ha_pairs:
                yield cluster, pair

    def apps(self) -> Iterator[tuple[OrsCluster, HaPair, App]]:
        for cluster, pair in self.pairs():
            for app in pair.apps:
                yield cluster, pair, app

    def find_app(self, name: str) -> tuple[OrsCluster, HaPair, App]:
        for found in self.apps():
            if found[2].name == name:
                return found
        raise KeyError(name)

    def find_pair(self, name: str) -> tuple[OrsCluster, HaPair]:
        for found in self.pairs():
            if found[1].name == name:
                return found
        raise KeyError(name)


@dataclass(frozen=True)
class LoadedSite:
    """A validated site and where it came from."""

    site: Site
    path: str
    digest: str
    document: LocatedDocument


def _field_path(loc: tuple[Any, ...]) -> str:
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


def site_error_from_validation(exc: ValidationError, document: LocatedDocument) -> SiteError:
    """The first validation error, with its file, line and field."""
    err = exc.errors(include_url=False)[0]
    loc = _clean_loc(tuple(err["loc"]))
    message = err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        message = f"unknown key '{loc[-1]}'"
    elif kind == "missing":
        message = f"required field '{loc[-1]}' is missing"
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return SiteError(
        message,
        file=document.path,
        line=document.line_of(loc),
        field=_field_path(loc) or None,
        rule=f"schema.{kind}",
    )


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
    return Site.model_json_schema()

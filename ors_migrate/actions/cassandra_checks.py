"""Read-only Cassandra checks: reachability, release version and the ORS keyspace.

ORS persists to Cassandra through Thrift (port 9160 by default) and only with Cassandra 3.x or
lower. Such clusters often run with the CQL native port disabled, so the checks degrade: CQL
when a contact point answers on it; otherwise a TCP connect to the Thrift port, and the release
version from `nodetool` over a transport when one is given. Each result says which method it
used (`observed["method"]`: "cql", "thrift-tcp" or "nodetool").

`cassandra-driver` is imported inside the functions that need it: importing it costs more than
100 ms, which commands that never talk to Cassandra should not pay.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InputError, TransportError
from ..site import CassandraSettings, parse_host_port
from ..step import CheckResult, Severity, Transport

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, Session

CHECK_REACHABLE = "cassandra.reachable"
CHECK_VERSION = "cassandra.version"
CHECK_KEYSPACE = "cassandra.keyspace"

DDL_TIMEOUT_S = 30.0
SYSTEM_KEYSPACES = frozenset(
    {
        "system",
        "system_schema",
        "system_auth",
        "system_distributed",
        "system_traces",
        "system_views",
        "system_virtual_schema",
    }
)
_RELEASE = re.compile(r"ReleaseVersion:\s*(\S+)")
_PROTOCOL_REFUSED = "explicitly set client protocol_version"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, value: str) -> Endpoint:
        return cls(*parse_host_port(value))


def probe_tcp(host: str, port: int, timeout_s: float) -> str | None:
    """None when a TCP connection opens, else why it did not ("connection refused", ...)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except socket.gaierror as exc:
        return f"name not resolved ({exc.strerror})"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def scrub(text: str, secret: str | None) -> str:
    """Never let a password reach a message, whatever a library put in its error text."""
    return text.replace(secret, "***") if secret else text


# --------------------------------------------------------------------------- CQL sessions


def open_session(
    contact_points: list[str],
    username: str | None,
    password: str | None,
    *,
    timeout_s: float,
    protocol_version: int = 4,
) -> tuple[Cluster, Session]:
    """A driver session with a pinned protocol version and no schema or token metadata, so
    connecting costs a handful of round trips. Raises TransportError, secrets scrubbed."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    endpoints = [Endpoint.parse(p) for p in contact_points]
    if username is not None and password is None:
        raise TransportError(f"Cassandra user '{username}' is configured but no password given")
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=timeout_s)
    cluster = Cluster(
        contact_points=[(e.host, e.port) for e in endpoints],
        protocol_version=protocol_version,
        auth_provider=PlainTextAuthProvider(username, password) if username else None,
        schema_metadata_enabled=False,
        token_metadata_enabled=False,
        connect_timeout=timeout_s,
        control_connection_timeout=timeout_s,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        compression=False,
        executor_threads=2,
    )
    try:
        with driver_logs_demoted():
            return cluster, cluster.connect()
    except Exception as exc:
        cluster.shutdown()
        where = ", ".join(str(e) for e in endpoints)
        raise TransportError(
            scrub(f"CQL connection to {where} failed: {describe(exc)}", password)
        ) from None


class _Demote(logging.Filter):
    """Turn the driver's own warnings and tracebacks into DEBUG records: the failure is
    reported once, as a message, by the caller."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


@contextmanager
def driver_logs_demoted() -> Iterator[None]:
    demote = _Demote()
    loggers = [logging.getLogger(n) for n in ("cassandra.cluster", "cassandra.connection")]
    for logger in loggers:
        logger.addFilter(demote)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(demote)


def describe(exc: BaseException) -> str:
    """A driver error in one line, naming each host's own failure."""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict) and errors:
        return "; ".join(f"{host}: {_one_line(err)}" for host, err in errors.items())
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def cql_session(
    settings: CassandraSettings,
    password: str | None,
    endpoints: list[Endpoint] | None = None,
    *,
    timeout_s: float | None = None,
) -> Iterator[Session]:
    """A session on the site's contact points (or the given subset), shut down on exit.
    Protocol v4 first, then v3 for the 2.1-era nodes that speak nothing newer."""
    points = [str(e) for e in endpoints] if endpoints else list(settings.contact_points)
    timeout = timeout_s or settings.connect_timeout_s
    try:
        cluster, session = open_session(points, settings.username, password, timeout_s=timeout)
    except TransportError as exc:
        if _PROTOCOL_REFUSED not in str(exc):
            raise
        cluster, session = open_session(
            points, settings.username, password, timeout_s=timeout, protocol_version=3
        )
    try:
        yield session
    finally:
        cluster.shutdown()


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def keyspace_names(session: Session, release_version: str | None) -> list[str]:
    """Every keyspace name, from the schema table the node's release has."""
    table = "system.schema_keyspaces" if _major(release_version) < 3 else "system_schema.keyspaces"
    return sorted(
        row.keyspace_name for row in session.execute(f"SELECT keyspace_name FROM {table}")
    )


def release_version(session: Session) -> str:
    row = session.execute("SELECT release_version FROM system.local WHERE key='local'").one()
    return str(row.release_version)


def keyspace_exists(settings: CassandraSettings, password: str | None, keyspace: str) -> bool:
    """Whether the keyspace exists (exact, case-sensitive name). Raises TransportError."""
    with cql_session(settings, password) as session:
        return keyspace in keyspace_names(session, release_version(session))


def drop_keyspace(settings: CassandraSettings, password: str | None, keyspace: str) -> None:
    """DROP KEYSPACE IF EXISTS; system keyspaces are refused. The caller asks for the
    operator's confirmation first (remove-cassandra)."""
    if keyspace in SYSTEM_KEYSPACES or not keyspace.strip():
        raise InputError(f"refusing to drop keyspace '{keyspace}'", field="cassandra.keyspace")
    with cql_session(settings, password, timeout_s=DDL_TIMEOUT_S) as session:
        try:
            session.execute(f"DROP KEYSPACE IF EXISTS {quote_identifier(keyspace)}")
        except Exception as exc:
            raise TransportError(
                scrub(f"DROP KEYSPACE {keyspace} failed: {describe(exc)}", password)
            ) from None


# --------------------------------------------------------------------------- the check


@dataclass
class Reachability:
    endpoint: Endpoint
    cql: str | None  # None = open, else the reason
    thrift: str | None  # None = open, else the reason; "not tried" when CQL answered


def check_cassandra(
    settings: CassandraSettings,
    password: str | None,
    *,
    nodetool: Transport | None = None,
) -> list[CheckResult]:
    """Reachability of each contact point, the release version (3.x or lower for ORS
    persistence) and the presence of the ORS keyspace. Never raises for a network problem."""
    if not settings.contact_points:
        severity: Severity = "error" if settings.in_use else "ok"
        return [
            CheckResult(
                CHECK_REACHABLE,
                severity,
                "no Cassandra contact points configured",
                fix="list them under cassandra.contact_points (host:port)",
                observed={"method": "none"},
            )
        ]
    probes = [probe(settings, Endpoint.parse(p)) for p in settings.contact_points]
    results = [reachability_result(settings, p) for p in probes]
    cql_points = [p.endpoint for p in probes if p.cql is None]
    if cql_points:
        results += cql_results(settings, password, cql_points)
    else:
        results += fallback_results(settings, probes, nodetool)
    return [_scrubbed(r, password) for r in results]


def probe(settings: CassandraSettings, endpoint: Endpoint) -> Reachability:
    cql = probe_tcp(endpoint.host, endpoint.port, settings.connect_timeout_s)
    if cql is None:
        return Reachability(endpoint, None, "not tried")
    thrift = probe_tcp(endpoint.host, settings.thrift_port, settings.connect_timeout_s)
    return Reachability(endpoint, cql, thrift)


def _not_ok(settings: CassandraSettings) -> Severity:
    """Problems block only when ORS persists to this Cassandra."""
    return "error" if settings.in_use else "warning"


def reachability_result(settings: CassandraSettings, probe: Reachability) -> CheckResult:
    thrift = Endpoint(probe.endpoint.host, settings.thrift_port)
    observed = {
        "endpoint": str(probe.endpoint),
        "thrift_endpoint": str(thrift),
        "cql": probe.cql or "open",
        "thrift": probe.thrift or "open",
    }
    if probe.cql is None:
        return CheckResult(
            CHECK_REACHABLE,
            "ok",
            f"{probe.endpoint} accepts CQL connections (method: cql)",
            observed={**observed, "method": "cql"},
        )
    if probe.thrift is None:
        return CheckResult(
            CHECK_REACHABLE,
            "ok",
            f"CQL port {probe.endpoint} is closed ({probe.cql}); Thrift port {thrift} accepts "
            "TCP connections (method: thrift-tcp), which is the port ORS uses",
            observed={**observed, "method": "thrift-tcp"},
        )
    return CheckResult(
        CHECK_REACHABLE,
        _not_ok(settings),
        f"Cassandra contact point {probe.endpoint} is unreachable: CQL {probe.endpoint} "
        f"{probe.cql}; Thrift {thrift} {probe.thrift} (methods: cql, thrift-tcp)",
        fix=f"check that Cassandra runs on {probe.endpoint.host} and that ports "
        f"{probe.endpoint.port} and {settings.thrift_port} are open to this machine, or "
        "correct cassandra.contact_points / cassandra.thrift_port in the site file",
        observed={**observed, "method": "thrift-tcp"},
    )


def cql_results(
    settings: CassandraSettings, password: str | None, endpoints: list[Endpoint]
) -> list[CheckResult]:
    """Version and keyspace over CQL, on the contact points whose CQL port answered."""
    try:
        with cql_session(settings, password, endpoints) as session:
            version = release_version(session)
            versions = {
                str(h.endpoint): h.release_version
                for h in session.cluster.metadata.all_hosts()
                if h.release_version
            }
            names = keyspace_names(session, version)
    except TransportError as exc:
        fix = (
            "check cassandra.username and its password reference"
            if "AuthenticationFailed" in str(exc) or "password" in str(exc)
            else "check that the CQL port belongs to Cassandra and that it answers"
        )
        return [
            CheckResult(
                CHECK_VERSION,
                _not_ok(settings),
                f"could not read the Cassandra version over CQL (method: cql): {exc}",
                fix=fix,
                observed={"method": "cql"},
            ),
            not_checked_keyspace(settings, "cql", "no CQL session"),
        ]
    versions = versions or {str(endpoints[0]): version}
    highest = max(versions.values(), key=_version_key)
    return [version_result(settings, highest, "cql", versions), keyspace_result(settings, names)]


def fallback_results(
    settings: CassandraSettings, probes: list[Reachability], nodetool: Transport | None
) -> list[CheckResult]:
    """No CQL port answered: version from nodetool when possible, else only what the site
    file declares; the keyspace cannot be listed without CQL."""
    if nodetool is not None:
        version_check = nodetool_version(settings, nodetool)
    elif any(p.thrift is None for p in probes):
        version_check = unverified_version(settings)
    else:
        version_check = CheckResult(
            CHECK_VERSION,
            _not_ok(settings),
            "Cassandra version not checked: no contact point answers on CQL or Thrift "
            "(methods: cql, thrift-tcp)",
            fix="make a contact point reachable, or give cassandra.nodetool_host",
            observed={"method": "thrift-tcp", "version": None},
        )
    method = "nodetool" if nodetool is not None else "thrift-tcp"
    return [version_check, not_checked_keyspace(settings, method, "the CQL port is closed")]


def nodetool_version(settings: CassandraSettings, transport: Transport) -> CheckResult:
    command = settings.nodetool_command
    where = f"`{command}` on {transport.name}"
    try:
        result = transport.run(command, timeout=max(settings.connect_timeout_s * 6, 30.0))
    except TransportError as exc:
        return CheckResult(
            CHECK_VERSION,
            _not_ok(settings),
            f"CQL port closed and {where} could not run (method: nodetool): {exc}",
            fix="check the nodetool host's transport settings",
            observed={"method": "nodetool", "version": None},
        )
    match = _RELEASE.search(result.stdout)
    if not result.ok or not match:
        tail = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        return CheckResult(
            CHECK_VERSION,
            _not_ok(settings),
            f"CQL port closed and {where} gave no ReleaseVersion (exit {result.exit_code}: "
            f"{tail}) (method: nodetool)",
            fix="check cassandra.nodetool_command (it should print 'ReleaseVersion: X')",
            observed={"method": "nodetool", "version": None, "exit_code": result.exit_code},
        )
    return version_result(settings, match.group(1), "nodetool", {transport.name: match.group(1)})


def unverified_version(settings: CassandraSettings) -> CheckResult:
    """Only a Thrift TCP connect succeeded: fall back on the declared version, say so."""
    declared = settings.version
    observed = {"method": "thrift-tcp", "version": None, "declared": declared}
    fix = (
        "set cassandra.nodetool_host so the version is read with nodetool, or enable the "
        "CQL native transport"
    )
    if declared and _major(declared) >= 4:
        checked = version_result(settings, declared, "thrift-tcp", {})
        return CheckResult(
            CHECK_VERSION,
            checked.severity,
            f"{checked.message} (declared in the site file, not verified)",
            fix=checked.fix,
            observed=observed,
        )
    said = f"the site file declares {declared}" if declared else "no version declared"
    return CheckResult(
        CHECK_VERSION,
        "warning",
        f"Cassandra version not verified: the CQL port is closed and only a TCP connect to the "
        f"Thrift port succeeded (method: thrift-tcp); {said}",
        fix=fix,
        observed=observed,
    )


def version_result(
    settings: CassandraSettings, version: str, method: str, versions: dict[str, str]
) -> CheckResult:
    observed: dict[str, Any] = {
        "method": method,
        "version": version,
        "versions": versions,
        "declared": settings.version,
    }
    major = _major(version)
    if major < 0:
        return CheckResult(
            CHECK_VERSION,
            "warning",
            f"Cassandra reports an unrecognised version '{version}' (method: {method})",
            observed=observed,
        )
    if major >= 4:
        role = (
            "ORS persists to it (cassandra.in_use)"
            if settings.in_use
            else "not in use for ORS persistence"
        )
        return CheckResult(
            CHECK_VERSION,
            "warning",
            f"Cassandra {version}: the documents say ORS session persistence cannot be enabled "
            f"on Cassandra 4.x, so ORS could not have persisted sessions there; {role} "
            f"(method: {method})",
            fix="nothing blocks the move to Redis; expect no sessions restored from Cassandra",
            observed=observed,
        )
    message = (
        f"Cassandra {version} is supported for ORS persistence (3.x or lower) (method: {method})"
    )
    if settings.version and settings.version != version:
        return CheckResult(
            CHECK_VERSION,
            "warning",
            f"{message}, but the site file declares {settings.version}",
            fix=f"set cassandra.version to {version} in the site file",
            observed=observed,
        )
    return CheckResult(CHECK_VERSION, "ok", message, observed=observed)


def keyspace_result(settings: CassandraSettings, names: list[str]) -> CheckResult:
    keyspace = settings.keyspace
    user = [n for n in names if n not in SYSTEM_KEYSPACES]
    observed = {
        "method": "cql",
        "keyspace": keyspace,
        "present": keyspace in names,
        "keyspaces": user,
    }
    if keyspace in names:
        return CheckResult(
            CHECK_KEYSPACE,
            "ok",
            f"ORS keyspace '{keyspace}' exists (method: cql)",
            observed=observed,
        )
    near = [n for n in names if n.lower() == keyspace.lower()]
    hint = f"; '{near[0]}' differs only in case" if near else ""
    return CheckResult(
        CHECK_KEYSPACE,
        _not_ok(settings),
        f"ORS keyspace '{keyspace}' not found (method: cql); keyspaces: "
        f"{', '.join(user) or 'none besides the system ones'}{hint}",
        fix="correct cassandra.keyspace in the site file, or create the keyspace with the ORS "
        "Cassandra schema before relying on Cassandra persistence",
        observed=observed,
    )


def not_checked_keyspace(settings: CassandraSettings, method: str, why: str) -> CheckResult:
    return CheckResult(
        CHECK_KEYSPACE,
        "warning",
        f"ORS keyspace '{settings.keyspace}' not checked: {why} (method: {method})",
        fix="enable the CQL native transport on one node, or check the keyspace by hand",
        observed={"method": method, "keyspace": settings.keyspace, "present": None},
    )


def _major(version: str | None) -> int:
    match = re.match(r"\s*(\d+)\.", version or "")
    return int(match.group(1)) if match else -1


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def _scrubbed(result: CheckResult, password: str | None) -> CheckResult:
    if not password or (password not in result.message and password not in result.fix):
        return result
    return CheckResult(
        result.check,
        result.severity,
        scrub(result.message, password),
        scrub(result.fix, password),
        result.observed,
    )

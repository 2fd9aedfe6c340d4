"""Read-only checks of the Redis Cluster that ORS will persist to.

Every failure is explained in the operator's terms (which node, which setting, what to change);
the raw client error is kept in `observed`. The password never appears in a message.
`redis` is imported inside the functions: importing it costs ~0.1 s that `validate` and `plan`
should not pay.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ors_migrate.errors import TransportError, VerificationFailed
from ors_migrate.site import MonitorSettings, RedisSettings, TlsSettings
from ors_migrate.step import CheckResult

TOTAL_SLOTS = 16384
MIN_MASTERS = 3
HA_PAIRS_PER_MASTER = 3  # Genesys: 3 Redis nodes serve up to about 9 ORS HA pairs.
MEMORY_FULL_PERCENT = 90.0
SCAN_COUNT = 1000


class RedisProblem(Exception):
    """A failure already explained: what is wrong, how to fix it, and whether retrying may help."""

    def __init__(
        self,
        check: str,
        message: str,
        fix: str,
        *,
        transient: bool = False,
        observed: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.check = check
        self.message = message
        self.fix = fix
        self.transient = transient
        self.observed = observed or {}

    def as_result(self) -> CheckResult:
        return CheckResult(self.check, "error", self.message, self.fix, self.observed)

    def as_error(self) -> VerificationFailed | TransportError:
        text = f"{self.message}. Fix: {self.fix}" if self.fix else self.message
        return TransportError(text) if self.transient else VerificationFailed(text)


# --- connecting ------------------------------------------------------------------------------


def client_errors() -> tuple[type[BaseException], ...]:
    """Everything redis-py raises for a node or cluster it cannot use. `RedisClusterException`
    (raised when part of a cluster is unreachable) is not a `RedisError`, so it is named here."""
    import redis
    from redis.exceptions import RedisClusterException

    return (redis.RedisError, RedisClusterException, OSError)


def _path(value: str | None) -> str | None:
    return os.path.expanduser(value) if value else None


def _connection_kwargs(settings: RedisSettings, password: str | None) -> dict[str, Any]:
    """Client options shared by the per-node and the cluster clients.

    With `tls.sni` the certificate is checked against the SNI name by `_check_sni` (redis-py
    always sends the node address as server name), so the clients skip their own host name check.
    """
    timeout = settings.connect_timeout_s
    kwargs: dict[str, Any] = {
        "username": settings.username,
        "password": password,
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "decode_responses": True,
    }
    tls = settings.tls
    if tls.enabled:
        kwargs.update(
            ssl=True,
            ssl_certfile=_path(tls.cert),
            ssl_keyfile=_path(tls.key),
            ssl_ca_certs=_path(tls.cacert),
            ssl_ca_path=_path(tls.cacertdir),
            ssl_check_hostname=tls.sni is None,
        )
    return kwargs


def _node_client(settings: RedisSettings, password: str | None, host: str, port: int) -> Any:
    """A client for one node that fails at once: checks report, they do not retry."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kwargs = _connection_kwargs(settings, password)
    return redis.Redis(host=host, port=port, retry=Retry(NoBackoff(), 0), **kwargs)


def _tls_file_problem(tls: TlsSettings) -> RedisProblem | None:
    """Unreadable or half-given TLS files, found before any connection is tried."""
    if not tls.enabled:
        return None
    if bool(tls.cert) != bool(tls.key):
        return RedisProblem(
            "redis.tls",
            "redis.tls.cert and redis.tls.key must be given together",
            "set both (a client certificate and its private key) or neither",
        )
    for name in ("cert", "key", "cacert", "cacertdir"):
        value = getattr(tls, name)
        if value and not os.access(os.path.expanduser(value), os.R_OK):
            return RedisProblem(
                "redis.tls",
                f"cannot read redis.tls.{name} '{value}'",
                f"check that '{value}' exists and is readable by this user",
            )
    return None


def _check_sni(settings: RedisSettings, host: str, port: int) -> None:
    """Handshake with the SNI name as server name: the certificate must be valid for it."""
    tls = settings.tls
    context = ssl.create_default_context(cafile=_path(tls.cacert), capath=_path(tls.cacertdir))
    if tls.cert:
        context.load_cert_chain(_path(tls.cert) or "", _path(tls.key))
    node = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=settings.connect_timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=tls.sni):
                return
    except ssl.SSLCertVerificationError as exc:
        raise RedisProblem(
            "redis.tls",
            f"the TLS certificate of {node} is not valid for the SNI name '{tls.sni}': "
            f"{exc.verify_message}",
            "set redis.tls.sni to a name in the server certificate, or reissue the certificate "
            "with that name",
            observed={"node": node, "error": str(exc)},
        ) from None
    except (OSError, ssl.SSLError):
        return  # reported, with its explanation, by the connection that follows


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _redact(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


def explain(
    exc: BaseException, node: str, settings: RedisSettings, password: str | None
) -> RedisProblem:
    """Map a redis-py or socket error to a message that names the node and the setting."""
    raw = " | ".join(_redact(str(e), password) for e in _chain(exc) if str(e))
    text = raw.lower()
    tls = settings.tls
    user = settings.username or "default"
    observed = {"node": node, "error": raw}

    def problem(message: str, fix: str, transient: bool = False) -> RedisProblem:
        return RedisProblem("redis.connect", message, fix, transient=transient, observed=observed)

    if "wrongpass" in text or "invalid username-password" in text:
        missing = "" if password else ": no password is configured"
        return problem(
            f"authentication failed for user {user} on {node}{missing}",
            "check redis.username and the secret that redis.password refers to; the ACL user "
            "must exist on every node and be enabled",
        )
    if "noauth" in text or "hello must be called" in text or "authentication required" in text:
        return problem(
            f"{node} requires authentication, but no password is configured",
            "set redis.username and redis.password (a secret reference) in the site file",
        )
    if "without any password configured" in text:
        return problem(
            f"{node} has no password set, but redis.password is configured",
            "remove redis.password, or configure the user and password on the Redis nodes",
        )
    if "noperm" in text or "no permissions to run" in text:
        return problem(
            f"user {user} lacks an ACL permission on {node}: {raw}",
            "grant the ACL user the commands a cluster client needs (CLUSTER SLOTS, INFO; "
            "e.g. +@all) on the keys ~ORS:*, on every node",
        )
    # TLS 1.3 clients may write before reading the server's alert: a rejected client
    # certificate then shows only as an EOF on the TLS connection.
    dropped = tls.enabled and ("eof occurred in violation" in text or "unexpected eof" in text)
    if "certificate required" in text or (
        ("handshake failure" in text or dropped) and not tls.cert
    ):
        return problem(
            f"{node} requires a TLS client certificate and none was presented",
            "set redis.tls.cert and redis.tls.key to a client certificate signed by a CA that "
            "the Redis nodes trust (tls-ca-cert-file)",
        )
    if "unknown ca" in text or "bad certificate" in text or "certificate unknown" in text:
        return problem(
            f"{node} rejected the TLS client certificate {tls.cert}: it is not signed by a CA "
            "that the server trusts",
            "use a client certificate issued by the CA named in the server's tls-ca-cert-file",
        )
    if dropped:
        return problem(
            f"{node} closed the TLS connection during the handshake: it most likely rejected "
            f"the TLS client certificate {tls.cert} (not signed by a CA that it trusts)",
            "use a client certificate issued by the CA named in the server's tls-ca-cert-file",
        )
    if "certificate_verify_failed" in text or "certificate verify failed" in text:
        if "mismatch" in text:
            return problem(
                f"TLS certificate verify failed for {node}: the certificate is not valid for "
                "that host name or address",
                "list the nodes by a name or address in the server certificate, or set "
                "redis.tls.sni to such a name",
            )
        reason = raw.split("certificate verify failed:")[-1].split("(_ssl")[0].strip(" :.")
        ca = tls.cacert or tls.cacertdir or "the system trust store"
        return problem(
            f"TLS certificate verify failed for {node} ({reason}): its certificate is not "
            f"signed by the CA in {ca}",
            "set redis.tls.cacert (or cacertdir) to the CA that issued the Redis server "
            "certificates",
        )
    if "wrong version number" in text:
        return problem(
            f"{node} did not answer the TLS handshake: it may not have TLS enabled",
            "enable TLS on the Redis nodes (tls-port) or set redis.tls.enabled to false",
        )
    if "connection refused" in text:
        return problem(
            f"connection refused on {node}: nothing listens on that port",
            "check that redis-server runs on that node and that redis.nodes lists its port",
            transient=True,
        )
    if "connection reset" in text or "connection closed by server" in text:
        hint = (
            "set redis.tls.enabled to true (the node may require TLS)"
            if not tls.enabled
            else "check the node's log for the reason it closed the connection"
        )
        return problem(f"{node} closed the connection", hint, transient=True)
    if "timeout" in text or "timed out" in text:
        seconds = f"{settings.connect_timeout_s:g}"
        if tls.enabled and "handshake" in text:
            return problem(
                f"the TLS handshake with {node} timed out after {seconds} s: the port may not "
                "speak TLS",
                "check that the node has TLS enabled on that port, or set redis.tls.enabled to "
                "false",
                transient=True,
            )
        return problem(
            f"timed out after {seconds} s connecting to {node}",
            "check the network path and firewalls to the node, or raise redis.connect_timeout_s",
            transient=True,
        )
    if "name or service not known" in text or "nodename nor servname" in text:
        return problem(
            f"cannot resolve the host name of {node}",
            "fix the host name in redis.nodes or the DNS",
            transient=True,
        )
    return problem(f"cannot use {node}: {raw}", "check the node and the redis settings")


@dataclass
class _Seed:
    """The first node that answered, with what it said about itself."""

    node: str
    host: str
    port: int
    info: dict[str, Any]
    failures: dict[str, str] = field(default_factory=dict)


def _probe_seeds(settings: RedisSettings, password: str | None) -> _Seed:
    """Connect to the listed nodes in turn with a plain client; the first answer wins.

    A plain client is used first because it can tell a standalone Redis or a Sentinel from a
    cluster node, and gives errors for one node instead of the cluster client's summary.
    """

    tls_problem = _tls_file_problem(settings.tls)
    if tls_problem is not None:
        raise tls_problem
    first: RedisProblem | None = None
    failures: dict[str, str] = {}
    for host, port in settings.endpoints():
        node = f"{host}:{port}"
        try:
            if settings.tls.enabled and settings.tls.sni:
                _check_sni(settings, host, port)
            with _node_client(settings, password, host, port) as conn:
                info = conn.info("server")
                info.update(conn.info("cluster") if info.get("redis_mode") != "sentinel" else {})
        except client_errors() as exc:
            found = explain(exc, node, settings, password)
            failures[node] = found.message
            first = first or found
            continue
        return _Seed(node, host, port, info, failures)
    assert first is not None
    first.observed["failures"] = failures
    if len(failures) > 1:
        others = len(failures) - 1
        first.message += f" ({others} other listed node{'s' if others > 1 else ''} failed too)"
    raise first


def _require_cluster_mode(seed: _Seed) -> None:
    mode = str(seed.info.get("redis_mode", ""))
    observed = {"node": seed.node, "redis_mode": mode, "version": seed.info.get("redis_version")}
    fix = (
        "deploy a Redis Cluster (cluster-enabled yes, redis-cli --cluster create) and list its "
        "nodes in redis.nodes"
    )
    if mode == "sentinel":
        raise RedisProblem(
            "redis.mode",
            f"{seed.node} is a Redis Sentinel, not a Redis Cluster: ORS supports Redis Cluster "
            "only",
            fix,
            observed=observed,
        )
    if mode == "standalone" or str(seed.info.get("cluster_enabled", "")) == "0":
        raise RedisProblem(
            "redis.mode",
            f"{seed.node} is a standalone Redis, not a Redis Cluster: ORS supports Redis "
            "Cluster only",
            fix,
            observed=observed,
        )


def _cluster_client(settings: RedisSettings, password: str | None, seed: _Seed) -> Any:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.cluster import ClusterNode
    from redis.retry import Retry

    startup = [ClusterNode(seed.host, seed.port)]
    startup += [ClusterNode(h, p) for h, p in settings.endpoints() if f"{h}:{p}" != seed.node]
    try:
        return redis.RedisCluster(
            startup_nodes=startup,
            require_full_coverage=False,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 2),
            **_connection_kwargs(settings, password),
        )
    except client_errors() as exc:
        raise explain(exc, seed.node, settings, password) from None


def _connect(settings: RedisSettings, password: str | None) -> Any:
    seed = _probe_seeds(settings, password)
    _require_cluster_mode(seed)
    return _cluster_client(settings, password, seed)


def client(settings: RedisSettings, password: str | None) -> Any:
    """A connected `redis.RedisCluster`, or a VerificationFailed (wrong credentials, TLS
    material or mode) / TransportError (unreachable) with the explained message."""
    try:
        return _connect(settings, password)
    except RedisProblem as problem:
        raise problem.as_error() from None


# --- the cluster as seen by its nodes ---------------------------------------------------------


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of CLUSTER NODES."""

    node_id: str
    address: str
    flags: frozenset[str]
    master_id: str | None
    connected: bool
    slots: int

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?"})


def _split_address(address: str) -> tuple[str, int]:
    """`ip:port` as CLUSTER NODES writes it (IPv6 without brackets); ValueError without one."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or int(port) == 0:
        raise ValueError(f"no address ({address or 'empty'})")
    return host.strip("[]"), int(port)


def parse_cluster_nodes(text: str) -> list[ClusterNodeView]:
    views = []
    for line in text.strip().splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@")[0]
        slots = 0
        for item in parts[8:]:
            if item.startswith("["):
                continue
            start, _, end = item.partition("-")
            slots += int(end or start) - int(start) + 1
        views.append(
            ClusterNodeView(
                node_id=parts[0],
                address=address,
                flags=frozenset(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                connected=parts[7] == "connected",
                slots=slots,
            )
        )
    return views


def parse_info_text(text: str) -> dict[str, str]:
    """`key:value` lines of CLUSTER INFO."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


@dataclass
class _NodeState:
    view: ClusterNodeView
    info: dict[str, Any] | None = None
    cluster_info: dict[str, str] | None = None
    error: str | None = None


@dataclass
class _Snapshot:
    seed: _Seed
    cluster_info: dict[str, str]
    nodes: list[_NodeState]

    def masters(self) -> list[_NodeState]:
        return [n for n in self.nodes if n.view.is_master and n.view.slots > 0]

    def replicas_of(self, master: _NodeState) -> list[_NodeState]:
        """Replicas by the seed's view or by their own word: right after a change the seed's
        gossip may still show a new replica as an empty master."""
        return [
            n
            for n in self.nodes
            if n.view.master_id == master.view.node_id or _replica_of(n.info, master.view.address)
        ]


def _replica_of(info: dict[str, Any] | None, address: str) -> bool:
    if not info or info.get("role") != "slave":
        return False
    return f"{info.get('master_host')}:{info.get('master_port')}" == address


def _snapshot(settings: RedisSettings, password: str | None, seed: _Seed) -> _Snapshot:

    with _node_client(settings, password, seed.host, seed.port) as conn:
        cluster_info = parse_info_text(conn.execute_command("CLUSTER", "INFO"))
        views = parse_cluster_nodes(conn.execute_command("CLUSTER", "NODES"))
    states = []
    for view in views:
        state = _NodeState(view)
        try:
            host, port = _split_address(view.address)
            with _node_client(settings, password, host, port) as conn:
                state.info = conn.info()
                state.cluster_info = parse_info_text(conn.execute_command("CLUSTER", "INFO"))
        except ValueError as exc:
            state.error = f"the cluster knows node {view.node_id} with {exc}"
        except client_errors() as exc:
            state.error = explain(exc, view.address, settings, password).message
        states.append(state)
    return _Snapshot(seed, cluster_info, states)


# --- health ----------------------------------------------------------------------------------


def cluster_health(
    settings: RedisSettings,
    password: str | None,
    *,
    ors_app_memory_mb: list[int] | None = None,
    ha_pair_count: int | None = None,
) -> list[CheckResult]:
    """Everything `preflight` asks of the Redis Cluster, one CheckResult per aspect.

    Stops after the first result when the cluster cannot be reached or is not a cluster.
    """

    try:
        seed = _probe_seeds(settings, password)
        _require_cluster_mode(seed)
        _cluster_client(settings, password, seed).close()
    except RedisProblem as problem:
        return [problem.as_result()]
    try:
        snap = _snapshot(settings, password, seed)
    except client_errors() as exc:
        return [explain(exc, seed.node, settings, password).as_result()]
    return [
        _connect_result(settings, snap),
        _mode_result(snap),
        _state_result(snap),
        _slots_result(snap),
        _nodes_result(snap),
        _replicas_result(snap),
        _aof_result(snap),
        _memory_result(snap, ors_app_memory_mb or []),
        _capacity_result(snap, ha_pair_count),
    ]


def _connect_result(settings: RedisSettings, snap: _Snapshot) -> CheckResult:
    how = f"as user {settings.username}" if settings.username else "without a user name"
    tls = "over TLS with a client certificate" if settings.tls.cert else "over TLS"
    via = tls if settings.tls.enabled else "without TLS"
    return CheckResult(
        "redis.connect",
        "ok",
        f"connected to {snap.seed.node} {how}, {via}",
        observed={"node": snap.seed.node, "unreachable_seeds": snap.seed.failures},
    )


def _mode_result(snap: _Snapshot) -> CheckResult:
    version = snap.seed.info.get("redis_version")
    return CheckResult(
        "redis.mode",
        "ok",
        f"{snap.seed.node} is a Redis Cluster node (Redis {version})",
        observed={"redis_mode": snap.seed.info.get("redis_mode"), "version": version},
    )


def _state_result(snap: _Snapshot) -> CheckResult:
    states = {
        n.view.address: (n.cluster_info or {}).get("cluster_state", "unreachable")
        for n in snap.nodes
    }
    bad = {node: state for node, state in states.items() if state != "ok"}
    seed_state = snap.cluster_info.get("cluster_state")
    if seed_state != "ok" or any(v != "unreachable" for v in bad.values()):
        failing = ", ".join(f"{n} says {s}" for n, s in bad.items() if s != "unreachable")
        return CheckResult(
            "redis.cluster_state",
            "error",
            f"cluster_state is not ok ({failing or f'{snap.seed.node} says {seed_state}'})",
            "bring failed nodes back or let replicas take over (cluster-node-timeout), then "
            "check `redis-cli --cluster check`",
            observed={"cluster_state": states},
        )
    return CheckResult(
        "redis.cluster_state",
        "ok",
        "cluster_state:ok on every reachable node",
        observed={"cluster_state": states},
    )


def _slots_result(snap: _Snapshot) -> CheckResult:
    info = snap.cluster_info
    assigned = int(info.get("cluster_slots_assigned", 0))
    ok = int(info.get("cluster_slots_ok", 0))
    lost = {n.view.address: n.view.slots for n in snap.masters() if n.error or n.view.failing}
    observed = {
        "slots_assigned": assigned,
        "slots_ok": ok,
        "slots_pfail": int(info.get("cluster_slots_pfail", 0)),
        "slots_fail": int(info.get("cluster_slots_fail", 0)),
        "slots_on_unreachable_masters": lost,
    }
    if assigned == ok == TOTAL_SLOTS and not lost:
        return CheckResult(
            "redis.slots", "ok", f"all {TOTAL_SLOTS} slots are covered", observed=observed
        )
    parts = []
    if assigned < TOTAL_SLOTS:
        parts.append(f"{TOTAL_SLOTS - assigned} of {TOTAL_SLOTS} slots are not assigned")
    if ok < assigned:
        parts.append(f"{assigned - ok} slots are not ok (pfail/fail)")
    if lost:
        where = ", ".join(f"{addr} ({count} slots)" for addr, count in lost.items())
        parts.append(f"slots are served by unreachable masters: {where}")
    return CheckResult(
        "redis.slots",
        "error",
        "; ".join(parts),
        "restart the failed masters or fail over to their replicas; assign missing slots with "
        "`redis-cli --cluster fix`",
        observed=observed,
    )


def _nodes_result(snap: _Snapshot) -> CheckResult:
    masters = snap.masters()
    down = {
        n.view.address: n.error or "flagged " + ",".join(sorted(n.view.flags))
        for n in snap.nodes
        if n.error or n.view.failing
    }
    observed = {"masters": len(masters), "nodes": len(snap.nodes), "unreachable": down}
    if down:
        listed = "; ".join(f"{addr}: {why}" for addr, why in down.items())
        return CheckResult(
            "redis.nodes",
            "error",
            f"{len(down)} of {len(snap.nodes)} nodes are down or unreachable: {listed}",
            "restart the failed nodes and wait for them to rejoin (`redis-cli --cluster check`)",
            observed=observed,
        )
    if len(masters) < MIN_MASTERS:
        return CheckResult(
            "redis.nodes",
            "error",
            f"the cluster has {len(masters)} masters serving slots; at least {MIN_MASTERS} are "
            "needed",
            f"add masters until at least {MIN_MASTERS} serve slots (`redis-cli --cluster "
            "add-node` and `rebalance`)",
            observed=observed,
        )
    return CheckResult(
        "redis.nodes",
        "ok",
        f"{len(masters)} masters and {len(snap.nodes) - len(masters)} other nodes, all reachable",
        observed=observed,
    )


def _replicas_result(snap: _Snapshot) -> CheckResult:
    counts: dict[str, int] = {}
    unlinked: list[str] = []
    for master in snap.masters():
        replicas = snap.replicas_of(master)
        counts[master.view.address] = len(replicas)
        for replica in replicas:
            link = (replica.info or {}).get("master_link_status")
            if link != "up":
                unlinked.append(f"{replica.view.address} (link {link or 'unknown'})")
    lonely = [addr for addr, count in counts.items() if count == 0]
    observed = {"replicas_per_master": counts, "replicas_not_linked": unlinked}
    if lonely or unlinked:
        parts = []
        if lonely:
            parts.append(f"masters without a replica: {', '.join(lonely)}")
        if unlinked:
            parts.append(f"replicas not linked to their master: {', '.join(unlinked)}")
        return CheckResult(
            "redis.replicas",
            "warning",
            "; ".join(parts) + " (Genesys recommends high availability: losing such a master "
            "loses its slots and the sessions in them)",
            "add a replica per master (`redis-cli --cluster add-node --cluster-slave`) and check "
            "master_link_status",
            observed=observed,
        )
    least = min(counts.values(), default=0)
    return CheckResult(
        "redis.replicas",
        "ok",
        f"every master has at least {least} linked replica{'s' if least != 1 else ''}",
        observed=observed,
    )


def _aof_result(snap: _Snapshot) -> CheckResult:
    enabled = {
        n.view.address: str((n.info or {}).get("aof_enabled")) == "1"
        for n in snap.nodes
        if n.info is not None
    }
    off = [addr for addr, on in enabled.items() if not on]
    if off:
        return CheckResult(
            "redis.aof",
            "warning",
            f"AOF persistence is off on {len(off)} of {len(enabled)} nodes: {', '.join(off)} "
            "(Genesys recommends AOF)",
            "set `appendonly yes` in redis.conf (or CONFIG SET appendonly yes and CONFIG "
            "REWRITE) on every node",
            observed={"aof_enabled": enabled},
        )
    return CheckResult(
        "redis.aof", "ok", "AOF persistence is on on every node", observed={"aof_enabled": enabled}
    )


def _mb(value: float) -> int:
    return int(round(value / (1024 * 1024)))


def _memory_limit(info: dict[str, Any]) -> tuple[int, str]:
    """Bytes the node may use and where that number comes from."""
    maxmemory = int(info.get("maxmemory", 0) or 0)
    if maxmemory > 0:
        return maxmemory, "maxmemory"
    return int(info.get("total_system_memory", 0) or 0), "total_system_memory (no maxmemory)"


def _memory_result(snap: _Snapshot, ors_memory_mb: list[int]) -> CheckResult:
    wanted = max(ors_memory_mb, default=0)
    nodes: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for master in snap.masters():
        if master.info is None:
            continue
        limit, source = _memory_limit(master.info)
        used = int(master.info.get("used_memory", 0))
        percent = 100.0 * used / limit if limit else 0.0
        addr = master.view.address
        nodes[addr] = {
            "limit_mb": _mb(limit),
            "source": source,
            "used_mb": _mb(used),
            "used_percent": round(percent, 1),
        }
        if percent >= MEMORY_FULL_PERCENT:
            errors.append(f"{addr} uses {_mb(used)} MB of {_mb(limit)} MB ({percent:.0f}%)")
        if wanted and _mb(limit) * 2 < wanted:
            errors.append(
                f"{addr} can use {_mb(limit)} MB ({source}), under half the {wanted} MB "
                "of the largest ORS application"
            )
        elif wanted and _mb(limit) < wanted:
            warnings.append(
                f"{addr} can use {_mb(limit)} MB ({source}), less than the "
                f"{wanted} MB of the largest ORS application"
            )
    observed = {"ors_app_memory_mb": wanted or None, "masters": nodes}
    fix = (
        "give each Redis node about as much memory as the corresponding ORS application "
        "(maxmemory, or more RAM), or add masters to spread the data"
    )
    if errors or warnings:
        return CheckResult(
            "redis.memory",
            "error" if errors else "warning",
            "; ".join(errors + warnings) + " (Genesys recommends similar memory per Redis node "
            "as for the corresponding ORS application)",
            fix,
            observed=observed,
        )
    basis = (
        f"; ORS applications use up to {wanted} MB"
        if wanted
        else ("; no ORS memory_mb given, so only the current use was checked")
    )
    least = min((v["limit_mb"] for v in nodes.values()), default=0)
    return CheckResult(
        "redis.memory",
        "ok",
        f"every master has headroom (smallest limit {least} MB){basis}",
        observed=observed,
    )


def _capacity_result(snap: _Snapshot, ha_pairs: int | None) -> CheckResult:
    masters = len(snap.masters())
    supported = masters * HA_PAIRS_PER_MASTER
    observed = {"masters": masters, "ha_pairs": ha_pairs, "about_supported": supported}
    if ha_pairs is None:
        return CheckResult(
            "redis.capacity",
            "ok",
            f"{masters} masters serve up to about {supported} ORS HA pairs",
            observed=observed,
        )
    if ha_pairs > supported:
        needed = -(-ha_pairs // HA_PAIRS_PER_MASTER)
        return CheckResult(
            "redis.capacity",
            "warning",
            f"{ha_pairs} ORS HA pairs on {masters} masters: Genesys sizes about 9 HA pairs per "
            f"3 Redis nodes, so about {needed} masters are advised",
            f"add masters (to about {needed}) and rebalance the slots, then watch CPU and memory",
            observed=observed,
        )
    return CheckResult(
        "redis.capacity",
        "ok",
        f"{ha_pairs} ORS HA pairs on {masters} masters (about {supported} supported)",
        observed=observed,
    )


# --- serialization ---------------------------------------------------------------------------


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def serialization_check(
    settings: RedisSettings, password: str | None, ors_cluster: str, *, min_keys: int = 1
) -> CheckResult:
    """Count `ORS:<cluster>` keys on every primary with SCAN (never KEYS) and how many have a
    TTL. Keys without a TTL are allowed: ORS cleans those up periodically."""

    pattern = f"ORS:{_glob_escape(ors_cluster)}*"
    check = "redis.serialization"
    try:
        cluster = _connect(settings, password)
    except RedisProblem as problem:
        return CheckResult(check, "error", problem.message, problem.fix, {"pattern": pattern})
    per_node: dict[str, dict[str, int]] = {}
    try:
        for node in cluster.get_nodes():
            if node.server_type != "primary":
                continue
            conn = cluster.get_redis_connection(node)
            per_node[node.name] = _count_keys(conn, pattern, f"ORS:{ors_cluster}")
    except client_errors() as exc:
        failed = explain(exc, "the cluster", settings, password)
        return CheckResult(check, "error", failed.message, failed.fix, {"pattern": pattern})
    finally:
        cluster.close()
    keys = sum(n["keys"] for n in per_node.values())
    with_ttl = sum(n["keys_with_ttl"] for n in per_node.values())
    observed = {
        "pattern": pattern,
        "keys": keys,
        "keys_with_ttl": with_ttl,
        "keys_without_ttl": keys - with_ttl,
        "primaries": len(per_node),
        "per_node": per_node,
    }
    if keys < min_keys:
        return CheckResult(
            check,
            "error",
            f"found {keys} keys under ORS:{ors_cluster} on {len(per_node)} primaries "
            f"(at least {min_keys} expected): ORS cluster {ors_cluster} does not serialize "
            "to Redis",
            "check that the ORS applications run with [persistence] type=redis, were restarted, "
            "and log a successful connection to every Redis node; and that sessions are running",
            observed,
        )
    return CheckResult(
        check,
        "ok",
        f"{keys} keys under ORS:{ors_cluster} on {len(per_node)} primaries, {with_ttl} with a TTL",
        observed=observed,
    )


CLUSTER_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _belongs(key: Any, prefix: str) -> bool:
    """`ORS:CL1` and `ORS:CL1:...` belong to ORS cluster CL1; `ORS:CL10...` does not."""
    name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
    return name == prefix or (
        name.startswith(prefix) and name[len(prefix)] not in CLUSTER_NAME_CHARS
    )


def _scan_with_ttl(conn: Any, pattern: str, prefix: str) -> Iterator[tuple[Any, Any]]:
    """(key, PTTL) of every key of one node matching `pattern`, SCANned and PTTLed a batch at a
    time, so that no caller holds more than one batch; keys of another ORS cluster whose name
    merely starts with this one's are left out."""
    cursor = 0
    while True:
        cursor, batch = conn.scan(cursor=cursor, match=pattern, count=SCAN_COUNT)
        batch = [key for key in batch if _belongs(key, prefix)]
        if batch:
            pipe = conn.pipeline(transaction=False)
            for key in batch:
                pipe.pttl(key)
            yield from zip(batch, pipe.execute(), strict=True)
        if int(cursor) == 0:
            return


def _has_ttl(ttl: Any) -> bool:
    return isinstance(ttl, int) and ttl > 0


def _count_keys(conn: Any, pattern: str, prefix: str) -> dict[str, int]:
    """How many keys one node holds for the ORS cluster, and how many have a TTL (streamed:
    a node with a million keys is counted without holding their names)."""
    keys = with_ttl = 0
    for _, ttl in _scan_with_ttl(conn, pattern, prefix):
        keys += 1
        with_ttl += _has_ttl(ttl)
    return {"keys": keys, "keys_with_ttl": with_ttl}


class KeyWatcher:
    """The `ORS:<cluster>` keys on every primary, scanned (never KEYS) again and again over one
    connection, so that keys appearing between two scans, fresh evidence of serialization,
    can be told from keys an earlier attempt left behind (they live until their TTL)."""

    def __init__(self, settings: RedisSettings, password: str | None, ors_cluster: str) -> None:
        self.settings = settings
        self.password = password
        self.prefix = f"ORS:{ors_cluster}"
        self.pattern = f"ORS:{_glob_escape(ors_cluster)}*"
        self.cluster = client(settings, password)

    def scan(self) -> dict[str, bool]:
        """Every key of the ORS cluster, with whether it has a TTL."""
        found: dict[str, bool] = {}
        try:
            for node in self.cluster.get_nodes():
                if node.server_type == "primary":
                    conn = self.cluster.get_redis_connection(node)
                    found.update(_scan_names(conn, self.pattern, self.prefix))
        except client_errors() as exc:
            raise explain(exc, "the cluster", self.settings, self.password).as_error() from None
        return found

    def close(self) -> None:
        self.cluster.close()


def _scan_names(conn: Any, pattern: str, prefix: str) -> dict[str, bool]:
    """Every key of the ORS cluster on one node, with whether it has a TTL."""
    return {
        key.decode(errors="replace") if isinstance(key, bytes) else str(key): _has_ttl(ttl)
        for key, ttl in _scan_with_ttl(conn, pattern, prefix)
    }


# --- monitoring ------------------------------------------------------------------------------


def _cpu_seconds(info: dict[str, Any]) -> float:
    return float(info.get("used_cpu_sys", 0.0)) + float(info.get("used_cpu_user", 0.0))


def _sample(
    address: str, info: dict[str, Any], previous: tuple[float, float] | None, now: float
) -> dict[str, Any]:
    limit, source = _memory_limit(info)
    used = int(info.get("used_memory", 0))
    cpu = None
    if previous is not None and now > previous[1]:
        cpu = round(100.0 * (_cpu_seconds(info) - previous[0]) / (now - previous[1]), 2)
    return {
        "node": address,
        "timestamp": time.time(),
        "cpu_percent": cpu,
        "used_memory": used,
        "maxmemory": int(info.get("maxmemory", 0) or 0),
        "total_system_memory": int(info.get("total_system_memory", 0) or 0),
        "memory_limit_source": source,
        "memory_percent": round(100.0 * used / limit, 4) if limit else None,
    }


def sample_resources(
    settings: RedisSettings,
    password: str | None,
    *,
    window_s: float,
    interval_s: float,
    on_sample: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Sample CPU (share of one core, from used_cpu_sys+used_cpu_user) and memory of every
    node, every `interval_s` for `window_s`. A node that does not answer gives a sample with
    an `error` instead of numbers."""

    try:
        seed = _probe_seeds(settings, password)
        _require_cluster_mode(seed)
        with _node_client(settings, password, seed.host, seed.port) as conn:
            views = parse_cluster_nodes(conn.execute_command("CLUSTER", "NODES"))
    except RedisProblem as problem:
        raise problem.as_error() from None
    except client_errors() as exc:
        raise explain(exc, seed.node, settings, password).as_error() from None
    clients = {
        v.address: _node_client(settings, password, *_split_address(v.address))
        for v in views
        if "noaddr" not in v.flags
    }
    previous: dict[str, tuple[float, float]] = {}
    samples: list[dict[str, Any]] = []
    try:
        _take_samples(clients, previous, settings, password, None)
        deadline = time.monotonic() + window_s
        while time.monotonic() < deadline:
            time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
            samples.extend(_take_samples(clients, previous, settings, password, on_sample))
    finally:
        for conn in clients.values():
            conn.close()
    return samples


def _take_samples(
    clients: dict[str, Any],
    previous: dict[str, tuple[float, float]],
    settings: RedisSettings,
    password: str | None,
    on_sample: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:

    taken = []
    for address, conn in clients.items():
        try:
            info = conn.info()
        except client_errors() as exc:
            sample: dict[str, Any] = {
                "node": address,
                "timestamp": time.time(),
                "error": explain(exc, address, settings, password).message,
            }
            previous.pop(address, None)
        else:
            now = time.monotonic()
            sample = _sample(address, info, previous.get(address), now)
            previous[address] = (_cpu_seconds(info), now)
        taken.append(sample)
        if on_sample is not None:
            on_sample(sample)
    return taken


def evaluate_samples(samples: list[dict[str, Any]], monitor: MonitorSettings) -> list[CheckResult]:
    """CPU and memory against the thresholds: the window's average above a threshold is an
    error (scale before going on), a peak above it a warning; a silent node is an error."""
    if not samples:
        return [
            CheckResult(
                "redis.monitor",
                "error",
                "no samples were taken",
                "check the monitoring window and that the nodes answer",
            )
        ]
    results = [
        _evaluate_metric(samples, "cpu_percent", "CPU", monitor.max_cpu_percent),
        _evaluate_metric(samples, "memory_percent", "memory", monitor.max_memory_percent),
    ]
    failed = sorted({s["node"] for s in samples if "error" in s})
    if failed:
        errors = {s["node"]: s["error"] for s in samples if "error" in s}
        results.append(
            CheckResult(
                "redis.monitor.nodes",
                "error",
                f"{len(failed)} nodes did not answer during monitoring: {', '.join(failed)}",
                "restart the failed nodes and check the cluster before going on",
                observed={"errors": errors},
            )
        )
    return results


def _evaluate_metric(
    samples: list[dict[str, Any]], key: str, label: str, threshold: float
) -> CheckResult:
    by_node: dict[str, list[float]] = {}
    for sample in samples:
        value = sample.get(key)
        if value is not None:
            by_node.setdefault(sample["node"], []).append(float(value))
    stats = {node: {"average": sum(v) / len(v), "peak": max(v)} for node, v in by_node.items()}
    shown = {n: {k: round(v, 3) for k, v in s.items()} for n, s in stats.items()}
    observed = {"threshold": threshold, "per_node": shown}
    check = f"redis.monitor.{'cpu' if label == 'CPU' else 'memory'}"
    over_avg = [n for n, s in stats.items() if s["average"] > threshold]
    over_peak = [n for n, s in stats.items() if s["peak"] > threshold]
    fix = "add Redis nodes or memory (see the Genesys capacity guidance), then monitor again"
    if over_avg:
        listed = ", ".join(f"{n} {stats[n]['average']:.3g}%" for n in over_avg)
        return CheckResult(
            check,
            "error",
            f"average {label} above {threshold:g}% over the window: {listed}",
            fix,
            observed,
        )
    if over_peak:
        listed = ", ".join(f"{n} peak {stats[n]['peak']:.3g}%" for n in over_peak)
        return CheckResult(
            check, "warning", f"{label} peaked above {threshold:g}%: {listed}", fix, observed
        )
    peak = max((s["peak"] for s in stats.values()), default=0.0)
    return CheckResult(
        check,
        "ok",
        f"{label} stayed at or below {threshold:g}% on {len(stats)} nodes (peak {peak:.3g}%)",
        observed=observed,
    )

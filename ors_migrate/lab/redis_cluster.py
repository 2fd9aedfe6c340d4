"""A real Redis Cluster of `redis-server` processes, for the rehearsal lab and the tests.

Every node lives under `<base_dir>/redis/<port>/` (config, pid file, log, nodes file, AOF), so
that a later process can find and stop a cluster from its files alone (`RedisClusterLab.from_dir`).
Nodes are daemonized into their own session: the process that started them may exit or be killed
without taking the cluster down. Passwords only ever sit in files of mode 0600 and in the
`REDISCLI_AUTH` environment variable of `redis-cli`, never on a command line.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ors_migrate.processes import pid_alive

REDIS_SERVER = "redis-server"
REDIS_CLI = "redis-cli"
HOST = "127.0.0.1"
ADMIN_USER = "admin"
STATE_FILE = "lab.json"
SECRETS_FILE = "secrets.json"
BUS_PORT_OFFSET = 10000


class RedisLabError(RuntimeError):
    """The lab could not start or stop a Redis process; the message says which and why."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the lab's TLS material.

    `cert`/`key` are a client certificate for applications; the server certificate is also the
    cluster-bus client certificate, hence both usages. `wrong_*` come from a CA that the
    servers do not trust, for negative tests.
    """

    cacert: Path
    cert: Path
    key: Path
    server_cert: Path
    server_key: Path
    wrong_cacert: Path
    wrong_cert: Path
    wrong_key: Path


# --- files and processes ---------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, created with that mode (no window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _quote(value: str) -> str:
    """A value for a redis.conf line: double-quoted with backslash escapes."""
    if "\n" in value or "\r" in value:
        raise RedisLabError("values written to redis.conf cannot contain line breaks")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_ports(count: int, *, low: int = 20000, high: int = 29999) -> list[int]:
    """Free ports whose cluster-bus port (port + 10000) is free as well."""
    chosen: list[int] = []
    candidates = list(range(low, high + 1))
    random.shuffle(candidates)
    for port in candidates:
        if port in chosen or port + BUS_PORT_OFFSET in chosen:
            continue
        if _port_free(port) and _port_free(port + BUS_PORT_OFFSET):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RedisLabError(f"could not find {count} free ports between {low} and {high}")


def _pid_alive(pid: int) -> bool:
    """True for a running redis-server; a zombie or another program reusing the pid is not."""
    return pid_alive(pid, program=b"redis-server")


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _log_tail(logfile: Path, lines: int = 5) -> str:
    try:
        return "\n".join(logfile.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- TLS material ----------------------------------------------------------------------------


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ors-migrate lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: str,
    key: Any,
    issuer: tuple[Any, Any] | None,
    *,
    ca: bool = False,
    server: bool = False,
    client: bool = False,
) -> Any:
    """A certificate for `key`, signed by `issuer` (cert, key) or self-signed when None."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256())


def _write_pem(path: Path, cert: Any = None, key: Any = None) -> None:
    from cryptography.hazmat.primitives import serialization

    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(path, pem.decode("ascii"))


def _tls_files_in(directory: Path) -> TlsFiles:
    return TlsFiles(
        cacert=directory / "ca.crt",
        cert=directory / "client.crt",
        key=directory / "client.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        wrong_cacert=directory / "wrong-ca.crt",
        wrong_cert=directory / "wrong-client.crt",
        wrong_key=directory / "wrong-client.key",
    )


def generate_tls_files(directory: Path) -> TlsFiles:
    """A CA, a server/cluster-bus certificate, a client certificate, and an unrelated CA with
    its own client certificate. Keys are written with mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    files = _tls_files_in(directory)
    ca_key = _new_key()
    ca = _certificate("ors-migrate lab CA", ca_key, None, ca=True)
    _write_pem(files.cacert, cert=ca)
    for cert_path, key_path, subject, server in (
        (files.server_cert, files.server_key, "localhost", True),
        (files.cert, files.key, "ors-migrate lab client", False),
    ):
        key = _new_key()
        cert = _certificate(subject, key, (ca, ca_key), server=server, client=True)
        _write_pem(cert_path, cert=cert)
        _write_pem(key_path, key=key)
    wrong_ca_key = _new_key()
    wrong_ca = _certificate("unrelated CA", wrong_ca_key, None, ca=True)
    _write_pem(files.wrong_cacert, cert=wrong_ca)
    wrong_key = _new_key()
    wrong_cert = _certificate("unrelated client", wrong_key, (wrong_ca, wrong_ca_key), client=True)
    _write_pem(files.wrong_cert, cert=wrong_cert)
    _write_pem(files.wrong_key, key=wrong_key)
    return files


# --- one redis-server ------------------------------------------------------------------------


@dataclass(frozen=True)
class _NodeFiles:
    directory: Path

    @property
    def conf(self) -> Path:
        return self.directory / "redis.conf"

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.directory / "redis.log"

    @property
    def nodes_file(self) -> Path:
        return self.directory / "nodes.conf"


def _node_config(
    port: int,
    files: _NodeFiles,
    *,
    cluster: bool,
    aof: bool,
    tls: TlsFiles | None,
    acl: dict[str, str] | None,
    node_timeout_ms: int,
) -> str:
    """redis.conf for one node. `acl` maps user -> password and includes the admin user."""
    lines = [
        f"bind {HOST}",
        "daemonize yes",
        f"pidfile {_quote(str(files.pidfile))}",
        f"logfile {_quote(str(files.logfile))}",
        f"dir {_quote(str(files.directory))}",
        'save ""',
        f"appendonly {'yes' if aof else 'no'}",
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
    ]
    if cluster:
        lines += [
            "cluster-enabled yes",
            f"cluster-config-file {_quote(str(files.nodes_file))}",
            f"cluster-node-timeout {node_timeout_ms}",
        ]
    if tls is None:
        lines.append(f"port {port}")
    else:
        lines += [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {_quote(str(tls.server_cert))}",
            f"tls-key-file {_quote(str(tls.server_key))}",
            f"tls-ca-cert-file {_quote(str(tls.cacert))}",
            "tls-auth-clients yes",
            "tls-replication yes",
        ]
        lines += ["tls-cluster yes"] if cluster else []
    if acl:
        lines.append("user default off")
        for user, password in acl.items():
            keys = "~*" if user == ADMIN_USER else "~ORS:*"
            lines.append(f"user {user} on {_quote('>' + password)} {keys} &* +@all")
        lines += [f"masteruser {ADMIN_USER}", f"masterauth {_quote(acl[ADMIN_USER])}"]
    return "\n".join(lines) + "\n"


def _sentinel_config(port: int, files: _NodeFiles) -> str:
    """A Sentinel that monitors nothing: enough to answer INFO with redis_mode:sentinel."""
    lines = [
        f"bind {HOST}",
        f"port {port}",
        "daemonize yes",
        f"pidfile {_quote(str(files.pidfile))}",
        f"logfile {_quote(str(files.logfile))}",
        f"dir {_quote(str(files.directory))}",
    ]
    return "\n".join(lines) + "\n"


def _launch(args: list[str], files: _NodeFiles) -> None:
    """Start a daemonizing redis-server in a new session; config errors surface here."""
    proc = subprocess.run(
        args,
        cwd=files.directory,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip() or _log_tail(files.logfile)
        raise RedisLabError(f"{' '.join(args)} failed to start: {detail}")


def _terminate(pidfile: Path, timeout: float) -> None:
    """SIGKILL the process named in `pidfile` unless it ended within `timeout`."""
    pid = _read_pid(pidfile)
    if pid is None or _wait_until(lambda: not _pid_alive(pid), timeout):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not _wait_until(lambda: not _pid_alive(pid), 5.0):
        raise RedisLabError(f"redis-server pid {pid} ({pidfile}) survived SIGKILL")


class _Connector:
    """Builds redis-py clients and redis-cli environments for the lab's admin identity."""

    def __init__(self, tls: TlsFiles | None, admin_password: str | None) -> None:
        self.tls = tls
        self.admin_password = admin_password

    def client(self, port: int, timeout: float = 2.0) -> Any:
        """A client that fails at once instead of retrying: the lab polls on its own."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if self.admin_password is not None:
            kwargs.update(username=ADMIN_USER, password=self.admin_password)
        if self.tls is not None:
            kwargs.update(
                ssl=True,
                ssl_certfile=str(self.tls.cert),
                ssl_keyfile=str(self.tls.key),
                ssl_ca_certs=str(self.tls.cacert),
            )
        return redis.Redis(host=HOST, port=port, decode_responses=True, **kwargs)

    def cli_args(self) -> list[str]:
        args: list[str] = []
        if self.tls is not None:
            args += ["--tls", "--cacert", str(self.tls.cacert)]
            args += ["--cert", str(self.tls.cert), "--key", str(self.tls.key)]
        if self.admin_password is not None:
            args += ["--user", ADMIN_USER]
        return args

    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
        if self.admin_password is not None:
            env["REDISCLI_AUTH"] = self.admin_password
        return env

    def ping(self, port: int) -> bool:
        import redis

        try:
            with self.client(port, timeout=0.5) as conn:
                return bool(conn.ping())
        except (redis.RedisError, OSError):
            return False


# --- the cluster -----------------------------------------------------------------------------


class RedisClusterLab:
    """A Redis Cluster of `masters * (1 + replicas_per_master)` local redis-server processes.

    With `acl_users` (user -> password) the default user is turned off; each listed user may
    use `ORS:*` keys and every command, and an `admin` user with a generated password is used
    by the lab itself. With `tls` only TLS ports are opened and clients must present a
    certificate signed by the lab's CA (`tls_files`).
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        masters: int = 3,
        replicas_per_master: int = 1,
        aof: bool = True,
        tls: bool = False,
        acl_users: dict[str, str] | None = None,
        ports: list[int] | None = None,
        node_timeout_ms: int = 3000,
    ) -> None:
        if masters < 3:
            raise RedisLabError("redis-cli --cluster create needs at least 3 masters")
        if acl_users and ADMIN_USER in acl_users:
            raise RedisLabError(f"'{ADMIN_USER}' is the lab's own ACL user; choose another name")
        count = masters * (1 + replicas_per_master)
        if ports is not None and len(ports) != count:
            raise RedisLabError(f"{count} ports needed for {masters} masters, {len(ports)} given")
        self.base_dir = Path(base_dir).resolve()
        self.masters = masters
        self.replicas_per_master = replicas_per_master
        self.aof = aof
        self.tls = tls
        self.acl_users = dict(acl_users or {})
        self.node_timeout_ms = node_timeout_ms
        self.ports = list(ports) if ports is not None else []
        self.admin_password: str | None = None
        self.started_s: dict[str, float] = {}

    # paths and identity

    @property
    def root(self) -> Path:
        return self.base_dir / "redis"

    @property
    def nodes(self) -> list[str]:
        return [f"{HOST}:{port}" for port in self.ports]

    @property
    def tls_files(self) -> TlsFiles | None:
        return _tls_files_in(self.root / "tls") if self.tls else None

    def _files(self, port: int) -> _NodeFiles:
        return _NodeFiles(self.root / str(port))

    def _connector(self) -> _Connector:
        return _Connector(self.tls_files, self.admin_password)

    def client(self, port: int, timeout: float = 2.0) -> Any:
        """A plain redis-py client to one node, as the lab's admin (for tests and tooling)."""
        return self._connector().client(port, timeout)

    # life cycle

    def start(self, timeout: float = 60.0) -> RedisClusterLab:
        """Write configs, start every node, create the cluster and wait until it is ready."""
        self._clear_previous()
        began = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.ports:
            self.ports = pick_ports(self.masters * (1 + self.replicas_per_master))
        if self.tls:
            generate_tls_files(self.root / "tls")
        if self.acl_users:
            self.admin_password = secrets.token_urlsafe(24)
        self._save_state()
        try:
            self._start_processes(timeout)
            self.started_s["processes"] = time.monotonic() - began
            self._create_cluster(timeout)
            self.started_s["create"] = time.monotonic() - began
            self._wait_ready(timeout)
            self.started_s["ready"] = time.monotonic() - began
        except BaseException:
            self.stop()
            raise
        return self

    def _clear_previous(self) -> None:
        """Refuse to start over a running lab; remove a stopped one's node directories, whose
        nodes files would make the new nodes rejoin the old cluster."""
        if not (self.root / STATE_FILE).exists():
            return
        previous = self.from_dir(self.base_dir)
        if any(previous.pids().values()):
            raise RedisLabError(f"a Redis lab is already running in {self.root}; stop it first")
        for port in previous.ports:
            shutil.rmtree(previous._files(port).directory, ignore_errors=True)
        (self.root / STATE_FILE).unlink()

    def _acl(self) -> dict[str, str] | None:
        if self.admin_password is None:
            return None
        return {ADMIN_USER: self.admin_password, **self.acl_users}

    def _save_state(self) -> None:
        state = {
            "masters": self.masters,
            "replicas_per_master": self.replicas_per_master,
            "aof": self.aof,
            "tls": self.tls,
            "ports": self.ports,
            "node_timeout_ms": self.node_timeout_ms,
            "acl_users": sorted(self.acl_users),
        }
        (self.root / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        if self.admin_password is not None:
            users = {ADMIN_USER: self.admin_password, **self.acl_users}
            _write_private(self.root / SECRETS_FILE, json.dumps(users) + "\n")

    def _start_processes(self, timeout: float) -> None:
        tls = self.tls_files
        for port in self.ports:
            files = self._files(port)
            files.directory.mkdir(parents=True, exist_ok=True)
            config = _node_config(
                port,
                files,
                cluster=True,
                aof=self.aof,
                tls=tls,
                acl=self._acl(),
                node_timeout_ms=self.node_timeout_ms,
            )
            _write_private(files.conf, config)
            _launch([REDIS_SERVER, str(files.conf)], files)
        connector = self._connector()
        for port in self.ports:
            _await_ping(connector, port, self._files(port), timeout)

    def _create_cluster(self, timeout: float) -> None:
        connector = self._connector()
        command = [REDIS_CLI, *connector.cli_args(), "--cluster", "create", *self.nodes]
        command += ["--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"]
        proc = subprocess.run(
            command,
            env=connector.cli_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0 or "[ERR]" in proc.stdout:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise RedisLabError(f"redis-cli --cluster create failed: {tail}")

    def _wait_ready(self, timeout: float) -> None:
        """Every node says cluster_state:ok and knows every replica as one (gossip takes a
        moment to tell all nodes), and every replica's link to its master is up."""
        connector = self._connector()
        replicas = self.masters * self.replicas_per_master

        def ready() -> bool:
            import redis

            try:
                for port in self.ports:
                    with connector.client(port) as conn:
                        if conn.cluster("INFO").get("cluster_state") != "ok":
                            return False
                        view = conn.execute_command("CLUSTER", "NODES").splitlines()
                        flags = [line.split()[2].split(",") for line in view if line.strip()]
                        if sum("slave" in f for f in flags) != replicas:
                            return False
                        info = conn.info("replication")
                        if info["role"] == "slave" and info.get("master_link_status") != "up":
                            return False
            except (redis.RedisError, OSError):
                return False
            return True

        if not _wait_until(ready, timeout, interval=0.1):
            raise RedisLabError(f"the cluster on {', '.join(self.nodes)} did not become ready")

    def stop(self, timeout: float = 5.0) -> None:
        """SHUTDOWN NOSAVE every node, then SIGKILL what is still running after `timeout`.
        The files stay, for the logs and so that stopping again is harmless."""
        connector = self._connector()
        for port in self.ports:
            files = self._files(port)
            pid = _read_pid(files.pidfile)
            if pid is not None and _pid_alive(pid):
                _shutdown_nosave(connector, port)
        for port in self.ports:
            _terminate(self._files(port).pidfile, timeout)

    def kill_node(self, port: int) -> None:
        """SIGKILL one node, as a crash would."""
        pid = _read_pid(self._files(port).pidfile)
        if pid is None or not _pid_alive(pid):
            raise RedisLabError(f"no running redis-server on port {port}")
        os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: not _pid_alive(pid), 5.0)

    def restart_stopped(self, timeout: float = 30.0) -> list[int]:
        """Start every node that is not running again, with its config and cluster state
        (`nodes.conf`) as it left them, and wait until the cluster is ready: Redis back after
        an outage. Returns the ports started."""
        started = [port for port, pid in self.pids().items() if pid is None]
        for port in started:
            _launch([REDIS_SERVER, str(self._files(port).conf)], self._files(port))
        connector = self._connector()
        for port in started:
            _await_ping(connector, port, self._files(port), timeout)
        if started:
            self._wait_ready(timeout)
        return started

    def pids(self) -> dict[int, int | None]:
        """Port -> pid of the running process (None when not running)."""
        result: dict[int, int | None] = {}
        for port in self.ports:
            pid = _read_pid(self._files(port).pidfile)
            result[port] = pid if pid is not None and _pid_alive(pid) else None
        return result

    def status(self) -> dict[str, Any]:
        """What a `lab status` shows: nodes, whether each runs, and the cluster state."""
        connector = self._connector()
        state = "down"
        for port, pid in self.pids().items():
            if pid is not None and connector.ping(port):
                state = _cluster_state(connector, port)
                break
        return {
            "nodes": self.nodes,
            "running": {f"{HOST}:{p}": pid is not None for p, pid in self.pids().items()},
            "cluster_state": state,
            "tls": self.tls,
            "aof": self.aof,
            "acl_users": sorted(self.acl_users),
        }

    @classmethod
    def from_dir(cls, base_dir: Path) -> RedisClusterLab:
        """The lab that an earlier `start()` set up in `base_dir`, read from its files."""
        root = Path(base_dir).resolve() / "redis"
        try:
            state = json.loads((root / STATE_FILE).read_text())
        except FileNotFoundError:
            raise RedisLabError(f"no Redis lab in {root}") from None
        users: dict[str, str] = {}
        if (root / SECRETS_FILE).exists():
            users = json.loads((root / SECRETS_FILE).read_text())
        lab = cls(
            base_dir,
            masters=state["masters"],
            replicas_per_master=state["replicas_per_master"],
            aof=state["aof"],
            tls=state["tls"],
            ports=state["ports"],
            node_timeout_ms=state["node_timeout_ms"],
            acl_users={u: p for u, p in users.items() if u != ADMIN_USER},
        )
        lab.admin_password = users.get(ADMIN_USER)
        return lab

    def __enter__(self) -> RedisClusterLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _await_ping(connector: _Connector, port: int, files: _NodeFiles, timeout: float) -> None:
    """Wait for PING; give up at once when the process has died (a port taken meanwhile,
    a bad config), with the end of its log."""
    launched = time.monotonic()

    def answered() -> bool:
        pid = _read_pid(files.pidfile)
        if pid is not None and _pid_alive(pid):
            return connector.ping(port)
        if time.monotonic() - launched > 1.0:
            raise RedisLabError(f"redis-server for port {port} exited: {_log_tail(files.logfile)}")
        return False

    if not _wait_until(answered, timeout):
        raise RedisLabError(
            f"redis-server on port {port} did not answer PING: {_log_tail(files.logfile)}"
        )


def _shutdown_nosave(connector: _Connector, port: int) -> None:
    import redis

    try:
        with connector.client(port, timeout=1.0) as conn:
            conn.shutdown(nosave=True)
    except (redis.RedisError, OSError):
        return


def _cluster_state(connector: _Connector, port: int) -> str:
    import redis

    try:
        with connector.client(port) as conn:
            return str(conn.cluster("INFO").get("cluster_state", "unknown"))
    except (redis.RedisError, OSError):
        return "unknown"


class StandaloneRedis:
    """One redis-server that is not part of a cluster (or a Sentinel), to test rejection."""

    def __init__(self, base_dir: Path, *, sentinel: bool = False, port: int | None = None) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.sentinel = sentinel
        self.port = port or 0

    @property
    def node(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def _files(self) -> _NodeFiles:
        kind = "sentinel" if self.sentinel else "standalone"
        return _NodeFiles(self.base_dir / "redis" / f"{kind}-{self.port}")

    def start(self, timeout: float = 20.0) -> StandaloneRedis:
        if not self.port:
            self.port = pick_ports(1)[0]
        files = self._files
        files.directory.mkdir(parents=True, exist_ok=True)
        if self.sentinel:
            config = _sentinel_config(self.port, files)
        else:
            config = _node_config(
                self.port, files, cluster=False, aof=False, tls=None, acl=None, node_timeout_ms=0
            )
        _write_private(files.conf, config)
        args = [REDIS_SERVER, str(files.conf)] + (["--sentinel"] if self.sentinel else [])
        _launch(args, files)
        try:
            _await_ping(_Connector(None, None), self.port, files, timeout)
        except RedisLabError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if not self.port:
            return
        files = self._files
        pid = _read_pid(files.pidfile)
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
        _terminate(files.pidfile, timeout)

    def pid(self) -> int | None:
        pid = _read_pid(self._files.pidfile)
        return pid if pid is not None and _pid_alive(pid) else None

    def __enter__(self) -> StandaloneRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "RedisClusterLab",
    "RedisLabError",
    "StandaloneRedis",
    "TlsFiles",
    "generate_tls_files",
    "pick_ports",
]

"""The rehearsal lab: a real Redis Cluster, the CQL stand-in for Cassandra and simulated ORS HA
pairs on one machine, with a site file that drives them like a production site.

Every process the lab starts runs in its own process session with its files under the lab
directory, so killing `ors-migrate` never kills them; `lab down` stops them all.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ors_migrate.errors import OrsMigrateError
from ors_migrate.lab import orsctl
from ors_migrate.lab.faults import active_faults
from ors_migrate.lab.layout import (
    SIMULATOR_START_VERSION,
    UPGRADE_VERSION,
    LabLayout,
    read_json,
    read_pid,
    write_json_atomic,
)
from ors_migrate.processes import pid_alive

CASSANDRA_KEYSPACE = "orchestration"
REDIS_ORS_USER = "ors"
CASSANDRA_VERSION = "3.11.4"


class LabError(OrsMigrateError):
    """The lab could not be brought up or down."""


@dataclass(frozen=True)
class LabShape:
    clusters: int = 2
    pairs_per_cluster: int = 2
    session_rate: float = 8.0
    monitor_window_s: float = 3.0
    secure: bool = False  # Redis with TLS and an ACL user for ORS
    load_seed: int | None = None  # the same calls at the same time after lab up, run after run
    # The site file's `services.poll_interval_s`: short for tests; each poll of the lab's
    # Management Layer stand-in starts a Python process, so a large lab polled in parallel
    # spends more CPU polling than simulating.
    poll_interval_s: float = 0.1


@dataclass(frozen=True)
class LabTopology:
    """What the lab simulates: ORS clusters, HA pairs (primary first) and each application's
    installed version, and the shape of the Redis Cluster and the Cassandra stand-in."""

    site_name: str
    clusters: dict[str, list[str]]
    pairs: dict[str, tuple[str, str]]
    versions: dict[str, str]
    redis_masters: int = 3
    redis_replicas: int = 1
    redis_tls: bool = False
    redis_user: str | None = None  # ACL user ORS logs in as ("default": password only)
    cassandra_version: str = CASSANDRA_VERSION
    cassandra_keyspace: str = CASSANDRA_KEYSPACE


def generic_topology(shape: LabShape) -> LabTopology:
    """`--clusters N --pairs-per-cluster M`: clusters ORS_CL1..N with pairs clI-pairJ."""
    clusters: dict[str, list[str]] = {}
    pairs: dict[str, tuple[str, str]] = {}
    for c in range(1, shape.clusters + 1):
        cluster = f"ORS_CL{c}"
        clusters[cluster] = []
        for p in range(1, shape.pairs_per_cluster + 1):
            pair = f"cl{c}-pair{p}"
            clusters[cluster].append(pair)
            pairs[pair] = (f"ors-cl{c}-p{p}-a", f"ors-cl{c}-p{p}-b")
    versions = {app: SIMULATOR_START_VERSION for members in pairs.values() for app in members}
    return LabTopology(
        site_name="ors-lab",
        clusters=clusters,
        pairs=pairs,
        versions=versions,
        redis_tls=shape.secure,
        redis_user=REDIS_ORS_USER if shape.secure else None,
    )


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


def _options_text(app: str, cassandra_nodes: str, keyspace: str = CASSANDRA_KEYSPACE) -> str:
    return (
        f"; Options of ORS application {app}, Application object in Configuration Server\n"
        "; (exported in the Genesys options format; the lab's simulated ORS reads it at start)\n"
        "[orchestration]\n"
        "; sessionid-with-nodeid is configured by the migration\n"
        "max-sessions=10000\n"
        "\n"
        "[persistence]\n"
        "; Cassandra session persistence, in use before the migration\n"
        "type=cassandra\n"
        f"cassandra-nodes={cassandra_nodes}\n"
        f"cassandra-keyspace={keyspace}\n"
        "\n"
        "[log]\n"
        "verbose=standard\n"
    )


def _password_file(layout: LabLayout) -> Path:
    return secret_file(layout, "redis-ors.password")


def secret_file(layout: LabLayout, name: str) -> Path:
    return layout.root / "secrets" / name


def new_secret_file(layout: LabLayout, name: str, *, reuse: bool = False) -> Path:
    """A fresh random secret in a 0600 file under the lab's 0700 `secrets/` (kept when `reuse`
    and it exists); site files refer to it as file:PATH."""
    import secrets

    path = secret_file(layout, name)
    if reuse and path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(18) + "\n")
    return path


def _new_redis_password(layout: LabLayout) -> str:
    """A fresh password for the lab's ORS user, kept in a 0600 file the site file refers to."""
    return new_secret_file(layout, "redis-ors.password").read_text().strip()


def lab_services(layout: LabLayout) -> dict[str, str]:
    """The lab's Management Layer: `orsctl` commands for each service command of a site."""
    ctl = (
        f"{shlex.quote(sys.executable)} -m ors_migrate.lab.orsctl "
        f"--dir {shlex.quote(str(layout.root))}"
    )
    return {
        "start": ctl + " start {app}",
        "stop": ctl + " stop {app}",
        "status": ctl + " status {app}",
        "switchover": ctl + " switchover {pair}",
        "version": ctl + " version {app}",
        "sessions": ctl + " sessions {app}",
        "upgrade": ctl + " upgrade {app} {version}",
        "log": ctl + " log {app}",
    }


def _start_detached(args: list[str], log: Path, cwd: Path) -> int:
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    return proc.pid


def _wait_file(path: Path, pid: int, timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = read_json(path)
        if data:
            return data
        if not pid_alive(pid):
            raise LabError(f"{what} exited at start; see {log}")
        time.sleep(0.05)
    raise LabError(f"{what} did not start within {timeout:g} s; see {log}")


def start_cassandra(
    layout: LabLayout, cql_port: int = 0, thrift_port: int = 0, release: str = CASSANDRA_VERSION
) -> dict[str, Any]:
    """Start the lab's CQL stand-in detached (port 0: any free port) and record its pid."""
    base = layout.root / "cassandra"
    base.mkdir(parents=True, exist_ok=True)
    ready = base / "ready.json"
    ready.unlink(missing_ok=True)
    log = base / "standin.log"
    pid = _start_detached(
        [
            sys.executable,
            "-m",
            "ors_migrate.lab.cql_standin",
            "--port",
            str(cql_port),
            "--thrift-port",
            str(thrift_port),
            "--release-version",
            release,
            "--cluster-name",
            "ors-lab",
            "--ready-file",
            str(ready),
        ],
        log,
        base,
    )
    (base / "pid").write_text(str(pid))
    info = _wait_file(ready, pid, 20, "the CQL stand-in", log)
    return {"cql_port": int(info["cql_port"]), "thrift_port": int(info["thrift_port"]), "pid": pid}


def _site_yaml(layout: LabLayout, config: dict[str, Any]) -> str:
    apps_root = layout.root / "apps"
    lines = [
        "# Site file of a rehearsal lab made by `ors-migrate lab up`.",
        "# Redis is a real Redis Cluster; ORS applications are simulated; Cassandra is a CQL",
        "# stand-in (a protocol-level test double, not Cassandra).",
        "version: 1",
        f"name: {config['site_name']}",
        "hosts:",
        "  lab:",
        "    transport: local",
        "    platform: linux",
        "options_backend:",
        "  kind: ini-file",
        f"  path: {json.dumps(str(apps_root) + '/{app}/options.ini')}",
        "services:",
        *[f"  {key}: {json.dumps(command)}" for key, command in lab_services(layout).items()],
        "  ready_timeout_s: 30",
        f"  poll_interval_s: {config.get('poll_interval_s', 0.1)}",
        "ors:",
        "  min_version: 8.1.401.10",
        f"  target_version: {UPGRADE_VERSION}",
        "  sessionid_with_nodeid_section: orchestration",
        "  digital_persistence:",
        "    section: persistence",
        "    option: enable-multimedia-persistence",
        '    value: "false"',
        "ors_clusters:",
    ]
    for cluster, pairs in config["clusters"].items():
        lines += [f"  - name: {cluster}", "    ha_pairs:"]
        for pair in pairs:
            lines += [f"      - name: {pair}", "        apps:"]
            primary, backup = config["pairs"][pair]["apps"]
            for app, role in ((primary, "primary"), (backup, "backup")):
                lines += [
                    f"          - name: {app}",
                    "            host: lab",
                    f"            role: {role}",
                    "            memory_mb: 64",
                ]
    lines += ["redis:", "  nodes:"]
    lines += [f"    - {node}" for node in config["redis_nodes"]]
    lines += ["  aof: true", "  replicas_per_master: 1"]
    if config.get("redis_tls"):
        tls = config["redis_tls"]
        lines += [
            f"  username: {REDIS_ORS_USER}",
            f"  password: {json.dumps('file:' + str(_password_file(layout)))}",
            "  tls:",
            "    enabled: true",
            f"    cert: {json.dumps(tls['cert'])}",
            f"    key: {json.dumps(tls['key'])}",
            f"    cacert: {json.dumps(tls['cacert'])}",
        ]
    lines += [
        "  monitor:",
        f"    window_s: {config['monitor_window_s']}",
        "    interval_s: 0.5",
        "    # thresholds are ors-migrate's own (the documents give none)",
        "    max_cpu_percent: 80",
        "    max_memory_percent: 80",
        "cassandra:",
        "  in_use: true",
        "  contact_points:",
        f"    - 127.0.0.1:{config['cassandra']['cql_port']}",
        f"  thrift_port: {config['cassandra']['thrift_port']}",
        f"  keyspace: {CASSANDRA_KEYSPACE}",
        "# Verification windows: short, because the lab's simulated calls never stop.",
        "verification:",
        "  new_sessions_window_s: 10",
        "  serialization_window_s: 10",
        "  restore_window_s: 10",
        "  # the simulated ORS puts its node id (the application name) in every session id",
        '  app_key_pattern: "ORS:{cluster}:*:session:{app}-*"',
        "",
    ]
    return "\n".join(lines)


def lab_up(
    directory: Path,
    shape: LabShape = LabShape(),
    *,
    topology: LabTopology | None = None,
    site_writer: Callable[[LabLayout, dict[str, Any]], str] | None = None,
) -> LabLayout:
    """Start a lab in `directory` and write its site file. By default the lab is the generic
    estate of `shape`; with `topology` and `site_writer` it takes another shape and site file
    (a rehearsal of a site's own migration, see `lab.from_site`)."""
    from ors_migrate.lab.cassandra_sessions import CassandraSessionStore
    from ors_migrate.lab.redis_cluster import RedisClusterLab

    topology = topology or generic_topology(shape)
    layout = LabLayout(directory.resolve())
    if layout.config.exists() and any(
        pid_alive(read_pid(layout.pid(app))) for app in layout.load_config()["apps"]
    ):
        raise LabError(f"a lab is already running in {layout.root}; run `lab down` first")
    layout.root.mkdir(parents=True, exist_ok=True)
    try:
        acl = {topology.redis_user: _new_redis_password(layout)} if topology.redis_user else None
        try:
            redis = RedisClusterLab(
                layout.root,
                masters=topology.redis_masters,
                replicas_per_master=topology.redis_replicas,
                aof=True,
                tls=topology.redis_tls,
                acl_users=acl,
            ).start()
        except OrsMigrateError:
            raise
        except Exception as exc:
            raise LabError(f"the lab's Redis Cluster did not start: {exc}") from None
        cassandra = start_cassandra(layout, release=topology.cassandra_version)
        try:
            store = CassandraSessionStore(
                [f"127.0.0.1:{cassandra['cql_port']}"], topology.cassandra_keyspace
            )
            store.ensure_schema()
            store.close()
        except Exception as exc:
            raise LabError(f"the CQL stand-in did not accept the ORS schema: {exc}") from None
        config = _lab_config(shape, topology, redis.nodes, cassandra)
        if redis.tls_files is not None:
            tls = redis.tls_files
            config["redis_tls"] = {
                "cacert": str(tls.cacert),
                "cert": str(tls.cert),
                "key": str(tls.key),
            }
        write_json_atomic(layout.config, config)
        cassandra_nodes = f"127.0.0.1:{cassandra['cql_port']}"
        for app in config["apps"]:
            layout.app_dir(app).mkdir(parents=True, exist_ok=True)
            # Created 0600 as an operator should keep it: it will hold the Redis password.
            options = layout.options(app)
            options.touch(mode=0o600)
            options.write_text(_options_text(app, cassandra_nodes, topology.cassandra_keyspace))
            layout.installed_version(app).write_text(topology.versions[app] + "\n")
        for pair, info in config["pairs"].items():
            write_json_atomic(layout.pair(pair), {"primary": info["apps"][0], "since": time.time()})
        try:
            for member in (0, 1):  # primaries first, as an operator would
                for info in config["pairs"].values():
                    orsctl.start(layout, info["apps"][member])
        except orsctl.LabCommandError as exc:
            raise LabError(f"a simulated ORS application did not start: {exc}") from None
        text = site_writer(layout, config) if site_writer else _site_yaml(layout, config)
        layout.site.write_text(text)
    except BaseException:
        lab_down(layout.root)
        raise
    return layout


def _lab_config(
    shape: LabShape, topology: LabTopology, redis_nodes: list[str], cassandra: dict[str, Any]
) -> dict[str, Any]:
    members = [app for pair in topology.pairs.values() for app in pair]
    ports = iter(_free_ports(len(members)))
    pairs: dict[str, Any] = {}
    apps: dict[str, Any] = {}
    for cluster, names in topology.clusters.items():
        for pair in names:
            pairs[pair] = {"cluster": cluster, "apps": list(topology.pairs[pair])}
            for app in topology.pairs[pair]:
                apps[app] = {"cluster": cluster, "pair": pair, "http_port": next(ports)}
    return {
        "site_name": topology.site_name,
        "python": sys.executable,
        "redis_nodes": redis_nodes,
        "redis_user": topology.redis_user,
        "cassandra": cassandra,
        "session_rate": shape.session_rate,
        "session_min_s": 2.0,
        "session_max_s": 5.0,
        "session_ttl_s": 300,
        "session_wave_s": 30.0,
        "load_seed": shape.load_seed,
        "load_epoch": time.time(),
        "monitor_window_s": shape.monitor_window_s,
        "poll_interval_s": shape.poll_interval_s,
        "clusters": {cluster: list(names) for cluster, names in topology.clusters.items()},
        "pairs": pairs,
        "apps": apps,
    }


def lab_status(directory: Path) -> dict[str, Any]:
    layout = LabLayout(directory.resolve())
    if not layout.config.exists():
        raise LabError(f"no lab in {layout.root} (no lab.json); run `lab up --dir {directory}`")
    config = layout.load_config()
    apps = []
    for app in config["apps"]:
        st = orsctl.status(layout, app)
        apps.append(
            {
                "cluster": st["cluster"],
                "ha_pair": st["ha_pair"],
                "app": app,
                "role": st["role"],
                "version": st.get("version"),
                "type": st.get("type"),
                "created": st.get("created", 0),
                "restored": st.get("restored", 0),
                "lost": st.get("lost", 0),
                "active": st.get("active", 0),
                "persistence_errors": st.get("persistence_errors", 0),
                "starts": orsctl.starts(layout, app),
                "faults": active_faults(layout, app),
            }
        )
    cassandra_pid = read_pid(layout.root / "cassandra" / "pid")
    return {
        "dir": str(layout.root),
        "site": str(layout.site),
        "apps": apps,
        "switchovers": _promotions(layout),
        "services": orsctl.service_record(layout),
        "load_seed": config.get("load_seed"),
        "redis": {"nodes": config["redis_nodes"]},
        "cassandra": {
            "stand_in": True,
            "cql_port": config["cassandra"]["cql_port"],
            "running": pid_alive(cassandra_pid),
        },
    }


def _promotions(layout: LabLayout) -> list[dict[str, Any]]:
    try:
        lines = layout.events.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def _terminate(pid: int | None, timeout: float = 10.0) -> None:
    if not pid_alive(pid):
        return
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def lab_down(directory: Path) -> list[str]:
    """Stop everything the lab started; returns what was stopped."""
    from ors_migrate.lab.redis_cluster import RedisClusterLab

    layout = LabLayout(directory.resolve())
    stopped = []
    if layout.config.exists():
        for app in layout.load_config()["apps"]:
            pid = read_pid(layout.pid(app))
            if pid_alive(pid):
                _terminate(pid)
                stopped.append(f"ORS simulator {app} (pid {pid})")
    cassandra_pid = read_pid(layout.root / "cassandra" / "pid")
    if pid_alive(cassandra_pid):
        _terminate(cassandra_pid)
        stopped.append(f"CQL stand-in (pid {cassandra_pid})")
    if (layout.root / "redis").exists():
        RedisClusterLab.from_dir(layout.root).stop()
        stopped.append("Redis Cluster")
    return stopped

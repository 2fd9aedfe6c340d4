"""Redis checks against real `redis-server` processes on 127.0.0.1: a plain cluster with
replicas, a cluster without replicas or AOF, a TLS + ACL cluster, a standalone server and a
Sentinel. Every process started here is stopped here, and that is asserted."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ors_migrate.actions import redis_checks
from ors_migrate.errors import TransportError, VerificationFailed
from ors_migrate.lab.redis_cluster import (
    RedisClusterLab,
    RedisLabError,
    StandaloneRedis,
    pick_ports,
)
from ors_migrate.site import MonitorSettings, RedisSettings
from ors_migrate.step import CheckResult

pytestmark = pytest.mark.needs("redis-server", "redis-cli")

ACL_USER = "ors"
ACL_PASSWORD = "s3cret-Pa55 word"
HEALTH_CHECKS = {
    "redis.connect",
    "redis.mode",
    "redis.cluster_state",
    "redis.slots",
    "redis.nodes",
    "redis.replicas",
    "redis.aof",
    "redis.memory",
    "redis.capacity",
}


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def severities(results: list[CheckResult]) -> dict[str, str]:
    return {r.check: r.severity for r in results}


def settings_for(nodes: list[str], **extra: object) -> RedisSettings:
    return RedisSettings.model_validate({"nodes": nodes, "connect_timeout_s": 1.0, **extra})


def stopped(lab: RedisClusterLab | StandaloneRedis) -> None:
    """Stop and prove that no process of it is left."""
    lab.stop()
    if isinstance(lab, RedisClusterLab):
        assert not any(lab.pids().values()), lab.pids()
    else:
        assert lab.pid() is None


@pytest.fixture(scope="module")
def plain_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterLab]:
    lab = RedisClusterLab(tmp_path_factory.mktemp("plain"), node_timeout_ms=2000).start()
    yield lab
    stopped(lab)


@pytest.fixture(scope="module")
def bare_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterLab]:
    """No replicas and no AOF: warnings, and a master that can be killed for good."""
    lab = RedisClusterLab(
        tmp_path_factory.mktemp("bare"), replicas_per_master=0, aof=False, node_timeout_ms=1000
    ).start()
    yield lab
    stopped(lab)


@pytest.fixture(scope="module")
def tls_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterLab]:
    lab = RedisClusterLab(
        tmp_path_factory.mktemp("tls"), tls=True, acl_users={ACL_USER: ACL_PASSWORD}
    ).start()
    yield lab
    stopped(lab)


def tls_settings(lab: RedisClusterLab, **tls: object) -> RedisSettings:
    files = lab.tls_files
    assert files is not None
    chosen = {"enabled": True, "cert": str(files.cert), "key": str(files.key)}
    chosen["cacert"] = str(files.cacert)
    chosen.update(tls)
    return settings_for(
        lab.nodes[:2],
        username=ACL_USER,
        password="env:ORS_REDIS_PASSWORD",
        tls={k: v for k, v in chosen.items() if v is not None},
    )


# --- healthy and unhealthy clusters ----------------------------------------------------------


def test_healthy_cluster_passes_every_check(plain_lab: RedisClusterLab) -> None:
    results = redis_checks.cluster_health(
        settings_for(plain_lab.nodes[:1]), None, ors_app_memory_mb=[256], ha_pair_count=3
    )
    assert {r.check for r in results} == HEALTH_CHECKS
    assert all(r.severity == "ok" for r in results), [r.message for r in results]
    found = by_check(results)
    assert found["redis.slots"].observed["slots_ok"] == 16384
    assert found["redis.nodes"].observed == {"masters": 3, "nodes": 6, "unreachable": {}}
    assert set(found["redis.replicas"].observed["replicas_per_master"].values()) == {1}


def test_too_many_ha_pairs_and_too_little_memory_are_reported_with_numbers(
    plain_lab: RedisClusterLab,
) -> None:
    with plain_lab.client(plain_lab.ports[0]) as conn:
        system_mb = int(conn.info("memory")["total_system_memory"]) // (1024 * 1024)
    settings = settings_for(plain_lab.nodes[:1])
    warned = by_check(
        redis_checks.cluster_health(
            settings, None, ors_app_memory_mb=[system_mb + 1024], ha_pair_count=12
        )
    )
    assert warned["redis.capacity"].severity == "warning"
    assert "12 ORS HA pairs on 3 masters" in warned["redis.capacity"].message
    assert "about 4 masters" in warned["redis.capacity"].message
    assert warned["redis.memory"].severity == "warning"
    assert f"{system_mb + 1024} MB" in warned["redis.memory"].message
    failed = by_check(
        redis_checks.cluster_health(settings, None, ors_app_memory_mb=[system_mb * 3])
    )
    assert failed["redis.memory"].severity == "error"
    assert "under half" in failed["redis.memory"].message
    assert failed["redis.memory"].fix


def test_standalone_redis_is_rejected_by_name(tmp_path: Path) -> None:
    server = StandaloneRedis(tmp_path).start()
    try:
        settings = settings_for([server.node])
        results = redis_checks.cluster_health(settings, None)
        with pytest.raises(VerificationFailed) as raised:
            redis_checks.client(settings, None)
    finally:
        stopped(server)
    assert severities(results) == {"redis.mode": "error"}
    expected = f"{server.node} is a standalone Redis, not a Redis Cluster"
    assert results[0].message.startswith(expected)
    assert "ORS supports Redis Cluster only" in results[0].message
    assert results[0].fix
    assert expected in str(raised.value)


def test_sentinel_is_rejected_by_name(tmp_path: Path) -> None:
    sentinel = StandaloneRedis(tmp_path, sentinel=True).start()
    try:
        results = redis_checks.cluster_health(settings_for([sentinel.node]), None)
    finally:
        stopped(sentinel)
    assert severities(results) == {"redis.mode": "error"}
    assert f"{sentinel.node} is a Redis Sentinel, not a Redis Cluster" in results[0].message


def test_connection_refused_names_host_and_port() -> None:
    port = pick_ports(1)[0]
    results = redis_checks.cluster_health(settings_for([f"127.0.0.1:{port}"]), None)
    assert severities(results) == {"redis.connect": "error"}
    assert results[0].message.startswith(f"connection refused on 127.0.0.1:{port}")
    with pytest.raises(TransportError, match="connection refused"):
        redis_checks.client(settings_for([f"127.0.0.1:{port}"]), None)


def test_a_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        node = f"127.0.0.1:{listener.getsockname()[1]}"
        settings = settings_for([node], connect_timeout_s=0.3)
        results = redis_checks.cluster_health(settings, None)
    assert results[0].message == f"timed out after 0.3 s connecting to {node}"


def test_seeds_that_do_not_answer_are_skipped(plain_lab: RedisClusterLab) -> None:
    dead = f"127.0.0.1:{pick_ports(1)[0]}"
    results = redis_checks.cluster_health(settings_for([dead, plain_lab.nodes[0]]), None)
    found = by_check(results)
    assert found["redis.connect"].severity == "ok"
    assert dead in found["redis.connect"].observed["unreachable_seeds"]


def test_no_replicas_and_no_aof_are_warnings(bare_lab: RedisClusterLab) -> None:
    results = redis_checks.cluster_health(settings_for(bare_lab.nodes), None)
    assert severities(results) == {
        **dict.fromkeys(HEALTH_CHECKS, "ok"),
        "redis.replicas": "warning",
        "redis.aof": "warning",
    }
    found = by_check(results)
    assert "AOF persistence is off on 3 of 3 nodes" in found["redis.aof"].message
    assert "appendonly yes" in found["redis.aof"].fix
    assert "masters without a replica" in found["redis.replicas"].message


def test_killed_master_fails_nodes_slots_then_cluster_state(bare_lab: RedisClusterLab) -> None:
    victim = bare_lab.ports[1]
    bare_lab.kill_node(victim)
    settings = settings_for([n for n in bare_lab.nodes if not n.endswith(f":{victim}")])
    found = by_check(redis_checks.cluster_health(settings, None))
    assert found["redis.nodes"].severity == "error"
    assert f"127.0.0.1:{victim}: connection refused" in found["redis.nodes"].message
    assert found["redis.slots"].severity == "error"
    assert f"unreachable masters: 127.0.0.1:{victim}" in found["redis.slots"].message
    deadline = time.monotonic() + 10
    while found["redis.cluster_state"].severity == "ok" and time.monotonic() < deadline:
        time.sleep(0.25)
        found = by_check(redis_checks.cluster_health(settings, None))
    assert found["redis.cluster_state"].severity == "error"
    assert "says fail" in found["redis.cluster_state"].message


# --- TLS and ACL -----------------------------------------------------------------------------


def test_tls_acl_cluster_passes_with_the_right_material(tls_lab: RedisClusterLab) -> None:
    results = redis_checks.cluster_health(tls_settings(tls_lab), ACL_PASSWORD)
    assert all(r.severity == "ok" for r in results), [r.message for r in results]
    connect = by_check(results)["redis.connect"].message
    assert f"as user {ACL_USER}, over TLS with a client certificate" in connect
    cluster = redis_checks.client(tls_settings(tls_lab), ACL_PASSWORD)
    try:
        cluster.set("ORS:tls:probe", "1", ex=60)
        assert cluster.get("ORS:tls:probe") == "1"
    finally:
        cluster.close()


def test_tls_sni_name_must_be_in_the_certificate(tls_lab: RedisClusterLab) -> None:
    good = redis_checks.cluster_health(tls_settings(tls_lab, sni="localhost"), ACL_PASSWORD)
    assert all(r.severity == "ok" for r in good)
    bad = redis_checks.cluster_health(tls_settings(tls_lab, sni="redis.example"), ACL_PASSWORD)
    assert bad[0].severity == "error"
    assert "not valid for the SNI name 'redis.example'" in bad[0].message


@pytest.mark.parametrize(
    ("password", "tls", "expected"),
    [
        ("wrong-password", {}, f"authentication failed for user {ACL_USER} on 127.0.0.1:"),
        (None, {}, f"authentication failed for user {ACL_USER} on 127.0.0.1:"),
        (ACL_PASSWORD, {"cert": None, "key": None}, "requires a TLS client certificate"),
        (ACL_PASSWORD, {"cacert": "wrong_cacert"}, "TLS certificate verify failed for 127.0.0.1:"),
        (
            ACL_PASSWORD,
            {"cert": "wrong_cert", "key": "wrong_key"},
            "rejected the TLS client certificate",
        ),
        (ACL_PASSWORD, {"cert": "/nonexistent/client.crt"}, "cannot read redis.tls.cert"),
        (ACL_PASSWORD, {"key": None}, "redis.tls.cert and redis.tls.key must be given together"),
    ],
    ids=[
        "wrong-password",
        "no-password",
        "no-client-cert",
        "wrong-ca",
        "foreign-cert",
        "missing-file",
        "cert-without-key",
    ],
)
def test_tls_acl_failures_are_explained(
    tls_lab: RedisClusterLab, password: str | None, tls: dict[str, str | None], expected: str
) -> None:
    files = tls_lab.tls_files
    assert files is not None
    chosen = {k: str(getattr(files, v)) if v and hasattr(files, v) else v for k, v in tls.items()}
    settings = tls_settings(tls_lab, **chosen)
    results = redis_checks.cluster_health(settings, password)
    assert len(results) == 1 and results[0].severity == "error"
    assert expected in results[0].message
    assert results[0].fix
    if password:
        assert password not in repr(results[0].as_dict())
    with pytest.raises(VerificationFailed, match=expected.split(" 127")[0]):
        redis_checks.client(settings, password)


def test_plain_client_against_tls_cluster_hints_at_tls(tls_lab: RedisClusterLab) -> None:
    settings = settings_for(tls_lab.nodes[:1], username=ACL_USER, password="env:X")
    results = redis_checks.cluster_health(settings, ACL_PASSWORD)
    assert results[0].message == f"{tls_lab.nodes[0]} closed the connection"
    assert "redis.tls.enabled" in results[0].fix


def test_lab_keeps_passwords_off_command_lines_and_in_private_files(
    tls_lab: RedisClusterLab,
) -> None:
    for port, pid in tls_lab.pids().items():
        assert pid is not None
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert ACL_PASSWORD not in cmdline and str(tls_lab.admin_password) not in cmdline
        conf = tls_lab.root / str(port) / "redis.conf"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert ACL_PASSWORD in conf.read_text()
    files = tls_lab.tls_files
    assert files is not None
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600


# --- serialization and monitoring ------------------------------------------------------------


def test_serialization_counts_keys_on_every_primary_with_scan(plain_lab: RedisClusterLab) -> None:
    settings = settings_for(plain_lab.nodes[:1])
    cluster = redis_checks.client(settings, None)
    try:
        for i in range(60):
            cluster.set(f"ORS:lab1:session:{i}", "x", ex=300 if i % 3 else None)
        cluster.set("ORS:lab2:session:1", "other cluster", ex=300)
        cluster.set("ORS:lab10:session:1", "a cluster whose name starts with lab1", ex=300)
        cluster.set("unrelated:1", "y")
        primaries = [n for n in cluster.get_nodes() if n.server_type == "primary"]
        for node in primaries:
            cluster.get_redis_connection(node).config_resetstat()
    finally:
        cluster.close()
    result = redis_checks.serialization_check(settings, None, "lab1")
    assert result.severity == "ok"
    assert result.observed["keys"] == 60
    assert result.observed["keys_with_ttl"] == 40
    assert result.observed["primaries"] == 3
    per_node = result.observed["per_node"]
    assert sum(n["keys"] for n in per_node.values()) == 60
    assert sum(1 for n in per_node.values() if n["keys"]) >= 2
    for address in per_node:
        host, port = address.rsplit(":", 1)
        with plain_lab.client(int(port)) as conn:
            stats = conn.info("commandstats")
        assert "cmdstat_scan" in stats
        assert "cmdstat_keys" not in stats


def test_serialization_without_keys_is_an_error(plain_lab: RedisClusterLab) -> None:
    result = redis_checks.serialization_check(settings_for(plain_lab.nodes[:1]), None, "absent")
    assert result.severity == "error"
    assert "found 0 keys under ORS:absent on 3 primaries" in result.message
    assert "type=redis" in result.fix


def test_serialization_with_the_acl_user_over_tls(tls_lab: RedisClusterLab) -> None:
    settings = tls_settings(tls_lab)
    cluster = redis_checks.client(settings, ACL_PASSWORD)
    try:
        for i in range(10):
            cluster.set(f"ORS:tlsrun:{i}", "x", ex=300)
    finally:
        cluster.close()
    result = redis_checks.serialization_check(settings, ACL_PASSWORD, "tlsrun", min_keys=10)
    assert (result.severity, result.observed["keys"], result.observed["keys_with_ttl"]) == (
        "ok",
        10,
        10,
    )


def test_sampling_covers_every_node_and_thresholds_fire(plain_lab: RedisClusterLab) -> None:
    seen: list[dict[str, object]] = []
    samples = redis_checks.sample_resources(
        settings_for(plain_lab.nodes[:1]), None, window_s=0.6, interval_s=0.2, on_sample=seen.append
    )
    assert seen == samples
    assert {s["node"] for s in samples} == set(plain_lab.nodes)
    assert len(samples) >= 2 * len(plain_lab.nodes)
    for sample in samples:
        assert sample["cpu_percent"] is not None and sample["cpu_percent"] >= 0
        assert 0 < sample["memory_percent"] < 100
        assert sample["used_memory"] > 0 and sample["total_system_memory"] > 0
    relaxed = redis_checks.evaluate_samples(samples, MonitorSettings())
    assert [r.severity for r in relaxed] == ["ok", "ok"]
    strict = MonitorSettings(max_cpu_percent=0.0001, max_memory_percent=0.0001)
    fired = by_check(redis_checks.evaluate_samples(samples, strict))
    assert fired["redis.monitor.cpu"].severity == "error"
    assert fired["redis.monitor.memory"].severity == "error"
    assert "average memory above 0.0001%" in fired["redis.monitor.memory"].message


def test_a_peak_warns_and_a_silent_node_fails() -> None:
    samples = [
        {"node": "a:1", "cpu_percent": 10.0, "memory_percent": 5.0},
        {"node": "a:1", "cpu_percent": 95.0, "memory_percent": 5.0},
        {"node": "a:1", "cpu_percent": 10.0, "memory_percent": 5.0},
        {"node": "b:2", "timestamp": 0.0, "error": "connection refused on b:2"},
    ]
    found = by_check(redis_checks.evaluate_samples(samples, MonitorSettings()))
    assert found["redis.monitor.cpu"].severity == "warning"
    assert "peak 95%" in found["redis.monitor.cpu"].message
    assert found["redis.monitor.memory"].severity == "ok"
    assert found["redis.monitor.nodes"].severity == "error"
    assert redis_checks.evaluate_samples([], MonitorSettings())[0].severity == "error"


def test_cluster_nodes_parsing_counts_slot_ranges_and_skips_migrations() -> None:
    text = textwrap.dedent(
        """\
        a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461->-b2]
        b2 127.0.0.1:7001@17001,host master - 0 0 2 connected 5461-10922 16383
        c3 127.0.0.1:7002@17002 slave,fail a1 0 0 1 disconnected
        """
    )
    views = redis_checks.parse_cluster_nodes(text)
    assert [(v.address, v.slots, v.is_master, v.failing) for v in views] == [
        ("127.0.0.1:7000", 5461, True, False),
        ("127.0.0.1:7001", 5463, True, False),
        ("127.0.0.1:7002", 0, False, True),
    ]
    assert views[2].master_id == "a1" and not views[2].connected


# --- the lab outlives the process that started it ---------------------------------------------


def test_lab_survives_its_parent_and_stops_from_its_files(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from ors_migrate.lab.redis_cluster import RedisClusterLab\n"
        "RedisClusterLab(Path(sys.argv[1]), replicas_per_master=0).start()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr
    lab = RedisClusterLab.from_dir(tmp_path)
    try:
        assert all(lab.pids().values())
        assert lab.status()["cluster_state"] == "ok"
    finally:
        stopped(lab)
    stopped(RedisClusterLab.from_dir(tmp_path))


def test_a_node_that_cannot_bind_fails_fast_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        server = StandaloneRedis(tmp_path, port=taken.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(RedisLabError, match="Address already in use"):
            server.start()
    assert time.monotonic() - started < 10

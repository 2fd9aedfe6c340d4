"""Fault injection against the lab: for each fault the run halts or rolls back as SPEC 3.3 says,
the message names the cause, no option value is lost, and the run can be resumed or rolled back
afterwards. Labs here are one ORS cluster with one HA pair unless a scenario needs more."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sshd_fixture
from conftest import cli
from durable_runs import Event, cli_json, journal_events, lab_apps, run_status, start_run

from ors_migrate.lab.layout import LabLayout, read_pid
from ors_migrate.lab.redis_cluster import RedisClusterLab


def when(
    state_dir: Path,
    predicate: Callable[[list[Event]], bool],
    proc: subprocess.Popen[str],
    timeout: float = 300,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(journal_events(state_dir)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the fault point: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("fault point not reached")


def state_started(state_id: str) -> Callable[[list[Event]], bool]:
    return lambda events: any(e.kind == "state_started" and e.state_id == state_id for e in events)


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def options_snapshot(lab: LabLayout) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in lab.root.glob("apps/*/options.ini")}


def promotions_with_handover(lab: LabLayout) -> list[dict[str, Any]]:
    lines = lab.events.read_text().splitlines()
    return [p for p in map(json.loads, lines) if p.get("from")]


def test_redis_master_killed_during_monitoring_rolls_back_by_itself(make_lab, tmp_path):
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    before = options_snapshot(lab)
    state_dir = tmp_path / "state"
    proc = start_run(lab.site, state_dir, "--yes")
    when(state_dir, state_started("monitor-redis"), proc)
    redis = RedisClusterLab.from_dir(lab.root)
    master = next(p for p in redis.ports if redis.client(p).info("replication")["role"] == "master")
    redis.kill_node(master)

    code, err = finish(proc)
    assert code == 1, err
    assert f"127.0.0.1:{master}" in err
    assert run_status(state_dir) == "rolled_back"
    assert {a["type"] for a in lab_apps(lab)} == {"cassandra"}

    restored = cli("rollback", "--to", "start", "--yes", "--state-dir", str(state_dir))
    assert restored.returncode == 0, restored.stderr[-2000:]
    assert options_snapshot(lab) == before


def test_application_that_fails_to_start_stops_the_run_and_resumes_after_the_fix(
    make_lab, tmp_path
):
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    backup = next(a["app"] for a in lab_apps(lab) if a["role"] == "backup")
    good = lab.options(backup).read_text()
    lab.options(backup).write_text(
        good.replace("[log]", "[log]\n").replace(
            "type=cassandra", "type=cassandra\ntls-cert=/etc/ors/client.crt"
        )
    )
    state_dir = tmp_path / "state"

    failed = cli("run", str(lab.site), "--yes", "--state-dir", str(state_dir))
    assert failed.returncode == 1
    assert backup in failed.stderr and "tls-cert and tls-key" in failed.stderr
    status = cli_json("status", "--state-dir", str(state_dir))
    assert status["status"] == "failed" and status["current_state"] == "standard-restart"
    # Never both members down: the primary kept running while its backup could not start.
    roles = {a["app"]: a["role"] for a in lab_apps(lab)}
    assert roles[backup] == "down" and "primary" in roles.values()

    fixed = lab.options(backup).read_text().replace("tls-cert=/etc/ors/client.crt\n", "")
    lab.options(backup).write_text(fixed)
    resumed = cli("run", str(lab.site), "--resume", "--yes", "--state-dir", str(state_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert {a["type"] for a in lab_apps(lab)} == {"redis"}
    assert len(promotions_with_handover(lab)) == 3


def test_cassandra_unreachable_during_preparation_stops_before_redis_and_resumes(
    make_lab, tmp_path
):
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    config = json.loads(lab.config.read_text())
    cql, thrift = config["cassandra"]["cql_port"], config["cassandra"]["thrift_port"]
    state_dir = tmp_path / "state"
    proc = start_run(lab.site, state_dir, "--yes")
    when(state_dir, state_started("verify-prepared"), proc)
    os.kill(read_pid(lab.root / "cassandra" / "pid"), signal.SIGKILL)

    code, err = finish(proc)
    assert code == 1, err
    # Caught by whichever verification of preparation sees it first (prepare.6).
    assert f"127.0.0.1:{cql}" in err
    assert "verify-prepared" in err or "verify-cassandra" in err
    assert run_status(state_dir) == "failed"
    assert {a["type"] for a in lab_apps(lab)} == {"cassandra"}

    restart_cassandra(lab, cql, thrift)
    resumed = cli("run", str(lab.site), "--resume", "--yes", "--state-dir", str(state_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert {a["type"] for a in lab_apps(lab)} == {"redis"}


def restart_cassandra(lab: LabLayout, cql: int, thrift: int) -> None:
    """The operator brings Cassandra back on the same ports (its data is gone: the stand-in keeps
    rows in memory, so the ORS schema is created again)."""
    from ors_migrate.lab.cassandra_sessions import CassandraSessionStore
    from ors_migrate.lab.lab import start_cassandra

    start_cassandra(lab, cql, thrift)
    store = CassandraSessionStore([f"127.0.0.1:{cql}"], "orchestration")
    store.ensure_schema()
    store.close()


@pytest.mark.needs("root")
def test_full_state_disk_stops_the_run_with_its_cause_and_resume_finishes_it(make_lab, tmp_path):
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(state_dir)], check=True
    )
    try:
        proc = start_run(lab.site, state_dir, "--yes")
        when(state_dir, state_started("standard-restart"), proc)
        filler = state_dir / "filler"
        with open(filler, "wb", buffering=0) as fh:  # unbuffered: nothing left to flush
            try:
                while True:
                    fh.write(b"\0" * 65536)
            except OSError:
                pass
        code, err = finish(proc)
        assert code != 0
        assert "full" in err and "journal" in err
        assert "Traceback" not in err

        filler.unlink()
        resumed = cli("run", str(lab.site), "--resume", "--yes", "--state-dir", str(state_dir))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert {a["type"] for a in lab_apps(lab)} == {"redis"}
        assert len(promotions_with_handover(lab)) == 3
    finally:
        subprocess.run(["umount", "-l", str(state_dir)], check=False)


ssh_only = pytest.mark.needs("root", "sshd", "ssh-keygen")


def over_ssh(lab: LabLayout, server: sshd_fixture.SshServer, key: Path, known_hosts: Path) -> None:
    text = lab.site.read_text().replace(
        "  lab:\n    transport: local\n    platform: linux\n",
        "  lab:\n    transport: ssh\n    platform: linux\n    ssh:\n"
        f"      address: 127.0.0.1\n      port: {server.port}\n      user: root\n"
        f"      key_file: {key}\n      known_hosts: {known_hosts}\n      ssh_config: null\n",
    )
    lab.site.write_text(text)


@pytest.fixture
def root_sshd(tmp_path):
    key = sshd_fixture.generate_key(tmp_path / "id_ors")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(key.public + "\n")
    server = sshd_fixture.start_sshd(
        tmp_path / "sshd", name="ors-host", authorized_keys=authorized, user="root"
    )
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line() + "\n")
    yield server, key.path, known_hosts
    server.stop()


@ssh_only
def test_ssh_connection_reset_mid_command_is_retried_without_repeating_a_switchover(
    make_lab, tmp_path, root_sshd
):
    server, key, known_hosts = root_sshd
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    over_ssh(lab, server, key, known_hosts)
    state_dir = tmp_path / "state"
    mark = server.log_mark()
    proc = start_run(lab.site, state_dir, "--yes")
    when(state_dir, state_started("standard-restart"), proc)
    time.sleep(0.3)
    server.kill_sessions()

    code, err = finish(proc)
    assert code == 0, err[-3000:]
    assert server.accepted_logins(mark) >= 2, "the transport did not reconnect"
    assert {a["type"] for a in lab_apps(lab)} == {"redis"}
    assert len(promotions_with_handover(lab)) == 3


@ssh_only
def test_changed_host_key_between_runs_is_refused_then_resumes_once_trusted(
    make_lab, tmp_path, root_sshd
):
    server, key, known_hosts = root_sshd
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    over_ssh(lab, server, key, known_hosts)
    state_dir = tmp_path / "state"
    # Without --yes and without a terminal the run stops at its first gate (enable.1).
    paused = cli("run", str(lab.site), "--state-dir", str(state_dir))
    assert paused.returncode != 0
    assert run_status(state_dir) == "paused"

    new_key = sshd_fixture.generate_key(server.directory / "ssh_host_ed25519_key.new")
    os.replace(new_key.path, server.directory / "ssh_host_ed25519_key")
    server.process.terminate()
    server.process.wait(timeout=5)
    with server.log_path.open("ab") as log:
        server.process = subprocess.Popen(
            [sshd_fixture.SSHD, "-D", "-e", "-f", str(server.directory / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + 10
    while "Server listening" not in server.log().rsplit("Received signal", 1)[-1]:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    refused = cli("run", str(lab.site), "--resume", "--yes", "--state-dir", str(state_dir))
    assert refused.returncode != 0
    assert "HOST IDENTIFICATION HAS CHANGED" in refused.stderr and "SHA256:" in refused.stderr
    assert {a["type"] for a in lab_apps(lab)} == {"cassandra"}

    known_hosts.write_text(f"[127.0.0.1]:{server.port} {new_key.public}\n")
    resumed = cli("run", str(lab.site), "--resume", "--yes", "--state-dir", str(state_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert {a["type"] for a in lab_apps(lab)} == {"redis"}

"""A whole migration driven over SSH (one connection for the run, a passphrase-protected key,
strict host keys) against a lab whose Redis Cluster has TLS and an ACL user and whose Cassandra
asks for a password: the run succeeds and no secret appears anywhere the tool writes or shows."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

import pytest
import sshd_fixture
from conftest import cli

from ors_migrate.lab.cassandra_sessions import CassandraSessionStore
from ors_migrate.lab.cql_standin import CqlStandIn

SSH_PASSPHRASE = "ssh-passphrase-5c1e7a"
CASSANDRA_PASSWORD = "cassandra-password-9d2f4b"

pytestmark = pytest.mark.needs("root", "sshd", "ssh-keygen")


class CommandLineSampler:
    """Samples every process's command line while the run goes on."""

    def __init__(self) -> None:
        self.lines: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
            self.lines.update(out.splitlines())
            self._stop.wait(0.05)

    def __enter__(self) -> CommandLineSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _over_ssh(
    site: Path, server: sshd_fixture.SshServer, key: Path, known_hosts: Path, cql_port: int
) -> None:
    text = site.read_text()
    text = text.replace(
        "  lab:\n    transport: local\n    platform: linux\n",
        "  lab:\n    transport: ssh\n    platform: linux\n    ssh:\n"
        f"      address: 127.0.0.1\n      port: {server.port}\n      user: root\n"
        f"      key_file: {key}\n      key_passphrase: env:ORS_TEST_SSH_PASSPHRASE\n"
        f"      known_hosts: {known_hosts}\n      ssh_config: null\n",
    )
    text = re.sub(
        r"(cassandra:\n  in_use: true\n  contact_points:\n    - )127\.0\.0\.1:\d+",
        rf"\g<1>127.0.0.1:{cql_port}",
        text,
    )
    text = text.replace(
        "  keyspace: orchestration\n",
        "  keyspace: orchestration\n  username: ors\n  password: env:ORS_TEST_CASSANDRA_PASSWORD\n",
    )
    site.write_text(text)


def test_migration_over_ssh_with_tls_redis_and_secrets_leaks_no_secret(make_lab, tmp_path):
    lab = make_lab(clusters=2, pairs_per_cluster=1, secure=True)
    redis_password = (lab.root / "secrets" / "redis-ors.password").read_text().strip()
    secrets = [redis_password, CASSANDRA_PASSWORD, SSH_PASSPHRASE]

    key = sshd_fixture.generate_key(tmp_path / "id_ors", passphrase=SSH_PASSPHRASE)
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(key.public + "\n")
    server = sshd_fixture.start_sshd(
        tmp_path / "sshd", name="ors-host", authorized_keys=authorized, user="root"
    )
    cassandra = CqlStandIn(username="ors", password=CASSANDRA_PASSWORD).start()
    try:
        store = CassandraSessionStore(
            [f"127.0.0.1:{cassandra.port}"],
            "orchestration",
            username="ors",
            password=CASSANDRA_PASSWORD,
        )
        store.ensure_schema()
        store.close()
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(server.known_hosts_line() + "\n")
        _over_ssh(lab.site, server, key.path, known_hosts, cassandra.port)
        env = {
            "ORS_TEST_SSH_PASSPHRASE": SSH_PASSPHRASE,
            "ORS_TEST_CASSANDRA_PASSWORD": CASSANDRA_PASSWORD,
        }
        state_dir = tmp_path / "state"
        mark = server.log_mark()

        with CommandLineSampler() as sampler:
            run = cli("run", str(lab.site), "--yes", "--state-dir", str(state_dir), env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        # One SSH connection carried every command and file transfer of the run.
        assert server.accepted_logins(mark) == 1
        assert server.connections(mark) == 1

        status = json.loads(cli("lab", "status", "--dir", str(lab.root), "--json").stdout)
        assert {a["type"] for a in status["apps"]} == {"redis"}
        assert all(a["persistence_errors"] == 0 for a in status["apps"])

        outputs = [run.stdout, run.stderr]
        for fmt in ("text", "json", "markdown", "mermaid"):
            planned = cli("plan", str(lab.site), "--format", fmt, env=env)
            assert planned.returncode == 0, planned.stderr
            outputs += [planned.stdout, planned.stderr]
        for args in (("runs", "--json"), ("status", "--json")):
            shown = cli(*args, "--state-dir", str(state_dir))
            outputs += [shown.stdout, shown.stderr]

        stored = [p.read_bytes() for p in state_dir.rglob("*") if p.is_file()]
        originals = [p.read_bytes() for p in lab.root.glob("apps/*/options.ini.*.orig")]
        assert len(originals) == len(status["apps"])
        for secret in secrets:
            assert not any(secret in text for text in outputs), "secret in command output"
            assert not any(secret.encode() in blob for blob in stored), "secret in state dir"
            assert not any(secret.encode() in blob for blob in originals), "secret in backups"
            assert not any(secret in line for line in sampler.lines), "secret in a command line"
        # ORS itself needs the Redis password: it is in its options file, nowhere else.
        assert redis_password in lab.options(status["apps"][0]["app"]).read_text()
    finally:
        cassandra.stop()
        server.stop()

"""Redis checked from where ORS stands: an ORS host reached over SSH (a real sshd on loopback)
in front of a Redis Cluster with TLS and an ACL user. A wrong CA on the host, a key that does
not match the certificate, a key the ORS account cannot read and a Redis port the host cannot
reach are each named per host by `preflight` (exit 3), and stop a run before enable.1.

One lab, one sshd and one folder of host-side TLS files serve the whole module: each failure
is a variation of the site file (other files on the host, a closed port), not a new lab."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sshd_fixture
from conftest import cli
from durable_runs import journal_events

from ors_migrate.lab.lab import LabShape, lab_down, lab_up
from ors_migrate.lab.layout import LabLayout

pytestmark = pytest.mark.needs("root", "sshd", "ssh-keygen", "redis-server", "redis-cli")

HOST = "lab"


@dataclass
class Estate:
    lab: LabLayout
    server: sshd_fixture.SshServer
    key: Path
    known_hosts: Path
    account: str
    files: Path  # TLS files as the ORS host holds them
    sites: Path

    def site(self, name: str, *, account: bool = True, **tls: str) -> Path:
        """The lab's site with its ORS host reached over SSH (as root); with `account`, ORS runs
        as the plain test login there; `tls` replaces TLS paths (cert, key, cacert)."""
        text = self.lab.site.read_text()
        ssh = (
            f"  {HOST}:\n    transport: ssh\n    platform: linux\n"
            + (f"    ors_account: {self.account}\n" if account else "")
            + f"    ssh:\n      address: 127.0.0.1\n      port: {self.server.port}\n"
            f"      user: root\n      key_file: {self.key}\n"
            f"      known_hosts: {self.known_hosts}\n      ssh_config: null\n"
        )
        text = text.replace(f"  {HOST}:\n    transport: local\n    platform: linux\n", ssh)
        for field, value in tls.items():
            line = f"    {field}: {json.dumps(value)}"
            text, count = re.subn(rf"(?m)^    {field}: .*$", line, text)
            assert count == 1, field
        path = self.sites / f"{name}.yaml"
        path.write_text(text)
        return path


def _host_files(lab: LabLayout, account: str) -> Path:
    """Copies of the lab's TLS files in a folder every account may traverse: readable by the
    ORS account, except `unreadable.key` (root's, 0600)."""
    config = json.loads(lab.config.read_text())["redis_tls"]
    source = Path(config["cacert"]).parent
    folder = Path(tempfile.mkdtemp(prefix="orsm-host-tls-"))
    folder.chmod(0o755)
    owner = sshd_fixture.ensure_login_user(account)
    for name in ("ca.crt", "client.crt", "client.key", "wrong-ca.crt", "wrong-client.key"):
        shutil.copy(source / name, folder / name)
        os.chown(folder / name, owner.pw_uid, owner.pw_gid)
        (folder / name).chmod(0o600)
    shutil.copy(source / "client.key", folder / "unreadable.key")
    (folder / "unreadable.key").chmod(0o600)
    return folder


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    root = tmp_path_factory.mktemp("host-checks")
    shape = LabShape(clusters=1, pairs_per_cluster=1, secure=True, monitor_window_s=1.0)
    lab = lab_up(root / "lab", shape)
    server = None
    files = None
    try:
        key = sshd_fixture.generate_key(root / "id_ors")
        authorized = root / "authorized_keys"
        authorized.write_text(key.public + "\n")
        server = sshd_fixture.start_sshd(
            root / "sshd", name="ors-host", authorized_keys=authorized, user="root"
        )
        known_hosts = root / "known_hosts"
        known_hosts.write_text(server.known_hosts_line() + "\n")
        account = sshd_fixture.LOGIN_USER
        files = _host_files(lab, account)
        sites = root / "sites"
        sites.mkdir()
        yield Estate(lab, server, key.path, known_hosts, account, files, sites)
    finally:
        if server is not None:
            server.stop()
        if files is not None:
            shutil.rmtree(files, ignore_errors=True)
        lab_down(lab.root)


def preflight(site: Path, state_dir: Path) -> tuple[int, list[dict[str, Any]]]:
    result = cli("preflight", str(site), "--json", "--state-dir", str(state_dir))
    assert result.returncode in (0, 3), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)["findings"]


def from_host(findings: list[dict[str, Any]], severity: str) -> list[dict[str, Any]]:
    return [
        f
        for f in findings
        if f["target"] == HOST and f["check"].startswith("host.") and f["severity"] == severity
    ]


def test_preflight_checks_redis_from_the_ors_host_as_the_account_ors_runs_as(estate, tmp_path):
    site = estate.site("healthy-owner", account=False)
    code, findings = preflight(site, tmp_path / "state")
    assert code == 0, [f for f in findings if f["severity"] == "error"]
    ok = from_host(findings, "ok")
    checks = [f["check"] for f in ok]
    nodes = len(json.loads(estate.lab.config.read_text())["redis_nodes"])
    assert checks.count("host.redis.tcp") == nodes
    assert checks.count("host.redis.tls_handshake") == nodes
    assert {"host.redis.tls_match", "host.redis.tls_chain", "host.redis.tls_files"} <= set(checks)
    # Without ors_account in the site file, the account is the owner of the running ORS process.
    [account] = [f["message"] for f in ok if f["check"] == "host.ors_account"]
    assert "runs as root (owner of the running ORS process" in account
    handshake = next(f["message"] for f in ok if f["check"] == "host.redis.tls_handshake")
    assert "with the client certificate" in handshake and "NOAUTH" in handshake


def _closed_port() -> int:
    return sshd_fixture.free_port()


FAILURES = {
    # shape: (tls files on the host, check that fails, what its message must say)
    "wrong-ca": (
        {"cacert": "wrong-ca.crt"},
        "host.redis.tls_handshake",
        r"the certificate of 127\.0\.0\.1:\d+ does not validate against tls-cacert .*wrong-ca\.crt"
        r" on lab: (self-signed certificate in certificate chain|unable to get local issuer)",
    ),
    "key-not-matching-cert": (
        {"key": "wrong-client.key"},
        "host.redis.tls_match",
        r"lab: tls-key .*wrong-client\.key does not belong to tls-cert .*client\.crt",
    ),
    "unreadable-key": (
        {"key": "unreadable.key"},
        "host.redis.tls_files",
        r"lab: \[persistence\] tls-key .*unreadable\.key \(owner root:root, mode 600\) is not "
        r"readable by orsm-ssh, the account ORS runs as \(site file: hosts\.lab\.ors_account\)",
    ),
    "port-unreachable": (
        {},
        "host.redis.tcp",
        r"lab cannot reach Redis node 127\.0\.0\.1:(\d+): Connection refused",
    ),
}


@pytest.mark.parametrize("shape", sorted(FAILURES))
def test_preflight_names_each_host_side_failure_per_host_and_node(estate, tmp_path, shape):
    files, check, expected = FAILURES[shape]
    tls = {"cert": "client.crt", "key": "client.key", "cacert": "ca.crt", **files}
    site = estate.site(shape, **{k: str(estate.files / v) for k, v in tls.items()})
    if shape == "port-unreachable":
        closed = _closed_port()
        text = site.read_text().replace("  nodes:\n", f"  nodes:\n    - 127.0.0.1:{closed}\n", 1)
        site.write_text(text)
    code, findings = preflight(site, tmp_path / "state")
    assert code == 3
    failed = [f for f in from_host(findings, "error") if f["check"] == check]
    assert failed, [f for f in findings if f["severity"] == "error"]
    assert any(re.search(expected, f["message"]) for f in failed), failed
    assert all(f["fix"] for f in failed)
    if shape == "port-unreachable":
        [failure] = failed
        assert failure["observed"]["node"] == f"127.0.0.1:{closed}"
    if shape == "wrong-ca":
        # Every node is named, each with its cause.
        nodes = json.loads(estate.lab.config.read_text())["redis_nodes"]
        assert {f["observed"]["node"] for f in failed} == set(nodes)


def test_run_stops_before_enable_1_when_the_ors_account_cannot_read_the_tls_key(estate, tmp_path):
    """The operator's machine reads the key (the Redis checks of prepare.1 pass); ORS's own
    account on its host cannot: the run fails at the host-side check, before enable.1 wrote an
    option or restarted anything, and every application still persists to Cassandra."""
    tls = {"cert": "client.crt", "key": "unreadable.key", "cacert": "ca.crt"}
    site = estate.site("run-unreadable-key", **{k: str(estate.files / v) for k, v in tls.items()})
    state_dir = tmp_path / "state"
    run = cli("run", str(site), "--yes", "--state-dir", str(state_dir))
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-3000:]
    assert "tls-key" in run.stderr and "not readable by orsm-ssh" in run.stderr, run.stderr
    # No handshake was tried without the client certificate: the key could not be loaded.
    assert "could not load the TLS files: Permission denied" in run.stderr, run.stderr

    status = json.loads(cli("status", "--json", "--state-dir", str(state_dir)).stdout)
    assert (status["status"], status["current_state"]) == ("failed", "redis-from-ors-hosts")
    assert "enable-redis-on-backups" not in status["states_done"]
    assert status["states_done"][-1] == "verify-cassandra"
    assert "lab:" in status["last_error"] and "unreadable.key" in status["last_error"]
    started = {e.state_id for e in journal_events(state_dir) if e.kind == "state_started"}
    assert "redis-from-ors-hosts" in started and "enable-redis-on-backups" not in started
    apps = json.loads(cli("lab", "status", "--dir", str(estate.lab.root), "--json").stdout)
    assert {a["type"] for a in apps["apps"]} == {"cassandra"}
    for app in apps["apps"]:
        assert "type = redis" not in estate.lab.options(app["app"]).read_text()

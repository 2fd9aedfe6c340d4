"""The host-side Redis checks without a server: the commands built for Linux and Windows hosts,
how their output is read, how the ORS account is found, and "cannot check" when a tool is
missing (the real script, run here with a PATH that lacks it)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from conftest import REPO

from ors_migrate.actions.fips import decode_invocation
from ors_migrate.actions.host_checks import (
    Account,
    ProbeLine,
    as_account,
    check_host,
    linux_probe_script,
    ors_account,
    ors_processes,
    parse_probe,
    verdicts,
    windows_probe_command,
)
from ors_migrate.actions.local import LocalTransport
from ors_migrate.errors import CommandFailed
from ors_migrate.site import RedisSettings, Site, TlsSettings, load_site
from ors_migrate.step import CommandResult

NODES = ["10.0.0.1:7000", "redis-2.example:7001", "[fd00::3]:7002"]
HOST = "ors-emea-01"


def example_site(redis: RedisSettings | None = None) -> Site:
    site = load_site(REPO / "examples" / "site.yaml").site
    return site.model_copy(update={"redis": redis}, deep=True) if redis else site


class ScriptedTransport:
    """A host that answers each command by the first matching prefix, and records them."""

    def __init__(self, platform: str, answers: dict[str, tuple[int, str]]) -> None:
        self.name = HOST
        self.platform = platform
        self.answers = answers
        self.commands: list[str] = []

    def run(self, command: str, **_: object) -> CommandResult:
        self.commands.append(command)
        for prefix, (code, out) in self.answers.items():
            if command.startswith(prefix):
                return CommandResult(self.name, command, code, out, "", 0.0)
        return CommandResult(self.name, command, 127, "", "not scripted", 0.0)


def test_windows_hosts_get_a_tcp_check_per_node_through_powershell_tcpclient():
    redis = RedisSettings(nodes=NODES, connect_timeout_s=2.5)
    command = windows_probe_command(redis)
    assert command.startswith("powershell.exe -NoProfile -NonInteractive")
    script = decode_invocation(command)
    assert script is not None
    assert "New-Object System.Net.Sockets.TcpClient" in script
    assert ".ConnectAsync($n[1], $n[2]).Wait(2500)" in script
    for label, host, port in (
        ("10.0.0.1:7000", "10.0.0.1", 7000),
        ("redis-2.example:7001", "redis-2.example", 7001),
        ("[fd00::3]:7002", "fd00::3", 7002),
    ):
        assert f"@('{label}', '{host}', {port})" in script


def test_windows_output_is_read_into_a_verdict_per_node_naming_host_node_and_cause():
    redis = RedisSettings(nodes=NODES)
    output = (
        "orsm\ttcp\t10.0.0.1:7000\tok\t\r\n"
        "orsm\ttcp\tredis-2.example:7001\tfail\tNo connection could be made because the target "
        "machine actively refused it\r\n"
        "orsm\ttcp\t[fd00::3]:7002\tfail\ttimed out after 5 s\r\n"
    )
    host = ScriptedTransport("windows", {"powershell.exe ": (0, output)})
    found = check_host(example_site(redis), HOST, host)  # type: ignore[arg-type]
    assert len(host.commands) == 1
    assert [(r.check, r.severity) for r in found] == [("host.redis.tcp", "ok")] + [
        ("host.redis.tcp", "error")
    ] * 2
    assert found[1].message == (
        f"{HOST} cannot reach Redis node redis-2.example:7001: No connection could be made "
        "because the target machine actively refused it"
    )
    assert found[2].observed["node"] == "[fd00::3]:7002" and "timed out" in found[2].message


def test_a_windows_probe_that_prints_nothing_is_a_failure_not_a_pass():
    host = ScriptedTransport("windows", {"powershell.exe ": (1, "")})
    with pytest.raises(CommandFailed, match="exited 1"):
        check_host(example_site(RedisSettings(nodes=NODES)), HOST, host)  # type: ignore[arg-type]


def test_the_ors_process_is_found_by_its_app_argument():
    ps = "\n".join(
        [
            "    0     1 /sbin/init",
            " 1001  4242 ./orchestration -host cfg01 -port 2020 -app ORS_1A",
            " 1001  4243 ./orchestration -host cfg01 -port 2020 -app ORS_1A2",
            "    0  5000 python3 -m ors_migrate.lab.ors_sim --dir /tmp/lab --app ORS_1B",
            "    0  5001 grep ORS_1A",
        ]
    )
    assert ors_processes(ps, ["ORS_1A", "ORS_1B"]) == [
        ("1001", "4242", "ORS_1A"),
        ("0", "5000", "ORS_1B"),
    ]


def test_the_running_process_is_found_however_long_its_command_line_and_narrow_the_terminal(
    monkeypatch,
):
    """`ps` cuts its listing at $COLUMNS unless told not to: an ORS started from a long path must
    still be found when the caller's environment has a narrow COLUMNS."""
    import subprocess

    site = example_site()
    app = next(a.name for _, _, a in site.apps() if a.host == HOST)
    padding = "/opt/genesys/" + "x" * 200
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", padding, "-app", app]
    )
    try:
        monkeypatch.setenv("COLUMNS", "40")
        found = ors_account(site, HOST, LocalTransport(HOST))
        assert isinstance(found, Account), found
        assert found.source == f"owner of the running ORS process {child.pid} ({app})"
    finally:
        child.kill()
        child.wait()


def test_the_account_comes_from_the_site_file_else_from_the_running_process():
    site = example_site()
    host_name = HOST
    apps = [a.name for _, _, a in site.apps() if a.host == host_name]
    ps = f" 1001  4242 ./orchestration -host cfg -port 2020 -app {apps[0]}\n"
    host = ScriptedTransport(
        "linux",
        {"ps -ww -eo": (0, ps), "getent passwd 1001": (0, "genesys:x:1001:1001::/:/bin/sh\n")},
    )
    found = ors_account(site, host_name, host)  # type: ignore[arg-type]
    assert found == Account("genesys", f"owner of the running ORS process 4242 ({apps[0]})")

    nobody = ScriptedTransport("linux", {"ps -ww -eo": (0, "    1     1 /sbin/init\n")})
    missing = ors_account(site, host_name, nobody)  # type: ignore[arg-type]
    assert not isinstance(missing, Account) and missing.severity == "error"
    assert "cannot tell the account ORS runs as" in missing.message
    assert f"hosts.{host_name}.ors_account" in missing.fix

    hosts = dict(site.hosts)
    hosts[host_name] = hosts[host_name].model_copy(update={"ors_account": "genesys"})
    configured = site.model_copy(update={"hosts": hosts})
    assert ors_account(configured, host_name, nobody) == Account(  # type: ignore[arg-type]
        "genesys", f"site file: hosts.{host_name}.ors_account"
    )


def test_the_probe_runs_as_the_ors_account_without_a_password_prompt():
    root = ProbeLine("whoami", "root", "0", "")
    plain = ProbeLine("whoami", "deploy", "1000", "")
    assert as_account("sh -c X", root, None) == "sh -c X"
    assert as_account("sh -c X", root, "root") == "sh -c X"
    assert as_account("sh -c X", root, "genesys") == "runuser -u genesys -- sh -c X"
    assert as_account("sh -c X", plain, "genesys") == "sudo -n -u genesys -- sh -c X"


def test_a_chain_the_nodes_accept_is_a_warning_and_one_they_refuse_an_error():
    tls = TlsSettings(enabled=True, cert="/c.crt", key="/c.key", cacert="/ca.crt")
    redis = RedisSettings(nodes=["r1:7000"], tls=tls)
    chain = ProbeLine(
        "chain", "-", "fail", "error 20 at 0 depth lookup: unable to get local issuer"
    )
    account = Account("genesys", "site file")
    accepted = [ProbeLine("tcp", "r1:7000", "ok", ""), ProbeLine("tls", "r1:7000", "ok", "-NOAUTH")]
    [*_, verdict] = verdicts("ors-01", redis, [*accepted, chain], account)
    assert verdict.check == "host.redis.tls_chain" and verdict.severity == "warning"
    refused = [
        accepted[0],
        ProbeLine("tls", "r1:7000", "fail", "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
    ]
    found = verdicts("ors-01", redis, [*refused, chain], account)
    [handshake] = [r for r in found if r.check == "host.redis.tls_handshake"]
    assert handshake.severity == "error"
    assert "r1:7000 rejected the TLS session" in handshake.message
    assert "unable to get local issuer" in found[-1].message and found[-1].severity == "error"


def _path_without(tmp_path: Path, missing: str) -> str:
    """A PATH holding the tools the probe uses, except `missing`."""
    folder = tmp_path / f"bin-without-{missing}"
    folder.mkdir()
    for tool in ("sh", "id", "tr", "stat", "bash", "timeout", "openssl", "python3"):
        # A real interpreter, not a version manager's shim that needs the full PATH.
        found = sys.executable if tool == "python3" else shutil.which(tool)
        if tool != missing and found:
            os.symlink(found, folder / tool)
    return str(folder)


@pytest.mark.parametrize(
    ("missing", "said"),
    [
        ("openssl", "cannot check: openssl is missing"),
        ("python3", "cannot check: python3 is missing, so no TLS handshake"),
    ],
)
def test_a_missing_tool_is_a_failed_verdict_that_says_so(tmp_path, missing, said):
    from ors_migrate.lab.redis_cluster import generate_tls_files

    files = generate_tls_files(tmp_path)
    closed = _closed_port()
    tls = TlsSettings(
        enabled=True, cert=str(files.cert), key=str(files.key), cacert=str(files.cacert)
    )
    redis = RedisSettings(nodes=[f"127.0.0.1:{closed}"], tls=tls, connect_timeout_s=2)
    script = linux_probe_script(redis)
    here = LocalTransport("ors-01")
    result = here.run(f"PATH={_path_without(tmp_path, missing)} sh -c {shlex.quote(script)}")
    lines = parse_probe(result.stdout)
    found = verdicts("ors-01", redis, lines, Account("root", "test"))
    failed = [r for r in found if r.severity == "error"]
    assert any(r.check == "host.tools" and said in r.message for r in failed), found
    # TCP is still checked (bash's /dev/tcp without python3) and the port named.
    [tcp] = [r for r in found if r.check == "host.redis.tcp"]
    assert tcp.severity == "error" and f"127.0.0.1:{closed}: Connection refused" in tcp.message
    if missing == "python3":
        assert [r.severity for r in found if r.check == "host.redis.tls_match"] == ["ok"]
        assert [r.severity for r in found if r.check == "host.redis.tls_chain"] == ["ok"]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_tls_files_that_cannot_be_read_as_the_ors_account_fail_and_tcp_is_still_checked():
    tls = TlsSettings(enabled=True, cert="/c.crt", key="/c.key", cacert="/ca.crt")
    site = example_site(RedisSettings(nodes=["r1:7000"], tls=tls))
    app = next(a.name for _, _, a in site.apps() if a.host == HOST)
    host = ScriptedTransport(
        "linux",
        {
            "\nout()": (0, "orsm\twhoami\tdeploy\t1000\t\n"),
            "ps -ww -eo": (0, f" 1001  4242 ./orchestration -app {app}\n"),
            "getent passwd 1001": (0, "genesys:x:1001:1001::/:/bin/sh\n"),
            "sudo -n -u genesys -- sh -c ": (1, ""),
            "sh -c ": (0, "orsm\twhoami\tdeploy\t1000\t\norsm\ttcp\tr1:7000\tok\t\n"),
        },
    )
    found = check_host(site, HOST, host)  # type: ignore[arg-type]
    assert [(r.check, r.severity) for r in found] == [
        ("host.ors_account", "error"),
        ("host.redis.tcp", "ok"),
    ]
    assert "cannot check the TLS files as genesys" in found[0].message
    assert "`sudo -n -u genesys` failed" in found[0].message
    assert "owner of the running ORS process 4242" in found[0].message
    # The TCP-only probe carries no TLS file paths.
    assert "/c.key" not in host.commands[-1] and "/c.key" in host.commands[-2]


def test_preflight_does_not_dial_an_unreachable_host_again_for_the_redis_checks(tmp_path):
    import json

    from conftest import cli
    from tiny_site import make_tiny_site

    tiny = make_tiny_site(tmp_path)
    ssh = (
        "    transport: ssh\n    ssh:\n      address: 127.0.0.1\n      port: 1\n"
        f"      known_hosts: {tmp_path / 'known_hosts'}\n      ssh_config: null\n"
    )
    tiny.path.write_text(tiny.path.read_text().replace("    transport: local\n", ssh, 1))
    done = cli("preflight", str(tiny.path), "--json", "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 3, done.stderr
    findings = json.loads(done.stdout)["findings"]
    [reach] = [f for f in findings if f["check"] == "host.reachable"]
    assert reach["severity"] == "error" and "Connection refused" in reach["message"]
    [redis] = [f for f in findings if f["check"].startswith("host.redis")]
    assert redis["severity"] == "warning" and "not checked from this host" in redis["message"]


def test_nodes_a_crashed_probe_never_reported_are_errors_with_its_exit_and_stderr():
    tls = TlsSettings(enabled=True, cert="/c.crt", key="/c.key", cacert="/ca.crt")
    redis = RedisSettings(nodes=NODES, tls=tls)
    # python3 ran for the first node only, then died: no missing tool explains the others.
    lines = [ProbeLine("tcp", NODES[0], "ok", ""), ProbeLine("tls", NODES[0], "ok", "-NOAUTH")]
    found = verdicts(
        "ors-01", redis, lines, Account("genesys", "test"), 139, "Segmentation fault\n"
    )
    unobserved = [r for r in found if r.check == "host.redis.unobserved"]
    assert [r.observed["node"] for r in unobserved] == NODES[1:]
    for finding in unobserved:
        assert finding.severity == "error" and "could not observe" in finding.message
        assert "exited 139: Segmentation fault" in finding.message
    # Without TLS as well: no TCP line is never a pass.
    plain = verdicts("ors-01", RedisSettings(nodes=NODES), lines[:1], None, 126, "denied")
    assert [r.severity for r in plain] == ["ok", "error", "error"]


def test_a_reached_node_without_a_handshake_line_is_not_observed():
    tls = TlsSettings(enabled=True, cert="/c.crt", key="/c.key", cacert="/ca.crt")
    redis = RedisSettings(nodes=NODES[:1], tls=tls)
    found = verdicts("ors-01", redis, [ProbeLine("tcp", NODES[0], "ok", "")], Account("g", "t"))
    [unobserved] = [r for r in found if r.check == "host.redis.unobserved"]
    assert "TLS handshake" in unobserved.message and unobserved.severity == "error"
    # python3 reported missing covers it: one finding says so, not two.
    missing = ProbeLine("tool", "python3", "missing", "")
    found = verdicts(
        "ors-01", redis, [ProbeLine("tcp", NODES[0], "ok", ""), missing], Account("g", "t")
    )
    assert not [r for r in found if r.check == "host.redis.unobserved"]

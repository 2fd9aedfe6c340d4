"""The SSH transport against real OpenSSH daemons on loopback (see sshd_fixture.py).

What the server saw is read from the server side: sshd's own log, its per-connection processes
and the sockets `ss` lists, never the transport's own counters.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_fixture import (
    LOOPBACK,
    SshLab,
    client_pids_connected_to,
    free_port,
    generate_key,
    start_lab,
)

from ors_migrate.actions.ssh import SshTransport, ssh_transports
from ors_migrate.errors import HostKeyError, InputError, OrsMigrateError, TransportError
from ors_migrate.site import Host, SecretRef, SshSettings

pytestmark = pytest.mark.needs("root", "sshd", "ssh-keygen")

OLD_OPTIONS = b"[persistence]\ntype=cassandra\n"


@pytest.fixture(scope="module")
def lab() -> Iterator[SshLab]:
    started = start_lab()
    yield started
    started.stop()


def settings_for(lab: SshLab, known_hosts: Path, **overrides: object) -> SshSettings:
    values: dict[str, object] = {
        "address": LOOPBACK,
        "port": lab.target.port,
        "user": lab.user,
        "key_file": str(lab.key.path),
        "known_hosts": str(known_hosts),
        "ssh_config": None,
        "connect_timeout_s": 5.0,
        "command_timeout_s": 30.0,
        "keepalive_s": 5,
    }
    values.update(overrides)
    return SshSettings.model_validate(values)


@pytest.fixture
def known_hosts(lab: SshLab, tmp_path: Path) -> Path:
    return lab.known_hosts(tmp_path / "known_hosts")


@pytest.fixture
def ssh(lab: SshLab, known_hosts: Path) -> Iterator[SshTransport]:
    with SshTransport("web1", settings_for(lab, known_hosts)) as transport:
        yield transport


@pytest.fixture
def remote_file(lab: SshLab, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A file in the login user's folder, as the server's file system sees it."""
    stem = re.sub(r"\W", "_", request.node.name)
    path = lab.remote_dir / f"{stem}.ini"
    yield path
    for leftover in lab.remote_dir.glob(f"*{stem}*"):
        leftover.unlink()


def own_as_login(lab: SshLab, path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)
    uid, gid = lab.remote_dir.stat().st_uid, lab.remote_dir.stat().st_gid
    os.chown(path, uid, gid)


def temp_files(lab: SshLab, target: Path) -> list[Path]:
    return sorted(lab.remote_dir.glob(f".{target.name}.*.ors-migrate.tmp"))


# Commands


def test_command_captures_exit_code_stdout_and_stderr(ssh: SshTransport) -> None:
    result = ssh.run("echo to-out; echo to-err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "to-out\n", "to-err\n")
    assert result.host == "web1" and not result.ok and result.duration_s > 0


def test_remote_user_is_the_login_user(ssh: SshTransport, lab: SshLab) -> None:
    assert ssh.run("id -un").stdout.strip() == lab.user


def test_stdin_is_delivered_then_eof(ssh: SshTransport) -> None:
    assert ssh.run("cat", stdin="line one\nline two\n").stdout == "line one\nline two\n"
    assert ssh.run("wc -c").stdout.strip() == "0"


def test_large_stdin_and_output_both_ways_do_not_deadlock(ssh: SshTransport) -> None:
    payload = "x" * 3_000_000
    result = ssh.run("cat; head -c 2000000 /dev/zero | tr '\\0' e >&2", stdin=payload)
    assert result.stdout == payload
    assert result.stderr == "e" * 2_000_000


def test_env_reaches_the_command_but_no_command_line(ssh: SshTransport) -> None:
    secret = "s3c'r\"et $HOME `id`\nsecond line"
    result = ssh.run(
        "tr '\\0' ' ' < /proc/$$/cmdline >&2; printf '%s|' \"$ORSM_SECRET\"; cat",
        stdin="rest of stdin",
        env={"ORSM_SECRET": secret},
    )
    command_line = result.stderr
    assert "cmdline" in command_line
    assert "s3c" not in command_line and "second line" not in command_line
    assert result.stdout == f"{secret}|rest of stdin"


def test_env_with_a_bad_name_is_refused(ssh: SshTransport) -> None:
    with pytest.raises(OrsMigrateError, match="not a valid environment variable name"):
        ssh.run("true", env={"A;B": "x"})


def test_env_is_refused_for_windows_hosts(lab: SshLab, known_hosts: Path) -> None:
    windows = SshTransport("win1", settings_for(lab, known_hosts), platform="windows")
    with pytest.raises(OrsMigrateError, match="pass the values on stdin"):
        windows.run("echo $env:X", env={"X": "secret"})


def test_twenty_commands_use_one_tcp_connection(
    ssh: SshTransport, lab: SshLab, remote_file: Path
) -> None:
    mark = lab.target.log_mark()
    outputs = [ssh.run(f"echo {n}").stdout for n in range(20)]
    ssh.write_file_atomic(str(remote_file), b"a=1\n", backup_path=None)
    assert ssh.read_file(str(remote_file)) == b"a=1\n"
    assert outputs == [f"{n}\n" for n in range(20)]
    assert lab.target.connections(mark) == 1
    assert lab.target.accepted_logins(mark) == 1
    assert lab.target.log()[mark:].count("Starting session: command for") == 20


def test_a_dropped_connection_is_reopened_by_a_later_command(
    ssh: SshTransport, lab: SshLab
) -> None:
    mark = lab.target.log_mark()
    ssh.run("true")
    lab.target.kill_sessions()
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(ssh.run("echo back").stdout)
            break
        except TransportError as exc:
            assert "web1" in str(exc)
            outcomes.append("error")
    assert outcomes[-1] == "back\n" and len(outcomes) <= 2
    assert lab.target.accepted_logins(mark) == 2


def test_command_timeout_names_host_and_command_and_stops_it(ssh: SshTransport) -> None:
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        ssh.run("sleep 31.4159", timeout=0.5)
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "web1" in message and "`sleep 31.4159`" in message and "0.5 s" in message
    deadline = time.monotonic() + 5
    while subprocess.run(["pgrep", "-f", "sleep 31.4159"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the timed-out command still runs on the server"
        time.sleep(0.05)
    assert ssh.run("echo still-connected").stdout == "still-connected\n"


def test_connection_refused_names_host_and_port(lab: SshLab, known_hosts: Path) -> None:
    port = free_port()
    transport = SshTransport("db9", settings_for(lab, known_hosts, port=port))
    with pytest.raises(TransportError, match=rf"db9 \(127\.0\.0\.1:{port}\).*refused"):
        transport.run("true")


def test_a_server_that_never_answers_times_out_the_connect(lab: SshLab, known_hosts: Path) -> None:
    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        settings = settings_for(lab, known_hosts, port=port, connect_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(TransportError, match=rf"127\.0\.0\.1:{port}"):
            SshTransport("mute", settings).run("true")
        assert time.monotonic() - started < 3


def test_passphrase_protected_key(lab: SshLab, known_hosts: Path) -> None:
    settings = settings_for(lab, known_hosts, key_file=str(lab.protected_key.path))
    with SshTransport("web1", settings, passphrase=lab.protected_passphrase) as unlocked:
        assert unlocked.run("echo in").stdout == "in\n"
    with pytest.raises(InputError, match="wrong passphrase"):
        SshTransport("web1", settings, passphrase="wrong").run("true")
    with pytest.raises(InputError, match="is encrypted"):
        SshTransport("web1", settings).run("true")


def test_a_key_the_server_does_not_know_is_refused(lab: SshLab, known_hosts: Path) -> None:
    stranger = generate_key(lab.directory / "stranger")
    settings = settings_for(lab, known_hosts, key_file=str(stranger.path))
    with pytest.raises(TransportError, match=rf"cannot log in to web1 .* as {lab.user}"):
        SshTransport("web1", settings).run("true")


def test_a_missing_key_file_is_bad_input(lab: SshLab, known_hosts: Path, tmp_path: Path) -> None:
    settings = settings_for(lab, known_hosts, key_file=str(tmp_path / "nope"))
    with pytest.raises(InputError, match="does not exist"):
        SshTransport("web1", settings).run("true")


def test_import_does_not_load_paramiko() -> None:
    probe = "import sys, ors_migrate.actions.ssh; print('paramiko' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# Host keys


def test_unknown_host_key_is_refused_with_its_fingerprint(lab: SshLab, tmp_path: Path) -> None:
    known_hosts = lab.known_hosts(tmp_path / "known_hosts", lab.jump)
    before = known_hosts.read_text()
    mark = lab.target.log_mark()
    with pytest.raises(HostKeyError) as caught:
        SshTransport("web1", settings_for(lab, known_hosts)).run("true")
    message = str(caught.value)
    assert lab.target.host_key.fingerprint in message
    assert re.search(r"SHA256:[A-Za-z0-9+/]{43}\b", message)
    assert "ssh-ed25519" in message and f"[127.0.0.1]:{lab.target.port}" in message
    assert "accept_new_host_key" in message
    assert known_hosts.read_text() == before
    assert lab.target.accepted_logins(mark) == 0


def test_changed_host_key_is_refused_even_with_accept_new(lab: SshLab, tmp_path: Path) -> None:
    impostor = generate_key(tmp_path / "other_host_key")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{lab.target.port} {impostor.public}\n")
    before = known_hosts.read_text()
    for accept_new in (False, True):
        settings = settings_for(lab, known_hosts, accept_new_host_key=accept_new)
        with pytest.raises(HostKeyError) as caught:
            SshTransport("web1", settings).run("true")
        message = str(caught.value)
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message
        assert lab.target.host_key.fingerprint in message and impostor.fingerprint in message
        assert known_hosts.read_text() == before


def test_accept_new_records_the_key_then_strict_checking_passes(
    lab: SshLab, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "fresh" / "known_hosts"
    settings = settings_for(lab, known_hosts, accept_new_host_key=True)
    with SshTransport("web1", settings) as first:
        assert first.run("echo first").stdout == "first\n"
        assert first.accepted_host_key == f"ssh-ed25519 {lab.target.host_key.fingerprint}"
    assert known_hosts.read_text() == lab.target.known_hosts_line() + "\n"
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    strict = settings_for(lab, known_hosts, accept_new_host_key=False)
    with SshTransport("web1", strict) as second:
        assert second.run("echo second").stdout == "second\n"
        assert second.accepted_host_key is None


def test_hashed_known_hosts_entries_are_honoured(lab: SshLab, tmp_path: Path) -> None:
    known_hosts = lab.known_hosts(tmp_path / "known_hosts", lab.target)
    subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], check=True, capture_output=True)
    assert str(lab.target.port) not in known_hosts.read_text()
    with SshTransport("web1", settings_for(lab, known_hosts)) as hashed:
        assert hashed.run("echo ok").stdout == "ok\n"


# ProxyJump


def assert_target_reached_through_jump(lab: SshLab, transport: SshTransport) -> None:
    """From the server side: the jump sshd accepted a login, and the target's only client is a
    process of the jump sshd, not this test."""
    jump_mark, target_mark = lab.jump.log_mark(), lab.target.log_mark()
    assert transport.run("echo via-jump").stdout == "via-jump\n"
    assert lab.jump.accepted_logins(jump_mark) == 1
    assert lab.target.accepted_logins(target_mark) == 1
    clients = client_pids_connected_to(lab.target.port)
    assert clients and os.getpid() not in clients
    assert clients <= set(lab.jump.session_pids())


def ssh_config_block(alias: str, port: int, user: str, key: Path, *extra: str) -> str:
    lines = [f"HostName {LOOPBACK}", f"Port {port}", f"User {user}", f"IdentityFile {key}", *extra]
    return f"Host {alias}\n" + "".join(f"  {line}\n" for line in lines) + "\n"


def test_proxy_jump_from_site_settings(lab: SshLab, known_hosts: Path) -> None:
    settings = settings_for(lab, known_hosts, jump_host=f"{lab.user}@{LOOPBACK}:{lab.jump.port}")
    with SshTransport("web1", settings) as transport:
        assert_target_reached_through_jump(lab, transport)


def test_proxy_jump_from_ssh_config_alias(lab: SshLab, known_hosts: Path, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        ssh_config_block(
            "ors-target", lab.target.port, lab.user, lab.key.path, "ProxyJump ors-bastion"
        )
        + ssh_config_block("ors-bastion", lab.jump.port, lab.user, lab.key.path)
    )
    settings = SshSettings(known_hosts=str(known_hosts), ssh_config=str(config))
    with SshTransport("ors-target", settings) as transport:
        target = transport.target
        assert (target.hostname, target.port, target.user) == (LOOPBACK, lab.target.port, lab.user)
        assert target.proxy_jump == "ors-bastion"
        assert_target_reached_through_jump(lab, transport)


def test_site_settings_win_over_ssh_config(lab: SshLab, known_hosts: Path, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(ssh_config_block("web1", 1, "nobody-here", tmp_path / "missing-key"))
    settings = SshSettings(
        port=lab.target.port,
        user=lab.user,
        key_file=str(lab.key.path),
        known_hosts=str(known_hosts),
        ssh_config=str(config),
    )
    with SshTransport("web1", settings) as transport:
        assert transport.target.hostname == LOOPBACK
        assert transport.run("id -un").stdout.strip() == lab.user


def test_both_hops_are_checked_strictly(lab: SshLab, tmp_path: Path) -> None:
    jump = f"{lab.user}@{LOOPBACK}:{lab.jump.port}"
    only_target = lab.known_hosts(tmp_path / "only_target", lab.target)
    with pytest.raises(HostKeyError, match=re.escape(lab.jump.host_key.fingerprint)):
        SshTransport("web1", settings_for(lab, only_target, jump_host=jump)).run("true")
    only_jump = lab.known_hosts(tmp_path / "only_jump", lab.jump)
    with pytest.raises(HostKeyError, match=re.escape(lab.target.host_key.fingerprint)) as caught:
        SshTransport("web1", settings_for(lab, only_jump, jump_host=jump)).run("true")
    assert "web1" in str(caught.value)


class NoSecrets:
    def resolve(self, ref: SecretRef | None, *, what: str) -> str | None:
        return None


def test_site_hosts_share_their_jump_host_connection(lab: SshLab, known_hosts: Path) -> None:
    def ssh_host(**extra: object) -> Host:
        return Host(transport="ssh", ssh=settings_for(lab, known_hosts, **extra))

    hosts = {
        "bastion": ssh_host(port=lab.jump.port),
        "ors-a": ssh_host(jump_host="bastion"),
        "ors-b": ssh_host(jump_host="bastion"),
        "local": Host(transport="local"),
    }
    jump_mark = lab.jump.log_mark()
    transports = ssh_transports(hosts, NoSecrets())
    assert sorted(transports) == ["bastion", "ors-a", "ors-b"]
    try:
        assert transports["ors-a"].run("echo a").stdout == "a\n"
        assert transports["ors-b"].run("echo b").stdout == "b\n"
        assert lab.jump.accepted_logins(jump_mark) == 1
    finally:
        for transport in transports.values():
            transport.close()


def test_jump_host_cycles_are_bad_input(lab: SshLab, known_hosts: Path) -> None:
    hosts = {
        "a": Host(ssh=settings_for(lab, known_hosts, jump_host="b")),
        "b": Host(ssh=settings_for(lab, known_hosts, jump_host="a")),
    }
    with pytest.raises(InputError, match="cycle"):
        ssh_transports(hosts, NoSecrets())


# Files


def test_read_file_returns_bytes_or_none(ssh: SshTransport, lab: SshLab, remote_file: Path) -> None:
    assert ssh.read_file(str(remote_file)) is None
    own_as_login(lab, remote_file, OLD_OPTIONS, 0o640)
    assert ssh.read_file(str(remote_file)) == OLD_OPTIONS


def test_write_keeps_mode_and_makes_a_backup(
    ssh: SshTransport, lab: SshLab, remote_file: Path
) -> None:
    own_as_login(lab, remote_file, OLD_OPTIONS, 0o640)
    backup = remote_file.with_name(remote_file.name + ".bak")
    ssh.write_file_atomic(str(remote_file), b"[persistence]\ntype=redis\n", backup_path=str(backup))
    assert remote_file.read_bytes() == b"[persistence]\ntype=redis\n"
    assert backup.read_bytes() == OLD_OPTIONS
    assert stat.S_IMODE(remote_file.stat().st_mode) == 0o640
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert remote_file.stat().st_uid == lab.remote_dir.stat().st_uid
    assert temp_files(lab, remote_file) == []


def test_write_creates_a_missing_file_without_backup(
    ssh: SshTransport, lab: SshLab, remote_file: Path
) -> None:
    backup = remote_file.with_name(remote_file.name + ".bak")
    ssh.write_file_atomic(str(remote_file), b"new\n", backup_path=str(backup))
    assert remote_file.read_bytes() == b"new\n" and not backup.exists()


class ConnectionKiller(threading.Thread):
    """Kills the server side of every connection once the temporary file holds `size` bytes,
    and remembers how much of it had been written then."""

    def __init__(self, lab: SshLab, target: Path, size: int) -> None:
        super().__init__(daemon=True)
        self.lab, self.target, self.size = lab, target, size
        self.killed_at: int | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.killed_at is None:
            for temp in temp_files(self.lab, self.target):
                try:
                    written = temp.stat().st_size
                except FileNotFoundError:
                    continue
                if written >= self.size:
                    self.lab.target.kill_sessions()
                    self.killed_at = written
            if self.target.stat().st_size > len(OLD_OPTIONS):
                return
            time.sleep(0.001)


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.95, 1.0])
def test_write_cut_by_a_dropped_connection_leaves_old_or_new_never_torn(
    lab: SshLab, known_hosts: Path, remote_file: Path, fraction: float
) -> None:
    own_as_login(lab, remote_file, OLD_OPTIONS, 0o640)
    new = b"[persistence]\ntype=redis\n" + os.urandom(24_000_000)
    killer = ConnectionKiller(lab, remote_file, int(len(new) * fraction))
    killer.start()
    with SshTransport("web1", settings_for(lab, known_hosts)) as transport:
        try:
            transport.write_file_atomic(str(remote_file), new, backup_path=None)
        except TransportError as exc:
            assert "web1" in str(exc) and str(remote_file) in str(exc)
    killer.join()
    if fraction < 1:
        assert killer.killed_at is not None and killer.killed_at < len(new), "not cut mid-write"
    assert remote_file.read_bytes() in (OLD_OPTIONS, new)
    assert stat.S_IMODE(remote_file.stat().st_mode) == 0o640
    with SshTransport("web1", settings_for(lab, known_hosts)) as again:
        again.write_file_atomic(str(remote_file), b"final\n", backup_path=None)
    assert remote_file.read_bytes() == b"final\n"
    assert temp_files(lab, remote_file) == [], "the next write removes an interrupted temp file"


def test_write_failing_midway_removes_the_temp_file_and_keeps_the_old(
    ssh: SshTransport, lab: SshLab, remote_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data goes out pipelined; the server refusing its fourth piece (a real error answer:
    the request names no open handle) is seen before the rename, so nothing is replaced."""
    import paramiko
    from paramiko.sftp import CMD_WRITE

    own_as_login(lab, remote_file, OLD_OPTIONS, 0o600)
    real_request = paramiko.SFTPClient._async_request
    pieces: list[int] = []

    def fourth_piece_refused(self: paramiko.SFTPClient, fileobj: object, t: int, *args: object):  # type: ignore[no-untyped-def]
        if t == CMD_WRITE:
            pieces.append(len(args[2]))  # type: ignore[arg-type]
            if len(pieces) == 4:
                args = (b"not-a-handle", *args[1:])
        return real_request(self, fileobj, t, *args)

    monkeypatch.setattr(paramiko.SFTPClient, "_async_request", fourth_piece_refused)
    with pytest.raises(TransportError, match=str(remote_file)):
        ssh.write_file_atomic(str(remote_file), b"x" * 1_000_000, backup_path=None)
    assert sum(pieces) == 1_000_000, "every piece was sent before any answer was read"
    assert remote_file.read_bytes() == OLD_OPTIONS
    assert stat.S_IMODE(remote_file.stat().st_mode) == 0o600
    assert temp_files(lab, remote_file) == []


def test_write_refuses_a_symlink_and_changes_neither_it_nor_its_target(
    ssh: SshTransport, lab: SshLab, remote_file: Path
) -> None:
    real = remote_file.with_name(remote_file.name + ".real")
    own_as_login(lab, real, OLD_OPTIONS, 0o640)
    remote_file.symlink_to(real)
    backup = remote_file.with_name(remote_file.name + ".bak")
    with pytest.raises(InputError, match="symbolic link") as refused:
        ssh.write_file_atomic(
            str(remote_file), b"[persistence]\ntype=redis\n", backup_path=str(backup)
        )
    assert refused.value.file == str(remote_file) and "web1" in str(refused.value)
    assert remote_file.is_symlink() and os.readlink(remote_file) == str(real)
    assert real.read_bytes() == OLD_OPTIONS and not backup.exists()
    assert temp_files(lab, remote_file) == []


def test_a_symlink_at_the_backup_path_is_replaced_never_followed(
    ssh: SshTransport, lab: SshLab, remote_file: Path
) -> None:
    own_as_login(lab, remote_file, OLD_OPTIONS, 0o640)
    elsewhere = remote_file.with_name(remote_file.name + ".elsewhere")
    own_as_login(lab, elsewhere, b"not ours\n", 0o644)
    backup = remote_file.with_name(remote_file.name + ".bak")
    backup.symlink_to(elsewhere)
    ssh.write_file_atomic(str(remote_file), b"new\n", backup_path=str(backup))
    assert elsewhere.read_bytes() == b"not ours\n"
    assert not backup.is_symlink() and backup.read_bytes() == OLD_OPTIONS
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert remote_file.read_bytes() == b"new\n" and temp_files(lab, remote_file) == []


def test_write_refuses_what_is_not_a_regular_file(
    ssh: SshTransport, lab: SshLab, remote_file: Path
) -> None:
    os.mkfifo(remote_file)
    with pytest.raises(InputError, match="named pipe"):
        ssh.write_file_atomic(str(remote_file), b"x\n", backup_path=None)
    assert stat.S_ISFIFO(remote_file.lstat().st_mode)


def test_write_falls_back_to_remove_then_rename_without_posix_rename(
    ssh: SshTransport, lab: SshLab, remote_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import paramiko

    def unsupported(self: paramiko.SFTPClient, old: str, new: str) -> None:
        raise OSError("Operation unsupported")

    monkeypatch.setattr(paramiko.SFTPClient, "posix_rename", unsupported)
    own_as_login(lab, remote_file, OLD_OPTIONS, 0o640)
    ssh.write_file_atomic(str(remote_file), b"replaced\n", backup_path=None)
    assert remote_file.read_bytes() == b"replaced\n"
    assert stat.S_IMODE(remote_file.stat().st_mode) == 0o640


# Pairs in parallel share one transport per host


def test_sftp_reads_and_writes_from_four_threads_at_once_each_get_their_own_answer(
    ssh: SshTransport, lab: SshLab, remote_file: Path
) -> None:
    errors: list[BaseException] = []
    wrong: list[str] = []
    start = threading.Barrier(4)

    def work(n: int) -> None:
        path = f"{remote_file}.{n}"
        try:
            start.wait()
            for round_ in range(8):
                data = f"thread={n} round={round_}\n".encode() * (200 + n * 300)
                ssh.write_file_atomic(path, data, backup_path=f"{path}.bak" if round_ else None)
                if ssh.read_file(path) != data:
                    wrong.append(f"{n}/{round_}")
        except BaseException as exc:  # noqa: BLE001 - every failure is reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "an SFTP operation hung"
    assert errors == [] and wrong == []
    for n in range(4):
        last = f"thread={n} round=7\n".encode() * (200 + n * 300)
        assert Path(f"{remote_file}.{n}").read_bytes() == last


class RefusingTransport:
    """A live paramiko transport whose server refuses the first `refusals` channel opens, as
    OpenSSH does at MaxSessions."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.opened = 0

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float | None = None) -> object:
        import paramiko

        self.opened += 1
        if self.refusals:
            self.refusals -= 1
            raise paramiko.ChannelException(1, "Administratively prohibited")
        return self

    def close(self) -> None:
        pass


def refusing(refusals: int, tmp_path: Path) -> tuple[SshTransport, RefusingTransport]:
    settings = SshSettings.model_validate(
        {"address": LOOPBACK, "port": 22, "user": "u", "known_hosts": str(tmp_path / "kh")}
    )
    transport = SshTransport("web1", settings)
    live = RefusingTransport(refusals)
    client = type("Client", (), {"get_transport": lambda self: live, "close": lambda self: None})
    transport._client = client()  # type: ignore[assignment]
    return transport, live


def test_a_refused_channel_is_asked_for_again_on_the_same_connection(tmp_path: Path) -> None:
    transport, live = refusing(2, tmp_path)
    assert transport._open_channel() is live
    assert live.opened == 3 and transport._client is not None


def test_a_refused_channel_does_not_drop_the_connection_under_other_threads(
    tmp_path: Path,
) -> None:
    import paramiko

    transport, live = refusing(1, tmp_path)
    client = transport._client
    with pytest.raises(TransportError, match="web1"):
        with transport._guard("`true` failed"):
            raise paramiko.ChannelException(1, "Administratively prohibited")
    assert transport._client is client  # the other threads' commands keep their connection


def test_a_command_waiting_for_a_channel_slot_has_its_own_bound_and_its_time_starts_after(
    ssh: SshTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every channel of the host busy, a command waits for a slot up to its timeout and is
    then refused as such; once a slot frees, its own timeout counts from when it got it."""
    monkeypatch.setattr(ssh, "_channels", threading.BoundedSemaphore(1))
    busy = threading.Thread(target=ssh.run, args=("sleep 2",))
    busy.start()
    time.sleep(0.3)
    with pytest.raises(TransportError, match=r"found no free channel within 0\.5 s"):
        ssh.run("echo never-ran", timeout=0.5)
    # About 1.2 s waiting for the slot, then 1.2 s running: within 2 s each, not together.
    done = ssh.run("sleep 1.2; echo ran", timeout=2.0)
    busy.join(10)
    assert done.stdout == "ran\n" and done.duration_s < 2.0

"""Real OpenSSH servers on loopback, for the SSH transport tests and the round-trip benchmark.

`start_lab()` runs two `/usr/sbin/sshd -D -e -f CONFIG` daemons on 127.0.0.1 (a target and a jump
host), each with its own generated ed25519 host key and a VERBOSE log file, for a plain login user
(`orsm-ssh`, created if missing) whose keys are generated too. It needs root (sshd's privilege
separation and the login user); `unavailable_reason()` says why it cannot run. No pytest here, so
the benchmark can import it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
LOGIN_USER = "orsm-ssh"
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0


def unavailable_reason() -> str | None:
    """Why a real sshd cannot be started here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root: sshd privilege separation and a login user"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is missing (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is missing (apt-get install openssh-client)"
    return None


@dataclass(frozen=True)
class KeyPair:
    path: Path
    public: str
    fingerprint: str


def generate_key(path: Path, *, passphrase: str = "", comment: str = "orsm-test") -> KeyPair:
    """An ed25519 key made by ssh-keygen; the fingerprint is ssh-keygen's own (`SHA256:...`)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{path}.pub"], check=True, capture_output=True, text=True
    ).stdout.split()
    public = " ".join(Path(f"{path}.pub").read_text().split()[:2])
    return KeyPair(path, public, listed[1])


def ensure_login_user(name: str = LOGIN_USER) -> pwd.struct_passwd:
    """A plain user that sshd lets in with a key: created if missing, unlocked with `-p '*'`.
    Test workers running at once take turns (useradd and usermod lock /etc/passwd)."""
    from filelock import FileLock

    with FileLock(os.path.join(tempfile.gettempdir(), "orsm-login-user.lock")):
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "-m", "-s", "/bin/bash", "-c", "ors-migrate SSH test login", name],
                capture_output=True,
            )
        subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Every descendant of `pid`, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found.extend(kids)
        frontier.extend(kids)
    return found


@dataclass
class SshServer:
    """One running sshd and what a test needs to observe it from the server side."""

    name: str
    port: int
    directory: Path
    host_key: KeyPair
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def accepted_logins(self, since: int = 0) -> int:
        """How many key logins sshd accepted (one per TCP connection that authenticated)."""
        return self.log()[since:].count("Accepted publickey for ")

    def connections(self, since: int = 0) -> int:
        return len(re.findall(r"^Connection from ", self.log()[since:], re.M))

    def log_mark(self) -> int:
        return len(self.log())

    def known_hosts_line(self) -> str:
        return f"[{LOOPBACK}]:{self.port} {self.host_key.public}"

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (and what they run), children of the daemon."""
        return _children(self.process.pid)

    def kill_sessions(self) -> None:
        """Drop every connection the way a crash or a network cut would: SIGKILL, no goodbye."""
        for pid in reversed(self.session_pids()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue

    def stop(self) -> None:
        self.kill_sessions()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _sshd_config(
    directory: Path, port: int, host_key: Path, authorized_keys: Path, user: str
) -> str:
    permit_root = "prohibit-password" if user == "root" else "no"
    # A root login would run root's shell start-up files (here they run `pyenv init`, slow, and
    # stuck for 60 s on a lock left by a session killed mid-way): give it a home of its own.
    home = directory / "home"
    home.mkdir(exist_ok=True)
    set_env = [f"SetEnv HOME={home}"] if user == "root" else []
    return "\n".join(
        [
            f"Port {port}",
            f"ListenAddress {LOOPBACK}",
            f"HostKey {host_key}",
            f"PidFile {directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            f"AllowUsers {user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            f"PermitRootLogin {permit_root}",
            "AllowTcpForwarding yes",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 100",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            *set_env,
            "",
        ]
    )


def start_sshd(directory: Path, *, name: str, authorized_keys: Path, user: str) -> SshServer:
    """Start `sshd -D -e` on a free loopback port; returns once it logs that it is listening."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = generate_key(directory / "ssh_host_ed25519_key", comment=f"{name}-host")
    for _attempt in range(5):
        port = free_port()
        config = directory / "sshd_config"
        config.write_text(_sshd_config(directory, port, host_key.path, authorized_keys, user))
        log_path = directory / "sshd.log"
        log_path.write_bytes(b"")
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        server = SshServer(name, port, directory, host_key, log_path, process)
        if _wait_listening(server):
            return server
        server.stop()
        if "Address already in use" not in server.log():
            raise RuntimeError(f"sshd {name} did not start:\n{server.log()}")
    raise RuntimeError(f"sshd {name}: no free port after 5 attempts")


def _wait_listening(server: SshServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if f"Server listening on {LOOPBACK} port {server.port}" in server.log():
            return True
        if server.process.poll() is not None:
            return False
        time.sleep(0.02)
    return False


@dataclass
class SshLab:
    """A target sshd, a jump-host sshd, the login user and its keys, and a remote work folder."""

    directory: Path
    user: str
    key: KeyPair
    protected_key: KeyPair
    protected_passphrase: str
    target: SshServer
    jump: SshServer
    remote_dir: Path

    def known_hosts(self, path: Path, *servers: SshServer) -> Path:
        """Write a known_hosts file that knows exactly `servers` (all of them when none named)."""
        chosen = servers or (self.target, self.jump)
        path.write_text("".join(f"{s.known_hosts_line()}\n" for s in chosen))
        return path

    def stop(self) -> None:
        for server in (self.target, self.jump):
            server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_lab() -> SshLab:
    """Both daemons, ready for key logins by the plain user; `stop()` removes everything."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    account = ensure_login_user()
    directory = Path(tempfile.mkdtemp(prefix="orsm-sshd-"))
    directory.chmod(0o755)
    key = generate_key(directory / "id_ed25519")
    passphrase = "correct horse battery"
    protected = generate_key(directory / "id_protected", passphrase=passphrase)
    authorized = directory / "authorized_keys"
    authorized.write_text(f"{key.public}\n{protected.public}\n")
    authorized.chmod(0o644)
    remote_dir = directory / "remote"
    remote_dir.mkdir()
    os.chown(remote_dir, account.pw_uid, account.pw_gid)
    target = start_sshd(
        directory / "target", name="target", authorized_keys=authorized, user=account.pw_name
    )
    try:
        jump = start_sshd(
            directory / "jump", name="jump", authorized_keys=authorized, user=account.pw_name
        )
    except BaseException:
        target.stop()
        raise
    return SshLab(directory, account.pw_name, key, protected, passphrase, target, jump, remote_dir)


def client_pids_connected_to(port: int) -> set[int]:
    """Processes holding the client end of an established TCP connection to 127.0.0.1:port."""
    listing = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", listing)}

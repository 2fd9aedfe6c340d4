"""The SSH transport: one paramiko connection per host, opened on first use and reused for every
command and file operation of the run.

Host keys are checked strictly against the site's known_hosts file: an unknown key is refused
unless the operator opted in to `accept_new_host_key` (then it is recorded), and a changed key is
always refused. `~/.ssh/config` is honoured for HostName, User, Port, IdentityFile and a single
ProxyJump hop; explicit site settings win over it.

paramiko is imported inside the functions that need it, so importing this module (and starting
the CLI) does not pay for it.
"""

from __future__ import annotations

import getpass
import os
import posixpath
import re
import select
import shlex
import socket
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from ors_migrate.actions.sftp_files import AtomicWrite, LoginIds, read_file, remove_stale_temps
from ors_migrate.errors import (
    HostKeyError,
    InputError,
    LoginRefused,
    OrsMigrateError,
    TransportError,
)
from ors_migrate.site import Host, SecretRef, SshSettings
from ors_migrate.step import CommandResult

if TYPE_CHECKING:
    import paramiko

DEFAULT_PORT = 22
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
JUMP_SPEC = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]\s]+\]|[^:@\[\]\s]+)(?::(?P<port>\d{1,5}))?$"
)
READ_CHUNK = 65536
# Command channels open at once on one host: OpenSSH's default MaxSessions is 10, and the SFTP
# session and the liveness probe take one each.
CHANNELS_PER_HOST = 8
# A channel the server refused (MaxSessions reached) is asked for again, this many times.
CHANNEL_OPEN_ATTEMPTS = 5

# Reads the env script from the head of stdin (one `read` per line, so the shell consumes exactly
# those bytes and the rest of stdin reaches the command), evaluates it and runs the command in the
# same shell. The values therefore never appear in the command line of any remote process.
ENV_PRELUDE = (
    "__orsm_n={lines}; __orsm_s=; "
    'while [ "$__orsm_n" -gt 0 ]; do IFS= read -r __orsm_l || exit 125; '
    '__orsm_s="$__orsm_s$__orsm_l\n"; __orsm_n=$((__orsm_n - 1)); done; '
    'eval "$__orsm_s"; unset __orsm_n __orsm_s __orsm_l\n'
)


@dataclass(frozen=True)
class SshTarget:
    """Where a host is really reached once the site settings and the ssh config are merged."""

    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...]
    proxy_jump: str | None

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH files the host key under: `[host]:port` for a port other than 22."""
        return self.hostname if self.port == DEFAULT_PORT else f"[{self.hostname}]:{self.port}"

    @property
    def address(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{host}:{self.port}"


class SecretResolver(Protocol):
    def resolve(self, ref: SecretRef | None, *, what: str) -> str | None: ...


def ssh_config_entry(alias: str, config_path: str | None) -> dict[str, Any]:
    """The `~/.ssh/config` options for `alias` (empty when there is no config file)."""
    if not config_path:
        return {}
    path = Path(config_path).expanduser()
    if not path.is_file():
        return {}
    import paramiko

    try:
        entry = paramiko.SSHConfig.from_path(str(path)).lookup(alias)
    except (paramiko.ssh_exception.ConfigParseError, ValueError) as exc:
        raise InputError(
            f"cannot parse ssh config: {exc}", file=str(path), rule="ssh-config"
        ) from None
    return dict(entry)


def resolve_target(name: str, settings: SshSettings) -> SshTarget:
    """Merge the site settings for host `name` with the ssh config; explicit settings win."""
    alias = settings.address or name
    entry = ssh_config_entry(alias, settings.ssh_config)
    jump = settings.jump_host or entry.get("proxyjump")
    if jump is not None and jump.lower() == "none":
        jump = None
    if jump is None and "proxycommand" in entry:
        raise InputError(
            f"ssh config gives host '{alias}' a ProxyCommand, which is not supported; "
            "use ProxyJump or the site's jump_host",
            file=settings.ssh_config,
            rule="ssh-config",
        )
    key_files = (settings.key_file,) if settings.key_file else tuple(entry.get("identityfile", ()))
    return SshTarget(
        hostname=str(entry.get("hostname", alias)).strip("[]"),
        port=settings.port or int(entry.get("port", DEFAULT_PORT)),
        user=settings.user or entry.get("user") or getpass.getuser(),
        key_files=tuple(os.path.expanduser(k) for k in key_files),
        proxy_jump=jump,
    )


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` into its parts; several hops are refused (one hop is supported)."""
    if "," in spec:
        raise InputError(
            f"jump host '{spec}' has several hops; only one ProxyJump hop is supported",
            rule="ssh-jump",
        )
    match = JUMP_SPEC.match(spec.strip())
    if not match:
        raise InputError(f"jump host '{spec}' is not [user@]host[:port]", rule="ssh-jump")
    port = int(match["port"]) if match["port"] else None
    return match["user"], match["host"].strip("[]"), port


def jump_settings(spec: str, base: SshSettings) -> SshSettings:
    """Settings for the jump host named by `spec`, which is itself looked up in the ssh config.

    The jump host shares the target's known_hosts, host-key policy and timeouts; it uses the
    target's key file and user unless the spec or its own ssh config entry names others. Its
    jump_host is `none`, so a wildcard ProxyJump in the ssh config cannot make it loop.
    """
    user, host, port = parse_jump(spec)
    own = ssh_config_entry(host, base.ssh_config)
    return base.model_copy(
        update={
            "address": host,
            "port": port,
            "user": user or own.get("user") or base.user,
            "key_file": None if "identityfile" in own else base.key_file,
            "jump_host": "none",
        }
    )


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form: `SHA256:` and the unpadded base64 of the key's SHA-256."""
    return str(key.fingerprint)


class _HostKeyPolicy:
    """Called by paramiko only for a host with no key on file: refuse, or record on opt-in."""

    def __init__(self, transport: SshTransport, known_hosts: Path) -> None:
        self._transport = transport
        self._known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        where = self._transport.where
        if not self._transport.settings.accept_new_host_key:
            raise HostKeyError(
                f"host key for {where} is not known: the host offered a {key.get_name()} key "
                f"{fingerprint(key)}, and {self._known_hosts} has no entry for {hostname}. "
                "Check the fingerprint with the host's administrator (on the host: "
                "`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`), then add it to that file, or "
                "set `accept_new_host_key: true` for this host in the site file to record it on "
                "the next connection."
            )
        _append_known_host(self._known_hosts, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self._transport.accepted_host_key = f"{key.get_name()} {fingerprint(key)}"


def _append_known_host(path: Path, hostname: str, key: paramiko.PKey) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="ascii") as fh:
        fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        fh.flush()
        os.fsync(fh.fileno())


def _reason(exc: BaseException) -> str:
    """A short human reason for a socket or paramiko failure."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _Expired(Exception):
    """The command's deadline passed."""


class SshTransport:
    """Commands and files on one host over SSH, through one connection reused for the whole run.

    The connection opens on first use; if it drops, the command in flight raises TransportError
    and the next one opens a new connection. `accepted_host_key` names the key recorded when
    `accept_new_host_key` let an unknown host in, so callers can report it. On Windows hosts
    (Win32-OpenSSH with PowerShell as its shell) commands run as given and files go by SFTP
    the same way as on Linux.
    """

    def __init__(
        self,
        name: str,
        settings: SshSettings,
        *,
        platform: str = "linux",
        passphrase: str | None = None,
        jump: SshTransport | None = None,
    ) -> None:
        self.name = name
        self.platform = platform
        self.settings = settings
        self.accepted_host_key: str | None = None
        self._passphrase = passphrase
        self._jump = jump
        self._owns_jump = False
        self._target: SshTarget | None = None
        self._keys: list[paramiko.PKey] | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        # HA pairs in parallel share this transport: paramiko's SFTPClient serves one request at
        # a time (a reply meant for another thread's request is discarded), so each file
        # operation holds the SFTP session whole; command channels are capped per host.
        self._sftp_lock = threading.Lock()
        self._channels = threading.BoundedSemaphore(CHANNELS_PER_HOST)
        # Folders whose stale temporary files this process has removed (see write_file_atomic),
        # and the login's uid and gid on the host, read from the first file it creates.
        self._tidied: set[str] = set()
        self._login_ids = LoginIds()

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def target(self) -> SshTarget:
        if self._target is None:
            self._target = resolve_target(self.name, self.settings)
        return self._target

    @property
    def where(self) -> str:
        """The host as error messages name it: site name and the address really used."""
        return f"{self.name} ({self.target.address})"

    # Connection

    def connect(self) -> None:
        """Open the connection now instead of at the first command (preflight uses this)."""
        self._connection()

    def _connection(self) -> paramiko.Transport:
        with self._lock:
            if self._client is not None:
                live = self._client.get_transport()
                if live is not None and live.is_active():
                    return live
                self._drop()
            self._client = self._open_client()
            transport = self._client.get_transport()
            assert transport is not None
            if self.settings.keepalive_s:
                transport.set_keepalive(self.settings.keepalive_s)
            return transport

    def _open_client(self) -> paramiko.SSHClient:
        import paramiko

        target = self.target
        keys = self._private_keys()
        known_hosts = Path(self.settings.known_hosts).expanduser()
        client = paramiko.SSHClient()
        if known_hosts.is_file():
            client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(_HostKeyPolicy(self, known_hosts))
        timeout = self.settings.connect_timeout_s
        try:
            client.connect(
                target.hostname,
                port=target.port,
                username=target.user,
                look_for_keys=not keys,
                allow_agent=not keys,
                auth_strategy=_key_strategy(target.user, keys) if keys else None,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                sock=self._dial(target),
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise self._changed_key_error(exc, known_hosts) from None
        except paramiko.AuthenticationException:
            client.close()
            tried = ", ".join(target.key_files) or "the agent's and ~/.ssh's default keys"
            raise LoginRefused(
                f"cannot log in to {self.where} as {target.user}: the server refused {tried}"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise TransportError(f"cannot connect to {self.where}: {_reason(exc)}") from None
        return client

    def _private_keys(self) -> list[paramiko.PKey]:
        """The configured keys, decrypted once per run; none means the agent and ~/.ssh."""
        if self._keys is None:
            paths = [k for k in self.target.key_files if Path(k).is_file()]
            if self.settings.key_file and not paths:
                raise InputError(
                    f"SSH key file {self.settings.key_file} for host {self.name} does not exist",
                    rule="ssh-key",
                )
            self._keys = [self._load_key(path) for path in paths]
        return self._keys

    def _load_key(self, path: str) -> paramiko.PKey:
        import paramiko

        secret = self._passphrase.encode() if self._passphrase is not None else None
        try:
            return paramiko.PKey.from_path(path, secret)
        except TypeError:
            raise InputError(
                f"SSH key {path} for host {self.name} is encrypted: give this host a "
                "key_passphrase reference",
                rule="ssh-key",
            ) from None
        except (ValueError, OSError, paramiko.SSHException):
            raise InputError(
                f"cannot load SSH key {path} for host {self.name}: wrong passphrase, or not a "
                "private key paramiko can read",
                rule="ssh-key",
            ) from None

    def _changed_key_error(
        self, exc: paramiko.BadHostKeyException, known_hosts: Path
    ) -> HostKeyError:
        name = self.target.known_hosts_name
        return HostKeyError(
            f"REMOTE HOST IDENTIFICATION HAS CHANGED for {self.where}: the host offered "
            f"{exc.key.get_name()} {fingerprint(exc.key)}, but {known_hosts} records "
            f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}. Someone may be "
            "intercepting the connection, or the host was reinstalled. The key is not accepted "
            "(accept_new_host_key only accepts unknown keys); if the change is expected, remove "
            f"the old entry with `ssh-keygen -R '{name}' -f {known_hosts}` and connect again."
        )

    def _dial(self, target: SshTarget) -> socket.socket | paramiko.Channel:
        """A TCP connection to the host, or a tunnel through its jump host.

        TCP_NODELAY matters: without it every channel open waits ~40 ms for a delayed ACK.
        """
        tunnel = self._tunnel_to(target)
        if tunnel is not None:
            return tunnel
        try:
            sock = socket.create_connection(
                (target.hostname, target.port), timeout=self.settings.connect_timeout_s
            )
        except OSError as exc:
            raise TransportError(f"cannot connect to {self.where}: {_reason(exc)}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _tunnel_to(self, target: SshTarget) -> paramiko.Channel | None:
        jump = self._jump
        if jump is None and target.proxy_jump:
            jump = SshTransport(
                f"{target.proxy_jump} (jump host of {self.name})",
                jump_settings(target.proxy_jump, self.settings),
                passphrase=self._passphrase,
            )
            self._jump, self._owns_jump = jump, True
        if jump is None:
            return None
        return jump.open_tunnel(target.hostname, target.port, for_host=self.where)

    def open_tunnel(self, hostname: str, port: int, *, for_host: str) -> paramiko.Channel:
        """A `direct-tcpip` channel from this host to hostname:port (this host as ProxyJump)."""
        import paramiko

        transport = self._connection()
        try:
            return transport.open_channel(
                "direct-tcpip",
                (hostname, port),
                ("127.0.0.1", 0),
                timeout=self.settings.connect_timeout_s,
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(
                f"cannot connect to {for_host} through jump host {self.where}: {_reason(exc)}"
            ) from None

    def _drop(self) -> None:
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        for closable in (sftp, client):
            if closable is not None:
                _close_quietly(closable)

    def close(self) -> None:
        """Close the connection (and the jump host's, when this transport opened it)."""
        with self._lock:
            self._drop()
            if self._owns_jump and self._jump is not None:
                self._jump.close()
                self._jump, self._owns_jump = None, False

    # Commands

    def run(
        self,
        command: str,
        *,
        stdin: str | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        """Run `command` by the remote user's shell; stdin (if any) is written, then EOF sent.

        `env` travels as a script at the head of stdin that a POSIX login shell reads and
        evaluates before the command, so its values are never on a command line; it is
        refused on Windows hosts, where secrets must go on stdin.
        """
        remote, payload = self._with_env(command, stdin, env)
        limit = self.settings.command_timeout_s if timeout is None else timeout
        # The command's time starts once it has a channel: waiting for one of the host's
        # slots (other pairs' commands) has its own bound, the same length.
        if not self._channels.acquire(timeout=limit):
            raise TransportError(
                f"on {self.where}: `{command}` found no free channel within {limit:g} s "
                f"({CHANNELS_PER_HOST} commands already running on this host)"
            )
        started = time.monotonic()
        try:
            with self._guard(f"`{command}` failed"):
                channel = self._open_channel()
                try:
                    channel.exec_command(remote)
                    out, err, code = _collect(channel, payload, started + limit)
                except _Expired:
                    _signal(channel, "TERM")
                    raise TransportError(
                        f"on {self.where}: `{command}` did not finish within {limit:g} s"
                    ) from None
                finally:
                    _close_quietly(channel)
        finally:
            self._channels.release()
        return CommandResult(
            host=self.name,
            command=command,
            exit_code=code,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            duration_s=time.monotonic() - started,
        )

    def _with_env(
        self, command: str, stdin: str | None, env: dict[str, str] | None
    ) -> tuple[str, bytes]:
        data = (stdin or "").encode("utf-8")
        if not env:
            return command, data
        if self.platform == "windows":
            raise OrsMigrateError(
                f"on {self.name}: environment variables cannot be passed to a Windows host over "
                "SSH without putting them on the command line; pass the values on stdin instead"
            )
        script = _env_script(env)
        return ENV_PRELUDE.format(lines=script.count("\n")) + command, script.encode() + data

    def _open_channel(self) -> paramiko.Channel:
        """A session channel; one the server refuses (too many sessions open, from other
        threads) is asked for again after a short wait, the connection staying up."""
        import paramiko

        for attempt in range(CHANNEL_OPEN_ATTEMPTS):
            try:
                return self._connection().open_session(timeout=self.settings.connect_timeout_s)
            except paramiko.ChannelException:
                if attempt == CHANNEL_OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn connection-level failures into TransportError naming the host."""
        import paramiko

        try:
            yield
        except (paramiko.SSHException, EOFError, OSError) as exc:
            with self._lock:
                if not self._still_alive():
                    self._drop()
            raise TransportError(f"on {self.where}: {what}: {_reason(exc)}") from None

    def _still_alive(self) -> bool:
        """After a failure: does the connection still open a channel? `is_active()` alone lags
        a cut connection until paramiko's reader thread notices, so it is probed."""
        import paramiko

        live = self._client.get_transport() if self._client else None
        if live is None or not live.is_active():
            return False
        try:
            live.open_session(timeout=self.settings.connect_timeout_s).close()
        except paramiko.ChannelException:
            return True  # the server answered: refused a channel (MaxSessions), not gone
        except (paramiko.SSHException, EOFError, OSError):
            return False
        return True

    # Files

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            self._connection()
            if self._sftp is None:
                assert self._client is not None
                with self._guard("cannot start SFTP"):
                    self._sftp = self._client.open_sftp()
                    channel = self._sftp.get_channel()
                    assert channel is not None
                    channel.settimeout(self.settings.command_timeout_s)
            return self._sftp

    def _sftp_path(self, path: str) -> str:
        return path.replace("\\", "/") if self.platform == "windows" else path

    def read_file(self, path: str) -> bytes | None:
        with self._sftp_lock:
            sftp = self._sftp_client()
            with self._guard(f"cannot read {path}"):
                try:
                    return read_file(sftp, self._sftp_path(path))
                except FileNotFoundError:
                    return None

    def write_file_atomic(self, path: str, data: bytes, *, backup_path: str | None) -> None:
        """Replace `path` so that an interruption leaves the old file or the new one, never a mix.

        Only a regular file is replaced: a symbolic link, a directory or any other kind of file
        at `path` is refused (InputError), never followed and never turned into a regular file.
        The old file is first copied to `backup_path` (when given and the old file exists), by
        the same replace-by-rename, with the old owner and mode 0600. The new content goes to a
        temporary file in the same directory, created 0600 and given the old file's mode (and
        owner, where the login may chown) before any data, written, fsynced where the server
        offers fsync@openssh.com and closed, and renamed over the target with posix-rename
        only once every one of those answered without error. A server without
        posix-rename (some Windows builds) gets remove-then-rename: a crash between the two
        leaves no file at `path`, only the backup. On Windows, mode and owner are not copied:
        the new file takes the directory's inherited ACLs. Temporary files left by an
        interrupted write are removed by the next process that writes into their folder.
        """
        remote = self._sftp_path(path)
        backup = self._sftp_path(backup_path) if backup_path else None
        with self._sftp_lock:
            sftp = self._sftp_client()
            with self._guard(f"cannot write {path}"):
                self._remove_stale_temps_once(sftp, remote)
                try:
                    AtomicWrite(
                        sftp,
                        path,
                        remote,
                        backup,
                        platform=self.platform,
                        where=self.where,
                        login_ids=self._login_ids,
                    ).run(data)
                except BaseException:
                    self._tidied.discard(posixpath.dirname(remote))
                    raise

    def _remove_stale_temps_once(self, sftp: paramiko.SFTPClient, remote: str) -> None:
        """Our temporary files left in the folder of `remote` by an interrupted process, removed
        at this process's first write into that folder: one listing per folder and run. This
        process removes its own on failure, and forgets that it tidied the folder when a write
        fails, so that the next write there lists it again. Each write holds the SFTP session
        whole, so no write of this transport is in flight while the folder is tidied."""
        folder = posixpath.dirname(remote)
        if folder in self._tidied:
            return
        remove_stale_temps(sftp, folder)
        self._tidied.add(folder)


def _key_strategy(user: str, keys: list[paramiko.PKey]) -> paramiko.AuthStrategy:
    """Offer exactly the configured keys, in order (no agent, no ~/.ssh guessing)."""
    from paramiko.auth_strategy import AuthStrategy, InMemoryPrivateKey

    class ConfiguredKeys(AuthStrategy):
        def get_sources(self) -> Iterator[InMemoryPrivateKey]:
            for key in keys:
                yield InMemoryPrivateKey(user, key)

    return ConfiguredKeys(ssh_config=None)


def _env_script(env: Mapping[str, str]) -> str:
    lines = []
    for key, value in env.items():
        if not ENV_NAME.match(key):
            raise OrsMigrateError(f"'{key}' is not a valid environment variable name")
        if "\0" in value:
            raise OrsMigrateError(f"the value of environment variable {key} contains a NUL byte")
        lines.append(f"export {key}={shlex.quote(value)}\n")
    return "".join(lines)


def _collect(
    channel: paramiko.Channel, payload: bytes, deadline: float
) -> tuple[bytes, bytes, int]:
    """stdout, stderr and exit status of an exec channel, feeding stdin meanwhile.

    stdin is fed by a helper thread so that a command which writes while it reads never
    deadlocks against a full window; the reads wait on the channel's pollable descriptor.
    """
    out, err = bytearray(), bytearray()
    waker = channel.fileno()
    feeder = _feed_stdin(channel, payload)
    while True:
        while channel.recv_ready():
            out += channel.recv(READ_CHUNK)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(READ_CHUNK)
        if channel.eof_received or channel.closed:
            if not (channel.recv_ready() or channel.recv_stderr_ready()):
                break
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Expired
        select.select([waker], [], [], remaining)
    if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
        raise _Expired
    if feeder is not None:
        feeder.join(timeout=0.1)
    transport = channel.get_transport()
    if channel.exit_status == -1 and (transport is None or not transport.is_active()):
        raise EOFError("connection lost while the command ran")
    return bytes(out), bytes(err), channel.exit_status


def _signal(channel: paramiko.Channel, name: str) -> None:
    """Ask the server to signal the command's process group (RFC 4254 section 6.9), so that a
    timed-out command does not run on unseen. paramiko has no public call for this request;
    OpenSSH has honoured it for commands since 7.9, and other servers may ignore it."""
    import paramiko
    from paramiko.common import cMSG_CHANNEL_REQUEST

    message = paramiko.Message()
    message.add_byte(cMSG_CHANNEL_REQUEST)
    message.add_int(channel.remote_chanid)
    message.add_string("signal")
    message.add_boolean(False)
    message.add_string(name)
    try:
        channel.transport._send_user_message(message)
    except (OSError, EOFError, paramiko.SSHException):
        return


def _feed_stdin(channel: paramiko.Channel, payload: bytes) -> threading.Thread | None:
    if not payload:
        channel.shutdown_write()
        return None

    def feed() -> None:
        try:
            channel.sendall(payload)
            channel.shutdown_write()
        except (OSError, EOFError):
            # The command ended (or the connection dropped) without reading all of stdin; the
            # reading side reports what happened.
            return

    thread = threading.Thread(target=feed, name="ssh-stdin", daemon=True)
    thread.start()
    return thread


def _close_quietly(closable: paramiko.Channel | paramiko.SFTPClient | paramiko.SSHClient) -> None:
    """Close what may sit on a dead connection: saying goodbye there fails, and nothing is lost."""
    import paramiko

    try:
        closable.close()
    except (OSError, EOFError, paramiko.SSHException):
        return


def ssh_transport(
    hosts: Mapping[str, Host],
    name: str,
    secrets: SecretResolver,
    built: MutableMapping[str, Any],
    chain: tuple[str, ...] = (),
) -> SshTransport:
    """The one builder of a site host's SshTransport, used by `validate`'s tests and by runs.

    A `jump_host` that names another site host reuses that host's transport (so its connection
    too); any other value is a `[user@]host[:port]` or ssh config alias for a jump host of its
    own. `built` caches transports by host name. Site validation refuses jump cycles and jumps
    through a non-SSH host with a located error; they are refused here again, never recursed."""
    if name in built:
        return cast(SshTransport, built[name])
    if name in chain:
        raise InputError(f"jump hosts form a cycle: {' -> '.join((*chain, name))}", rule="ssh-jump")
    host = hosts[name]
    settings = host.ssh or SshSettings()
    jump_name = settings.jump_host
    jump = None
    if jump_name is not None and jump_name in hosts:
        if hosts[jump_name].transport != "ssh":
            raise InputError(
                f"host '{name}' jumps through '{jump_name}', which is not an SSH host",
                rule="ssh-jump",
            )
        jump = ssh_transport(hosts, jump_name, secrets, built, (*chain, name))
    passphrase = secrets.resolve(settings.key_passphrase, what=f"SSH key passphrase for {name}")
    transport = SshTransport(
        name, settings, platform=host.platform, passphrase=passphrase, jump=jump
    )
    built[name] = transport
    return transport


def ssh_transports(hosts: Mapping[str, Host], secrets: SecretResolver) -> dict[str, SshTransport]:
    """One SshTransport per SSH host of the site (see `ssh_transport`). Key passphrases are
    resolved here, once per host."""
    built: dict[str, SshTransport] = {}
    for name, host in hosts.items():
        if host.transport == "ssh":
            ssh_transport(hosts, name, secrets, built)
    return built

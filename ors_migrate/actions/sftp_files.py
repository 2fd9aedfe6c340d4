"""Files on a host over SFTP, in as few round trips as the checks allow.

paramiko's file object waits for the answer to each request; here the requests that do not
depend on each other's answers go out together (`Batch`) and their answers are read together:
a read takes two round trips (open; size and data), an atomic replace with a backup six (see
`AtomicWrite`). Every answer is still checked before the next step that depends on it, and
above all before a rename puts a file in place.

paramiko is imported inside the functions that need it (for `--help` and `plan` start-up).
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ors_migrate.errors import InputError
from ors_migrate.userfiles import KINDS

if TYPE_CHECKING:
    import paramiko

TEMP_SUFFIX = ".ors-migrate.tmp"
# Backups and new files may hold secrets (the Redis password): readable by their owner only.
PRIVATE_MODE = 0o600
# SFTP read and write requests of at most 32 KiB: the size every SFTP server must accept.
READ_REQUEST = WRITE_REQUEST = 32768
# A temporary file: created here, never an existing file or through a link (O_EXCL).
NEW_FILE = 0x02 | 0x08 | 0x10 | 0x20  # SFTP_FLAG_WRITE | CREATE | TRUNC | EXCL
# Read requests in flight at once: their answers (2 MiB) fit paramiko's channel window.
READS_IN_FLIGHT = 64


class Batch:
    """SFTP requests sent together and answered together: one round trip for all of them.
    paramiko hands each answer to `_async_response` whenever it reads one."""

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self._sftp = sftp
        self._sent: list[int] = []
        self._answers: dict[int, tuple[int, paramiko.Message]] = {}

    def send(self, kind: int, *args: Any) -> int:
        number: int = self._sftp._async_request(self, kind, *args)
        self._sent.append(number)
        return number

    def _async_response(self, kind: int, msg: paramiko.Message, number: int) -> None:
        self._answers[number] = (kind, msg)

    def wait(self) -> None:
        while any(number not in self._answers for number in self._sent):
            self._sftp._read_response()

    def answer(self, number: int) -> paramiko.Message:
        """The answer's message; an error status raised as paramiko raises it (OSError,
        EOFError at the end of a file)."""
        from paramiko.sftp import CMD_STATUS

        kind, msg = self._answers[number]
        if kind == CMD_STATUS:
            self._sftp._convert_status(msg)
        return msg


def read_file(sftp: paramiko.SFTPClient, remote: str) -> bytes:
    """The whole file in two round trips: the open, then its size, its first chunk and (for a
    small file, the usual case) nothing more; a larger one takes one more round trip per
    window of chunks. The close is sent without waiting for its answer (nothing was written)."""
    return _read_handle(sftp, _open_for_reading(sftp, remote))


def _open_for_reading(sftp: paramiko.SFTPClient, remote: str) -> bytes:
    from paramiko.sftp import CMD_OPEN, SFTP_FLAG_READ

    _, msg = sftp._request(CMD_OPEN, remote, SFTP_FLAG_READ, _attributes())
    return bytes(msg.get_binary())


def _read_handle(sftp: paramiko.SFTPClient, handle: bytes) -> bytes:
    """What an open handle reads, its size asked in the same round trip as its first chunk; the
    handle is closed without waiting for the answer (nothing was written)."""
    from paramiko.sftp import CMD_CLOSE, CMD_FSTAT, CMD_READ, int64
    from paramiko.sftp_attr import SFTPAttributes

    try:
        batch = Batch(sftp)
        size_no = batch.send(CMD_FSTAT, handle)
        first_no = batch.send(CMD_READ, handle, int64(0), READ_REQUEST)
        batch.wait()
        size = SFTPAttributes._from_msg(batch.answer(size_no)).st_size
        data = bytearray(_chunk(batch, first_no))
        while True:
            more = _read_more(sftp, handle, len(data), size)
            if not more:
                return bytes(data)
            data += more
    finally:
        sftp._async_request(type(None), CMD_CLOSE, handle)


def _read_more(sftp: paramiko.SFTPClient, handle: bytes, offset: int, size: int | None) -> bytes:
    """What follows `offset`, up to `size` (when the server told it) or one chunk, requested
    together; b"" at the end. A short answer ends the window: the next starts after it."""
    from paramiko.sftp import CMD_READ, int64

    if size is not None and offset >= size:
        return b""
    end = (
        offset + READ_REQUEST
        if size is None
        else min(size, offset + READS_IN_FLIGHT * READ_REQUEST)
    )
    batch = Batch(sftp)
    numbers = [
        batch.send(CMD_READ, handle, int64(start), READ_REQUEST)
        for start in range(offset, end, READ_REQUEST)
    ]
    batch.wait()
    got = bytearray()
    for number in numbers:
        chunk = _chunk(batch, number)
        got += chunk
        if len(chunk) < READ_REQUEST:
            break
    return bytes(got)


def _chunk(batch: Batch, number: int) -> bytes:
    try:
        return bytes(batch.answer(number).get_string())
    except EOFError:
        return b""


class AtomicWrite:
    """One `write_file_atomic`, in six round trips with a backup (three without):

    1. the lstat of the target (a link or non-regular file is refused) and the opening of the
       temporary files, each created 0600 so that it is never readable by others whatever the
       server's umask;
    2. and 3. for the backup, the old file opened (only once it is known to be a regular file:
       opening a named pipe would block the server), then read;
    4. for each temporary file, its mode and owner, its data, the fsync and the close, all
       sent together, every answer checked;
    5. and 6. the rename of the backup into place, then of the new file over the target, each
       sent only when everything before it succeeded.

    Requests sent together on one handle are processed in order (OpenSSH serves one request
    after another); were one refused or reordered, its error is seen before any rename. On a
    failure the temporary files are removed and the target is left as it was."""

    def __init__(
        self,
        sftp: paramiko.SFTPClient,
        path: str,
        remote: str,
        backup: str | None,
        *,
        platform: str,
        where: str,
        login_ids: LoginIds,
    ) -> None:
        self.sftp, self.platform, self.where, self.login_ids = sftp, platform, where, login_ids
        self.path, self.remote, self.backup = path, remote, backup
        self.temps = {remote: _temp_name(remote)}
        if backup is not None:
            self.temps[backup] = _temp_name(backup)
        self.open_handles: list[bytes] = []

    def run(self, data: bytes) -> None:
        try:
            old, temps = self._open()
            contents = {self.remote: data}
            if self.backup is not None and old is not None:
                source = _open_for_reading(self.sftp, self.remote)
                contents[self.backup] = _read_handle(self.sftp, source)  # closes it
            elif self.backup is not None:
                self._discard(self.backup, temps.pop(self.backup))
            self._write(temps, contents, old)
            if self.backup in contents:
                _rename_over(self.sftp, self.temps[self.backup], self.backup)
            _rename_over(self.sftp, self.temps[self.remote], self.remote)
        except BaseException:
            for handle in self.open_handles:
                _close_handle_quietly(self.sftp, handle)
            for temp in self.temps.values():
                _remove_quietly(self.sftp, temp)
            raise

    def _open(self) -> tuple[Any, dict[str, bytes]]:
        """Round trip 1: the old file's attributes (None: there is none) and a handle on each
        temporary file, by its target."""
        from paramiko.sftp import CMD_LSTAT, CMD_OPEN
        from paramiko.sftp_attr import SFTPAttributes

        private = PRIVATE_MODE if self.platform != "windows" else None
        batch = Batch(self.sftp)
        looked = batch.send(CMD_LSTAT, self.remote)
        creating = {
            target: batch.send(CMD_OPEN, temp, NEW_FILE, _attributes(mode=private))
            for target, temp in self.temps.items()
        }
        batch.wait()
        temps, failures = {}, []
        for target, number in creating.items():
            try:
                temps[target] = bytes(batch.answer(number).get_binary())
            except OSError as exc:
                failures.append(exc)
            else:
                self.open_handles.append(temps[target])
        if failures:
            raise failures[0]
        try:
            old = SFTPAttributes._from_msg(batch.answer(looked))
        except FileNotFoundError:
            return None, temps
        refuse_unless_regular(old, self.path, self.where)
        return old, temps

    def _write(self, temps: dict[str, bytes], contents: dict[str, bytes], old: Any) -> None:
        """Round trip 4: every temporary file's mode, owner, data, fsync and close."""
        unix = self.platform != "windows"
        owner = self.login_ids.owner_to_keep(self.sftp, temps[self.remote], old) if unix else None
        batch = Batch(self.sftp)
        checks = []
        for target, handle in temps.items():
            mode = PRIVATE_MODE if target == self.backup else _mode_for(old, None)
            checks.append(
                _send_contents(
                    batch, handle, contents[target], mode=mode if unix else None, owner=owner
                )
            )
            self._closed(handle)
        batch.wait()
        for check in checks:
            check()

    def _closed(self, handle: bytes) -> None:
        """The close of `handle` is sent: it is not closed again after a failure (the server
        may give its number to a file opened later)."""
        self.open_handles.remove(handle)

    def _discard(self, target: str, handle: bytes) -> None:
        """A temporary file not needed after all (a backup of a file that did not exist)."""
        self._closed(handle)
        _close_handle_quietly(self.sftp, handle)
        _remove_quietly(self.sftp, self.temps.pop(target))


def _attributes(*, mode: int | None = None) -> Any:
    from paramiko.sftp_attr import SFTPAttributes

    attrs = SFTPAttributes()
    attrs.st_mode = mode
    return attrs


def _send_contents(
    batch: Batch,
    handle: bytes,
    data: bytes,
    *,
    mode: int | None,
    owner: tuple[int, int] | None,
) -> Callable[[], None]:
    """Mode, owner, data, fsync and close of a new file's handle, sent in this order; returns
    the check of their answers, to call once the batch has been waited for. A refused chown
    means the login may not give the file away (the file stays the login's), a refused
    fsync@openssh.com a server without it (the write goes on unsynced, as before); any other
    error is raised."""
    from paramiko.sftp import CMD_CLOSE, CMD_EXTENDED, CMD_FSETSTAT, CMD_WRITE, int64
    from paramiko.sftp_attr import SFTPAttributes

    checked = []
    if mode is not None:
        checked.append(batch.send(CMD_FSETSTAT, handle, _attributes(mode=mode)))
    chown = None
    if owner is not None:
        attrs = SFTPAttributes()
        attrs.st_uid, attrs.st_gid = owner
        chown = batch.send(CMD_FSETSTAT, handle, attrs)
    for start in range(0, len(data), WRITE_REQUEST):
        piece = data[start : start + WRITE_REQUEST]
        checked.append(batch.send(CMD_WRITE, handle, int64(start), piece))
    fsync = batch.send(CMD_EXTENDED, "fsync@openssh.com", handle)
    closed = batch.send(CMD_CLOSE, handle)

    def check() -> None:
        for number in checked:
            batch.answer(number)
        if chown is not None:
            try:
                batch.answer(chown)
            except PermissionError:
                pass
        try:
            batch.answer(fsync)
        except OSError:
            pass
        batch.answer(closed)

    return check


def _close_handle_quietly(sftp: paramiko.SFTPClient, handle: bytes) -> None:
    """After a failure: the handle closed without waiting (it may be closed already)."""
    import paramiko
    from paramiko.sftp import CMD_CLOSE

    try:
        sftp._async_request(type(None), CMD_CLOSE, handle)
    except (OSError, EOFError, paramiko.SSHException):
        return


def _mode_for(old: Any, mode: int | None) -> int:
    """`mode` when given, else the old file's mode; a new file (or one whose mode the server
    does not tell) is 0600."""
    if mode is not None:
        return mode
    if old is None or old.st_mode is None:
        return PRIVATE_MODE
    return int(old.st_mode) & 0o7777


def _temp_name(remote: str) -> str:
    folder, base = posixpath.split(remote)
    return posixpath.join(folder, f".{base}.{os.urandom(4).hex()}{TEMP_SUFFIX}")


STALE_TEMP = re.compile(rf"^\..+\.[0-9a-f]{{8}}{re.escape(TEMP_SUFFIX)}$")


def remove_stale_temps(sftp: paramiko.SFTPClient, folder: str) -> None:
    """Every temporary file of ours in `folder` (named by `_temp_name`)."""
    for entry in sftp.listdir(folder or "."):
        if STALE_TEMP.match(entry):
            _remove_quietly(sftp, posixpath.join(folder, entry))


def _rename_over(sftp: paramiko.SFTPClient, temp: str, remote: str) -> None:
    try:
        sftp.posix_rename(temp, remote)
    except OSError as exc:
        if exc.errno is not None or "unsupported" not in str(exc).lower():
            raise
        _remove_quietly(sftp, remote)
        sftp.rename(temp, remote)


def _remove_quietly(sftp: paramiko.SFTPClient, remote: str) -> None:
    import paramiko

    try:
        sftp.remove(remote)
    except (OSError, EOFError, paramiko.SSHException):
        return


def refuse_unless_regular(old: Any, path: str, where: str) -> None:
    """Anything but a regular file at a path we write is refused (InputError naming it)."""
    if old.st_mode is not None and not stat.S_ISREG(old.st_mode):
        kind = KINDS.get(stat.S_IFMT(old.st_mode), "not a regular file")
        raise InputError(
            f"on {where}: it is {kind}; only a regular file is replaced, and it was left as it is",
            file=path,
            rule="regular-file",
        )


class LoginIds:
    """The login's uid and gid on one host, read once from a file it created (the first
    temporary file), to tell whether a replaced file must be given back to its owner."""

    def __init__(self) -> None:
        self._ids: tuple[int, int] | None = None

    def owner_to_keep(self, sftp: paramiko.SFTPClient, handle: bytes, old: Any) -> Any:
        """The old file's (uid, gid) when they differ from the login's, None when nothing is
        to change."""
        if old is None or old.st_uid is None or old.st_gid is None:
            return None
        if self._ids is None:
            from paramiko.sftp import CMD_ATTRS, CMD_FSTAT
            from paramiko.sftp_attr import SFTPAttributes

            kind, msg = sftp._request(CMD_FSTAT, handle)
            if kind != CMD_ATTRS:
                return None
            mine = SFTPAttributes._from_msg(msg)
            self._ids = (mine.st_uid, mine.st_gid)
        ids = (old.st_uid, old.st_gid)
        return None if ids == self._ids else ids

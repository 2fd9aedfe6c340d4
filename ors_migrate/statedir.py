"""The state directory is trusted only when the operator alone could have written it.

A run's journal decides which site file's commands a rollback runs, and the lock holder file is
written by root on many installations: a directory or file another user can write or replace
would let that user choose what root runs or overwrites. So the directory is created 0700 and
its files 0600; a directory or file owned by someone else, or writable by group or others, is
refused (exit 2, naming the path and the problem); files in it are opened with O_NOFOLLOW, never
through a symlink; and the journal is tied to the directory by an identity marker, so that an
empty or swapped journal is refused instead of being read as "no runs".
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from pathlib import Path

from ors_migrate.errors import InputError

DIR_MODE = 0o700
FILE_MODE = 0o600
IDENTITY_FILE = "state-dir.id"


class StateDirError(InputError):
    """The state directory, or a file in it, cannot be trusted or used."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"state directory: {path}: {problem}", rule="state-dir")


def _owner_problem(path: Path | str, st: os.stat_result, what: str) -> str | None:
    """Why a file or directory another user could have written is not trusted, or None."""
    uid = os.geteuid()
    if st.st_uid != uid:
        return f"{what} is owned by uid {st.st_uid}, not by you (uid {uid}); refusing to trust it"
    writers = [name for bit, name in ((0o020, "group"), (0o002, "others")) if st.st_mode & bit]
    if writers:
        return (
            f"{what} is writable by {' and '.join(writers)} (mode {stat.S_IMODE(st.st_mode):04o});"
            f" run `chmod go-w {path}` if it is yours"
        )
    return None


def check_dir(path: Path) -> bool:
    """Whether the state directory exists, after refusing one that cannot be trusted or used.

    Refused: a symlink, something not a directory, a directory owned by another user or
    writable by group or others, and a read-only directory, by its mode or its mount (/proc is
    0555). Read-only is refused even for commands that only read: SQLite's write-ahead log
    needs to write beside the journal."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StateDirError(path, f"cannot be examined: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError(path, "is a symbolic link; give the real directory")
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(path, "is not a directory")
    problem = _owner_problem(path, st, "the directory")
    if problem:
        raise StateDirError(path, problem)
    if not st.st_mode & stat.S_IWUSR:
        raise StateDirError(
            path, f"is read-only (mode {stat.S_IMODE(st.st_mode):04o}); runs cannot be kept there"
        )
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        raise StateDirError(path, "is on a read-only file system; runs cannot be kept there")
    return True


def ensure_dir(path: Path) -> None:
    """The state directory, created 0700 when missing (parents as needed), then checked."""
    if not check_dir(path):
        try:
            path.mkdir(parents=True, mode=DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StateDirError(path, f"cannot be created: {exc.strerror}") from None
        os.chmod(path, DIR_MODE)
        check_dir(path)


def check_file(path: Path | str) -> bool:
    """Whether a file in the state directory exists, after refusing a symlink, a non-regular
    file, or one that another user owns or could write."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError(path, "is a symbolic link; refusing to follow it")
    if not stat.S_ISREG(st.st_mode):
        raise StateDirError(path, "is not a regular file")
    problem = _owner_problem(path, st, "the file")
    if problem:
        raise StateDirError(path, problem)
    return True


def open_private(path: Path | str, flags: int, *, create: bool = False) -> int:
    """A file descriptor for a state file, never through a symlink; created 0600 when asked."""
    if check_file(path) is False and not create:
        raise FileNotFoundError(path)
    mode_flags = flags | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        return os.open(path, mode_flags, FILE_MODE)
    except OSError as exc:
        raise StateDirError(path, f"cannot be opened: {exc.strerror}") from None


def create_private(path: Path) -> None:
    """Create an empty state file 0600 (never through a symlink) unless it exists."""
    os.close(open_private(path, os.O_RDWR, create=True))


def lock_private(path: Path | str) -> int | None:
    """An exclusive flock on a state file, taken without waiting: the open descriptor that
    holds it (closing it unlocks; the kernel unlocks it when the process dies, even by SIGKILL,
    so a killed holder never needs a manual unlock), or None when another run holds it.

    The file is created 0600 when missing and never opened through a symlink; what was opened
    is checked again, so a non-regular file or one another user owns or could write is
    refused, never locked, replaced or written."""
    fd = open_private(path, os.O_RDWR, create=True)
    try:
        st = os.fstat(fd)
        problem = None if stat.S_ISREG(st.st_mode) else "is not a regular file"
        problem = problem or _owner_problem(path, st, "the file")
        if problem:
            raise StateDirError(path, problem)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as exc:
        os.close(fd)
        raise StateDirError(path, f"cannot be locked: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, text: str) -> None:
    """Replace a small state file (the lock holder) by rename: a fresh 0600 temporary file,
    created exclusively and without following links, renamed over the old one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
        )
    except OSError as exc:
        raise StateDirError(tmp, f"cannot be written: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        check_file(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_private(path: Path) -> str | None:
    """A state file's text, or None when it is missing; never through a symlink."""
    try:
        fd = open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def identity(state_dir: Path) -> str | None:
    """The identity this state directory gave its journal, or None before it has one."""
    text = read_private(state_dir / IDENTITY_FILE)
    return text.strip() if text is not None else None


def new_identity(state_dir: Path) -> str:
    """Create the identity marker of a new journal (exclusively: never over an existing one)."""
    value = secrets.token_hex(16)
    path = state_dir / IDENTITY_FILE
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
        )
    except FileExistsError:
        raise StateDirError(
            path, "exists although the journal does not: the journal was removed or replaced"
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return value

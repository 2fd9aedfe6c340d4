"""Files written for the user (`report -o`, `schema -o`, `init`'s site and answer files).

Such a file is written whole to a temporary file beside it and renamed into place, so a reader
never sees half of it. Only a regular file is ever replaced: a symlink, a device node, a pipe or
a directory at the path is refused (exit 2) rather than turned into a regular file, and a
missing parent directory is named, not reported as an internal error.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ors_migrate.errors import InputError

KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
}


def _refuse(path: Path, problem: str, rule: str) -> InputError:
    return InputError(f"cannot write {path}: {problem}", file=str(path), rule=f"{rule}.write")


def existing_kind(path: Path) -> str | None:
    """What is at `path` when it is not a regular file ("a symbolic link", ...), else None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return KINDS.get(stat.S_IFMT(st.st_mode)) if not stat.S_ISREG(st.st_mode) else None


def check_target(path: Path, *, rule: str = "output") -> Path:
    """The directory the file goes into, after refusing a target that is not a regular file or
    a parent directory that does not exist."""
    kind = existing_kind(path)
    if kind is not None:
        raise _refuse(path, f"it is {kind}; only a regular file is replaced", rule)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise _refuse(path, f"the directory {directory} does not exist", rule)
    return directory


def write_user_file(
    path: Path, text: str, *, overwrite: bool = True, mode: int = 0o644, rule: str = "output"
) -> None:
    """Write `text` to `path` atomically. Without `overwrite` an existing file is never
    replaced, even one created meanwhile (the rename is a hard link that fails if it exists).
    `rule` prefixes the rule id of an error: `output.write`, `init.exists`, ..."""
    directory = check_target(path, rule=rule)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _refuse(path, str(exc.strerror), rule) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        # Checked again just before the rename: what appeared meanwhile is not replaced either.
        kind = existing_kind(path)
        if kind is not None:
            raise _refuse(path, f"it is {kind}; only a regular file is replaced", rule)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        raise InputError(
            f"{path} exists; pass --force to overwrite it", file=str(path), rule=f"{rule}.exists"
        ) from None
    except OSError as exc:
        raise _refuse(path, str(exc.strerror), rule) from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)

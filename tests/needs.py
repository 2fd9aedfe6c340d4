"""What a test needs from the machine (system packages, privileges), and what happens when it is
missing: a skip on a developer's machine, a failure naming the package under CI.

`CI=true`, `ORS_MIGRATE_REQUIRE_ALL=1` or `pytest --require-all` turn every such skip into a
failure, so a green run means every capability was tested. `scripts/setup.sh test` installs all
of them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Need:
    what: str
    present: Callable[[], bool]
    remedy: str


def _executable(path: str) -> Callable[[], bool]:
    return lambda: os.access(path, os.X_OK)


def _on_path(*names: str) -> Callable[[], bool]:
    return lambda: any(shutil.which(name) for name in names)


NEEDS: dict[str, Need] = {
    "redis-server": Need("redis-server", _on_path("redis-server"), "apt-get install redis-server"),
    "redis-cli": Need("redis-cli", _on_path("redis-cli"), "apt-get install redis-tools"),
    "sshd": Need("/usr/sbin/sshd", _executable("/usr/sbin/sshd"), "apt-get install openssh-server"),
    "ssh-keygen": Need("ssh-keygen", _on_path("ssh-keygen"), "apt-get install openssh-client"),
    "tmux": Need("tmux", _on_path("tmux"), "apt-get install tmux"),
    "chromium": Need(
        "chromium", _on_path("chromium", "chromium-browser"), "apt-get install chromium"
    ),
    "root": Need("root privileges", lambda: os.geteuid() == 0, "run the tests as root"),
}

_strict = False


def set_strict(strict: bool) -> None:
    global _strict
    _strict = strict


def strict_from_environment() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1") or os.environ.get(
        "ORS_MIGRATE_REQUIRE_ALL", ""
    ) not in ("", "0")


def missing(*names: str) -> list[Need]:
    return [NEEDS[name] for name in names if not NEEDS[name].present()]


def require(*names: str) -> None:
    """Skip the calling test (fail it when strict) unless everything in `names` is here."""
    absent = missing(*names)
    if not absent:
        return
    reason = "needs " + "; ".join(f"{need.what} ({need.remedy})" for need in absent)
    if _strict:
        pytest.fail(
            f"{reason}: a required test cannot be skipped (CI=true or --require-all); "
            "scripts/setup.sh test installs it",
            pytrace=False,
        )
    pytest.skip(reason)

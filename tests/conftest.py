"""Shared fixtures: rehearsal labs (real Redis Cluster, CQL stand-in, simulated ORS) that are
always brought down, and a check that nothing they started is left running."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from needs import require, set_strict, strict_from_environment

from ors_migrate.lab.lab import LabShape, lab_down, lab_up
from ors_migrate.lab.layout import LabLayout

if TYPE_CHECKING:
    from durable_runs import Runs

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-all",
        action="store_true",
        help="a test that lacks a system package or privilege fails instead of skips "
        "(also CI=true or ORS_MIGRATE_REQUIRE_ALL=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*names): system packages or privileges")
    set_strict(bool(config.getoption("--require-all")) or strict_from_environment())


# What starts a server (Redis Cluster, CQL stand-in, sshd) or a whole lab: a test that uses
# one of these fixtures or needs one of these programs is `slow`, so that `-m "not slow"` is
# the fast loop. Tests that start a lab themselves (`cli("lab", "up", ...)`) say so with
# `@pytest.mark.slow`.
SERVER_FIXTURES = frozenset(
    {"make_lab", "standin", "driver", "root_sshd", "plain_lab", "bare_lab", "tls_lab", "lab"}
)
SERVER_PROGRAMS = frozenset({"redis-server", "sshd"})


def starts_a_server(item: pytest.Item) -> bool:
    fixtures = set(getattr(item, "fixturenames", ()))
    needed = {name for marker in item.iter_markers("needs") for name in marker.args}
    return bool(fixtures & SERVER_FIXTURES or needed & SERVER_PROGRAMS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if starts_a_server(item):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs"):
        require(*marker.args)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One line that counts the skips and says why, so a green run cannot hide untested parts."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    total = sum(reasons.values())
    detail = "; ".join(f"{count} x {reason}" for reason, count in sorted(reasons.items()))
    terminalreporter.write_line(f"skipped: {total}" + (f" ({detail})" if detail else ""))


def processes_under(directory: Path) -> list[str]:
    """Command lines of live processes that mention `directory` (lab processes do)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    needle = str(directory)
    return [
        line.strip()
        for line in out.splitlines()
        if needle in line and "ps -eo" not in line and str(os.getpid()) != line.split()[0]
    ]


@pytest.fixture
def make_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LabLayout]]:
    """Start labs on demand; every lab is brought down after the test and must leave nothing."""
    started: list[Path] = []

    def make(
        clusters: int = 2,
        pairs_per_cluster: int = 2,
        secure: bool = False,
        load_seed: int | None = None,
    ) -> LabLayout:
        require("redis-server", "redis-cli")
        root = tmp_path_factory.mktemp("lab")
        started.append(root)
        shape = LabShape(
            clusters=clusters,
            pairs_per_cluster=pairs_per_cluster,
            secure=secure,
            load_seed=load_seed,
        )
        return lab_up(root, shape)

    yield make
    for root in started:
        lab_down(root)
    for root in started:
        left = [p for p in processes_under(root) if "redis-server" in p or "ors_migrate.lab" in p]
        assert not left, f"processes left running after lab down: {left}"


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `ors-migrate` as an operator would: a separate process, no terminal."""
    return subprocess.run(
        [sys.executable, "-m", "ors_migrate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "ORS_MIGRATE_DEBUG": "1", **(env or {})},
        stdin=subprocess.DEVNULL if stdin is None else None,
        input=stdin,
    )


@pytest.fixture
def runs_of(tmp_path: Path) -> Iterator[Callable[[Path], Runs]]:
    """`ors-migrate run` processes against a site, each killed after the test if still alive."""
    from durable_runs import Runs  # it runs `cli` from this module

    made: list[subprocess.Popen[bytes]] = []

    def make(site: Path) -> Runs:
        runs = Runs(site, tmp_path / "state", tmp_path)
        original = runs.start

        def start(*args: str) -> subprocess.Popen[bytes]:
            proc = original(*args)
            made.append(proc)
            return proc

        runs.start = start  # type: ignore[method-assign]
        return runs

    yield make
    for proc in made:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

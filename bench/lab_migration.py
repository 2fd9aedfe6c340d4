"""(a) The tool's own CPU and wall time per executed action in a full lab migration.

The run is the real `Runner.start` of `migrate-to-redis`, in this process, against a lab of N HA
pairs. The product is not instrumented: for the time of the run this module wraps
`Engine._run_action` (wall: `time.monotonic()`, the tool's own CPU: `time.process_time()`, which
leaves out the child processes the site commands start and the lab's own processes) and
`Journal._tx` (every journal write, with its fsync), and the engine's `build_gate_view` where it
has one (a gate's view reads live session counts, even when --yes approves it unseen).
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

import ors_migrate.engine as engine_module
from ors_migrate.engine import Engine
from ors_migrate.journal import Journal
from ors_migrate.lab.lab import LabShape, lab_down, lab_up
from ors_migrate.runner import Runner
from ors_migrate.step import PlannedAction
from ors_migrate.ui import Ui


@dataclass
class Spent:
    count: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def add(self, wall_s: float, cpu_s: float) -> None:
        self.count += 1
        self.wall_s += wall_s
        self.cpu_s += cpu_s


@dataclass
class Clocks:
    """Time spent per action name, and in journal writes."""

    actions: dict[str, Spent] = field(default_factory=dict)
    journal: Spent = field(default_factory=Spent)
    gate_views: Spent = field(default_factory=Spent)

    def action(self, name: str) -> Spent:
        return self.actions.setdefault(name, Spent())


@contextmanager
def measured(clocks: Clocks) -> Iterator[None]:
    """Wrap `Engine._run_action`, `Journal._tx` and the engine's `build_gate_view` for the time
    of the `with` block."""
    run_action, transaction = Engine._run_action, Journal._tx
    gate_view = getattr(engine_module, "build_gate_view", None)

    def timed_action(engine: Engine, *args: Any, **kwargs: Any) -> Any:
        step = next(a for a in (*args, *kwargs.values()) if isinstance(a, PlannedAction))
        with _timer(clocks.action(step.action).add):
            return run_action(engine, *args, **kwargs)

    @contextmanager
    def timed_transaction(journal: Journal) -> Iterator[Any]:
        with _timer(clocks.journal.add), transaction(journal) as db:
            yield db

    def timed_gate_view(*args: Any, **kwargs: Any) -> Any:
        assert gate_view is not None
        with _timer(clocks.gate_views.add):
            return gate_view(*args, **kwargs)

    Engine._run_action = timed_action  # type: ignore[method-assign,assignment]
    Journal._tx = timed_transaction  # type: ignore[method-assign,assignment]
    if gate_view is not None:
        engine_module.build_gate_view = timed_gate_view
    try:
        yield
    finally:
        Engine._run_action = run_action  # type: ignore[method-assign]
        Journal._tx = transaction  # type: ignore[method-assign]
        if gate_view is not None:
            engine_module.build_gate_view = gate_view


@contextmanager
def _timer(record: Callable[[float, float], None]) -> Iterator[None]:
    wall, cpu = time.monotonic(), time.process_time()
    try:
        yield
    finally:
        record(time.monotonic() - wall, time.process_time() - cpu)


def lab_shape(pairs: int) -> LabShape:
    """At most 10 pairs per ORS cluster, in as few clusters as divide `pairs` evenly."""
    clusters = next(c for c in range(1, pairs + 1) if pairs % c == 0 and pairs // c <= 10)
    return LabShape(clusters=clusters, pairs_per_cluster=pairs // clusters)


def warm_imports() -> None:
    """The libraries the actions import lazily, imported once before any run is measured, so
    that every lab size pays the same (start-up imports are measured in section b)."""
    import cassandra.cluster  # noqa: F401
    import redis  # noqa: F401

    import ors_migrate.actions.cassandra_checks  # noqa: F401
    import ors_migrate.actions.redis_checks  # noqa: F401
    from ors_migrate.runner import action_table

    action_table()


def migrate(pairs: int) -> Iterator[str]:
    shape = lab_shape(pairs)
    with tempfile.TemporaryDirectory(prefix=f"bench-lab-{pairs}-") as directory:
        began = time.monotonic()
        layout = lab_up(Path(directory) / "lab", shape)
        lab_s = time.monotonic() - began
        try:
            yield from _run_and_report(layout.site, Path(directory) / "state", pairs, shape, lab_s)
        finally:
            lab_down(layout.root)


def _run_and_report(
    site: Path, state_dir: Path, pairs: int, shape: LabShape, lab_s: float
) -> Iterator[str]:
    ui = Ui(assume_yes=True, quiet=True, interactive=False, console=Console(file=io.StringIO()))
    runner = Runner(state_dir, ui)
    clocks = Clocks()
    try:
        with measured(clocks):
            wall, cpu = time.monotonic(), time.process_time()
            run_id, outcome = runner.start(
                str(site), "migrate-to-redis", resume=False, run_id=None, auto_rollback=False
            )
            wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        events = len(runner.journal.events(run_id))
    finally:
        runner.close()
    shape_text = f"{shape.clusters} x {shape.pairs_per_cluster} pairs"
    yield (
        f"  {pairs} HA pairs ({shape_text}, {2 * pairs} simulated ORS, 6 redis-server): "
        f"run {outcome.status} in {wall:.1f} s wall (lab up took {lab_s:.1f} s)"
    )
    if outcome.status != "succeeded":
        yield f"  the run did not succeed: {outcome.message}"
    yield from action_table(clocks)
    yield from own_share(clocks, wall, cpu, events)


def action_table(clocks: Clocks) -> Iterator[str]:
    header = f"{'action':<28} {'n':>4} {'wall s/action':>13} {'tool CPU ms/action':>18}"
    yield f"  {header} {'CPU/wall':>8}"
    total = Spent()
    for name, spent in sorted(clocks.actions.items()):
        total.count += spent.count
        total.wall_s += spent.wall_s
        total.cpu_s += spent.cpu_s
        yield _row(name, spent)
    yield _row("all executed actions", total)


def _row(name: str, spent: Spent) -> str:
    share = spent.cpu_s / spent.wall_s if spent.wall_s else 0.0
    return (
        f"  {name:<28} {spent.count:>4} {spent.wall_s / spent.count:>13.3f} "
        f"{1000 * spent.cpu_s / spent.count:>18.1f} {share:>8.1%}"
    )


def own_share(clocks: Clocks, wall: float, cpu: float, events: int) -> Iterator[str]:
    """The tool's own time: its CPU, plus the time it waits for its journal's fsyncs."""
    journal = clocks.journal
    fsync_wait = max(0.0, journal.wall_s - journal.cpu_s)
    actions_wall = sum(s.wall_s for s in clocks.actions.values())
    own = cpu + fsync_wait
    yield (
        f"  journal: {events} events in {journal.count} write transactions, "
        f"{1000 * journal.wall_s / max(journal.count, 1):.1f} ms wall each "
        f"({journal.wall_s:.2f} s in all, fsync included)"
    )
    views = clocks.gate_views
    yield (
        f"  outside actions (load, plan, lock, live topology, gates, state bookkeeping): "
        f"{wall - actions_wall:.2f} s wall, of which {views.count} gate views reading live "
        f"session counts: {views.wall_s:.2f} s"
    )
    yield (
        f"  tool's own share of the run's wall time: CPU {cpu:.2f} s + journal fsync wait "
        f"{fsync_wait:.2f} s = {own:.2f} s of {wall:.1f} s = {own / wall:.1%}"
    )

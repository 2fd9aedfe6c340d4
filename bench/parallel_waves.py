"""Serial against parallel HA pairs: the same lab migration twice, each on a fresh lab of the same
shape, once one pair at a time and once with `--parallel N`; the wall time of each, their ratio,
the tool's own CPU (all its threads, not the site commands it starts nor the lab) and its share
of the wall, and each run's journaled estimate beside what it took.

The runs are the real `Runner.start` of `migrate-to-redis` in this process, as
`bench/lab_migration.py` does, so `time.process_time()` is the tool's CPU.

    .venv/bin/python bench/parallel_waves.py                  # 30 pairs, --parallel 5 (~15 min)
    .venv/bin/python bench/parallel_waves.py --pairs 4 --clusters 2 --parallel 4 --per-cluster 1
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ors_migrate.events import EventKind
from ors_migrate.lab.lab import LabShape, lab_down, lab_up
from ors_migrate.parallel import Parallelism
from ors_migrate.runner import Runner
from ors_migrate.ui import Ui

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab_migration import lab_shape, warm_imports  # noqa: E402


@dataclass(frozen=True)
class Measured:
    label: str
    status: str
    wall_s: float
    cpu_s: float
    estimated_s: float
    states: dict[str, float]  # state id -> seconds it took

    def line(self) -> str:
        return (
            f"  {self.label}: {self.status}, wall {self.wall_s:.1f} s, tool CPU "
            f"{self.cpu_s:.2f} s ({self.cpu_s / self.wall_s:.1%} of wall), estimated "
            f"{self.estimated_s:.1f} s at its start"
        )


def migrate(shape: LabShape, parallel: Parallelism, work: Path) -> Measured:
    layout = lab_up(work / "lab", shape)
    ui = Ui(assume_yes=True, quiet=True, interactive=False, console=Console(file=io.StringIO()))
    runner = Runner(work / "state", ui, parallel=parallel)
    try:
        wall, cpu = time.monotonic(), time.process_time()
        run_id, outcome = runner.start(
            str(layout.site), "migrate-to-redis", resume=False, run_id=None, auto_rollback=False
        )
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        events = runner.journal.events(run_id)
        made = next(e for e in events if e.kind == EventKind.ESTIMATE)
        states = {
            str(e.state_id): float(e.payload["seconds"])
            for e in events
            if e.kind == EventKind.STATE_ENDED
        }
    finally:
        runner.close()
        lab_down(layout.root)
    if outcome.status != "succeeded":
        print(f"  the run did not succeed: {outcome.message}")
    estimated = float(made.payload["total_s"])
    return Measured(parallel.describe(), outcome.status, wall, cpu, estimated, states)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--parallel", type=int, default=5)
    parser.add_argument("--per-cluster", type=int, default=None)
    parser.add_argument(
        "--clusters", type=int, default=None, help="ORS clusters (they divide --pairs)"
    )
    args = parser.parse_args(argv)
    shape = (
        LabShape(clusters=args.clusters, pairs_per_cluster=args.pairs // args.clusters)
        if args.clusters
        else lab_shape(args.pairs)
    )
    warm_imports()
    print(
        f"lab migration of {args.pairs} HA pairs ({shape.clusters} x {shape.pairs_per_cluster}), "
        "each run on a fresh lab:"
    )
    results = []
    for parallel in (Parallelism(), Parallelism(args.parallel, args.per_cluster)):
        with tempfile.TemporaryDirectory(prefix="bench-parallel-") as work:
            results.append(migrate(shape, parallel, Path(work)))
        print(results[-1].line(), flush=True)
    serial, parallel_run = results
    print("  seconds per state, serial -> parallel:")
    for state, seconds in serial.states.items():
        print(f"    {state:<30} {seconds:7.1f} -> {parallel_run.states.get(state, 0.0):7.1f}")
    print(
        f"  wall: serial / parallel = {serial.wall_s / parallel_run.wall_s:.2f}x "
        f"({serial.wall_s:.1f} s -> {parallel_run.wall_s:.1f} s)"
    )
    return 0 if all(r.status == "succeeded" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

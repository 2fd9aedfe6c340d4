"""Serial against parallel HA pairs: the same lab migration twice, each on a fresh lab of the same
shape and the same seeded call load (`--load-seed`), once one pair at a time and once with
`--parallel N`; the wall time of each, their ratio (only when both runs succeeded), the tool's own
CPU (all its threads, not the site commands it starts nor the lab) and its share of the wall,
and each run's journaled estimate beside what it took.

Both runs journal into one state directory, so the parallel run's estimate at its start is made
as an operator's second run would make it: from the durations the serial run measured (the
latest succeeded run of the same site; the lab's site file declares none). The serial run's own
estimate has nothing measured to go on: it comes from our default guesses, and says so.

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
from dataclasses import dataclass, replace
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
    estimated_from: list[str]  # where the estimate's durations came from
    states: dict[str, float]  # state id -> seconds it took
    machine_busy: float  # share of the machine's CPU time busy during the run (lab included)

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def line(self) -> str:
        return (
            f"  {self.label}: {self.status}, wall {self.wall_s:.1f} s, tool CPU "
            f"{self.cpu_s:.2f} s ({self.cpu_s / self.wall_s:.1%} of wall), estimated "
            f"{self.estimated_s:.1f} s at its start (durations from: "
            f"{'; '.join(self.estimated_from)}); machine CPU busy {self.machine_busy:.0%} "
            "(the lab's processes, the tool and anything else on this machine)"
        )


def cpu_ticks() -> tuple[int, int]:
    """The machine's busy and total CPU ticks so far (`/proc/stat`): on a small machine a
    large lab can keep every core busy, and then the wall time measures the machine."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def migrate(shape: LabShape, parallel: Parallelism, lab: Path, state: Path) -> Measured:
    """One run on a fresh lab in `lab`, journaled in `state` (shared by both runs)."""
    layout = lab_up(lab, shape)
    ui = Ui(assume_yes=True, quiet=True, interactive=False, console=Console(file=io.StringIO()))
    runner = Runner(state, ui, parallel=parallel)
    try:
        wall, cpu, ticks = time.monotonic(), time.process_time(), cpu_ticks()
        run_id, outcome = runner.start(
            str(layout.site), "migrate-to-redis", resume=False, run_id=None, auto_rollback=False
        )
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        busy, total = (after - before for after, before in zip(cpu_ticks(), ticks, strict=True))
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
    sources = sorted({src for s in made.payload["states"] for src in s.get("sources", [])})
    return Measured(
        parallel.describe(), outcome.status, wall, cpu, estimated, sources, states, busy / total
    )


def shape_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> LabShape:
    """The lab's shape; a --clusters that does not divide --pairs is refused (it would
    silently migrate fewer pairs than asked)."""
    if args.clusters is None:
        return replace(
            lab_shape(args.pairs), load_seed=args.seed, poll_interval_s=args.poll_interval_s
        )
    if args.clusters < 1 or args.pairs % args.clusters:
        parser.error(
            f"--clusters {args.clusters} does not divide --pairs {args.pairs}: every ORS "
            "cluster gets the same number of HA pairs"
        )
    return LabShape(
        args.clusters,
        args.pairs // args.clusters,
        load_seed=args.seed,
        poll_interval_s=args.poll_interval_s,
    )


def compare(serial: Measured, parallel_run: Measured) -> None:
    print("  seconds per state, serial -> parallel:")
    for state, seconds in serial.states.items():
        print(f"    {state:<30} {seconds:7.1f} -> {parallel_run.states.get(state, 0.0):7.1f}")
    failed = [r for r in (serial, parallel_run) if not r.succeeded]
    if failed:
        which = "; ".join(f"{r.label}: {r.status}" for r in failed)
        print(f"  wall ratio not computed: a run did not succeed ({which})")
        return
    print(
        f"  wall: serial / parallel = {serial.wall_s / parallel_run.wall_s:.2f}x "
        f"({serial.wall_s:.1f} s -> {parallel_run.wall_s:.1f} s)"
    )
    off = (parallel_run.wall_s - parallel_run.estimated_s) / parallel_run.estimated_s
    print(
        f"  parallel run: estimated {parallel_run.estimated_s:.1f} s at its start from "
        f"{'; '.join(parallel_run.estimated_from)}, took {parallel_run.wall_s:.1f} s ({off:+.0%})"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--parallel", type=int, default=5)
    parser.add_argument("--per-cluster", type=int, default=None)
    parser.add_argument(
        "--clusters", type=int, default=None, help="ORS clusters (they must divide --pairs)"
    )
    parser.add_argument("--seed", type=int, default=7, help="the labs' --load-seed")
    parser.add_argument(
        "--poll-interval-s",
        type=float,
        default=1.0,
        help="the lab site's services.poll_interval_s (the lab's own default, 0.1, is for tests)",
    )
    args = parser.parse_args(argv)
    shape = shape_of(parser, args)
    warm_imports()
    print(
        f"lab migration of {args.pairs} HA pairs ({shape.clusters} x {shape.pairs_per_cluster}), "
        f"each run on a fresh lab, load seed {args.seed}, status polled every "
        f"{args.poll_interval_s:g} s:"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as work:
        runs = (
            ("serial", Parallelism()),
            ("parallel", Parallelism(args.parallel, args.per_cluster)),
        )
        for name, parallel in runs:
            # A failed serial run stays unfinished in its state directory and would refuse the
            # next run there: the parallel run then journals apart, estimated from defaults.
            shared = all(r.succeeded for r in results)
            state = Path(work) / ("state" if shared else f"{name}-state")
            results.append(migrate(shape, parallel, Path(work) / name, state))
            print(results[-1].line(), flush=True)
    compare(*results)
    return 0 if all(r.succeeded for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

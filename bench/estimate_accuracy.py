"""How close the run's estimate comes to its wall time once durations come from an earlier run of
the same site: two lab migrations of the same lab shape (same site name) in one state
directory, each on a fresh lab; the second run's estimate (journaled at its start, from the
first run's durations) against its actual wall time, per state and in all.

    .venv/bin/python bench/estimate_accuracy.py [--clusters 2] [--pairs-per-cluster 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ors_migrate.lab.lab import LabShape, lab_down, lab_up


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ors_migrate", *args], capture_output=True, text=True, check=False
    )


def migrate(root: Path, shape: LabShape, state: Path) -> tuple[str, float]:
    lab = lab_up(root, shape)
    try:
        started = time.monotonic()
        done = cli("run", str(lab.site), "--yes", "--state-dir", str(state))
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"run failed: {done.stderr[-2000:]}")
    finally:
        lab_down(root)
    runs = json.loads(cli("runs", "--json", "--state-dir", str(state)).stdout)
    return runs[-1]["run_id"], wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--pairs-per-cluster", type=int, default=2)
    args = parser.parse_args()
    shape = LabShape(clusters=args.clusters, pairs_per_cluster=args.pairs_per_cluster)
    with tempfile.TemporaryDirectory(prefix="orsm-estimate-") as work:
        base, state = Path(work), Path(work) / "state"
        first, first_wall = migrate(base / "lab1", shape, state)
        second, second_wall = migrate(base / "lab2", shape, state)
        report = json.loads(cli("report", second, "-f", "json", "--state-dir", str(state)).stdout)
    compared = report["estimate"]
    estimated, actual = compared["total_estimated_s"], compared["total_actual_s"]
    pairs = args.clusters * args.pairs_per_cluster
    print(f"lab of {pairs} HA pairs; run 1 {first} took {first_wall:.1f} s (durations from it)")
    print(
        f"run 2 {second}: estimated {estimated:.1f} s at its start, took {actual:.1f} s "
        f"(journal), {second_wall:.1f} s (process); error {(actual - estimated) / actual:+.1%}"
    )
    print(f"{'state':<30} {'estimated':>10} {'actual':>10}")
    for row in compared["states"]:
        shown = "-" if row["actual_s"] is None else f"{row['actual_s']:.1f}"
        print(f"{row['state_id']:<30} {row['estimated_s']:>10.1f} {shown:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

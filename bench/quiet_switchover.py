"""Sessions lost at the first switchover: switching at once against waiting, on the same load.

Two labs of the same shape and the same `--load-seed`, one after the other, so that both get
the same calls at the same time after their `lab up`. Each runs the real command line
(`ors-migrate run SITE --yes`): the first with no wait, the second with the site's
`quiet_switchover` (policy `lowest`). Per HA pair it prints, from the lab's own record of each
promotion and from the journal: the sessions in progress and lost at the first switchover (to
Redis, enable.1) in each run, the lab time of that switchover (seconds after `lab up`, to show
how close the two runs are on the load), and the lowest number in progress the wait saw.

Usage: `flock /tmp/orsm-heavy.lock .venv/bin/python bench/quiet_switchover.py [--pairs 2]
[--seed 7] [--window-s 30] [--watch-s 10]`. Needs `redis-server`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def ors_migrate(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "ors_migrate", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ors-migrate {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def first_switchovers(lab: Path) -> dict[str, dict[str, Any]]:
    """Per pair, the lab's record of its first promotion to a primary on Redis."""
    epoch = json.loads((lab / "lab.json").read_text())["load_epoch"]
    status = json.loads(ors_migrate("lab", "status", "--dir", str(lab), "--json").stdout)
    found: dict[str, dict[str, Any]] = {}
    for promotion in status["switchovers"]:
        if promotion["store"] == "redis" and promotion["pair"] not in found:
            found[promotion["pair"]] = {**promotion, "lab_s": promotion["at"] - epoch}
    return found


def waits(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Per pair, what the journal says its quiet wait saw."""
    from ors_migrate.journal import Journal

    journal = Journal(state_dir)
    try:
        run_id = journal.runs()[-1].run_id
        found = {}
        for event in journal.events(run_id):
            wait = event.payload.get("observed", {}).get("quiet_wait")
            if event.kind == "action_ended" and wait and event.action_key:
                found[event.action_key.split("/")[1]] = wait  # state/pair/index
        return found
    finally:
        journal.close()


def migrate(work: Path, name: str, args: argparse.Namespace, quiet: str | None) -> Path:
    lab = work / name
    shape = ["--clusters", "1", "--pairs-per-cluster", str(args.pairs)]
    ors_migrate("lab", "up", "--dir", str(lab), *shape, "--load-seed", str(args.seed))
    try:
        site = lab / "site.yaml"
        if quiet is not None:
            site.write_text(site.read_text() + quiet)
        ors_migrate("run", str(site), "--yes", "--state-dir", str(work / f"{name}-state"))
        return lab
    except BaseException:
        ors_migrate("lab", "down", "--dir", str(lab))
        raise


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--watch-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    quiet = (
        f"quiet_switchover: {{policy: lowest, window_s: {args.window_s}, "
        f"watch_s: {args.watch_s}}}\n"
    )
    work = Path(tempfile.mkdtemp(prefix="ors-migrate-quiet-"))
    print(f"load seed {args.seed}, 1 ORS cluster of {args.pairs} HA pairs; labs in {work}")
    at_once_lab = migrate(work, "at-once", args, None)
    try:
        at_once = first_switchovers(at_once_lab)
    finally:
        ors_migrate("lab", "down", "--dir", str(at_once_lab))
    waiting_lab = migrate(work, "waiting", args, quiet)
    try:
        waited = first_switchovers(waiting_lab)
    finally:
        ors_migrate("lab", "down", "--dir", str(waiting_lab))
    seen = waits(work / "waiting-state")
    print(f"waiting: {quiet.strip()}")
    print(
        f"{'pair':<12} {'at once: lab s':>14} {'in progress':>11} {'lost':>5}   "
        f"{'waiting: lab s':>14} {'waited s':>8} {'lowest seen':>11} {'lost':>5}"
    )
    totals = [0, 0, 0]
    for pair, first in sorted(at_once.items()):
        then, wait = waited[pair], seen.get(pair, {})
        totals[0] += first["lost"]
        totals[1] += wait.get("lowest_seen") or 0
        totals[2] += then["lost"]
        print(
            f"{pair:<12} {first['lab_s']:>14.1f} {first['in_progress']:>11} {first['lost']:>5}   "
            f"{then['lab_s']:>14.1f} {wait.get('waited_s', 0):>8.1f} "
            f"{wait.get('lowest_seen')!s:>11} {then['lost']:>5}"
        )
    print(
        f"in all: {totals[0]} lost switching at once; waiting: lowest seen {totals[1]}, "
        f"{totals[2]} lost"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Sessions lost at the first switchover: switching at once against waiting, on the same load.

Two labs of the same shape and the same `--load-seed`, one after the other, so that both get
the same calls at the same time after their `lab up`. Each runs the real command line
(`ors-migrate run SITE --yes --parallel PAIRS`): every pair of a state at once, so that each
pair's first switchover falls due at about the same lab time in both runs (one pair at a time,
pair k would be due only after the earlier pairs' waits, on another part of the load). The first
run does not wait, the second follows the site's `quiet_switchover` (policy `lowest`). Per HA
pair it prints, from the lab's own record of each promotion and from the journal: the sessions
in progress and lost at the first switchover (to Redis, enable.1) in each run, the lab time of
that switchover (seconds after `lab up`, to show how close the two runs are on the load), and
from the wait: the sessions in progress when the switchover fell due (`sessions_when_due`, what
switching at once would have lost on the waiting run's own load), how long it waited and the
lowest number in progress it saw. A figure the lab or the journal does not hold prints as n/a,
and the bench then exits 1: a missing wait is no evidence of a quiet moment.

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
        state = str(work / f"{name}-state")
        ors_migrate("run", str(site), "--yes", "--state-dir", state, "--parallel", str(args.pairs))
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
    print(f"waiting: {quiet.strip()}; both runs with --parallel {args.pairs}")
    return report(at_once, waited, seen)


def shown(value: Any, width: int, spec: str = "") -> str:
    """A figure, or n/a where the lab or the journal holds none."""
    return f"{'n/a' if value is None else format(value, spec):>{width}}"


def report(
    at_once: dict[str, dict[str, Any]],
    waited: dict[str, dict[str, Any]],
    seen: dict[str, dict[str, Any]],
) -> int:
    """The table and the totals; 1 when any pair lacks a figure (then no totals are claimed)."""
    print(
        f"{'pair':<12} {'at once: lab s':>14} {'in progress':>11} {'lost':>5}   "
        f"{'waiting: lab s':>14} {'when due':>8} {'waited s':>8} {'lowest seen':>11} {'lost':>5}"
    )
    keys = ("lost", "sessions_when_due", "lowest_seen", "lost_waiting")
    totals = dict.fromkeys(keys, 0)
    missing = []
    for pair in sorted(set(at_once) | set(waited)):
        first, then, wait = at_once.get(pair, {}), waited.get(pair, {}), seen.get(pair, {})
        row = {
            "lost": first.get("lost"),
            "sessions_when_due": wait.get("sessions_when_due"),
            "lowest_seen": wait.get("lowest_seen"),
            "lost_waiting": then.get("lost"),
        }
        absent = [k for k, v in row.items() if v is None]
        if absent or wait.get("waited_s") is None:
            missing.append(pair)
        for key in keys:
            totals[key] += row[key] or 0
        print(
            f"{pair:<12} {shown(first.get('lab_s'), 14, '.1f')} "
            f"{shown(first.get('in_progress'), 11)} {shown(row['lost'], 5)}   "
            f"{shown(then.get('lab_s'), 14, '.1f')} {shown(row['sessions_when_due'], 8)} "
            f"{shown(wait.get('waited_s'), 8, '.1f')} {shown(row['lowest_seen'], 11)} "
            f"{shown(row['lost_waiting'], 5)}"
        )
    if missing:
        print(
            f"no totals: a figure is missing for {', '.join(missing)} (n/a above: no first "
            "switchover to Redis in the lab's record, or no quiet wait in the journal)"
        )
        return 1
    print(
        f"in all: {totals['lost']} lost switching at once; waiting: "
        f"{totals['sessions_when_due']} in progress when due, lowest seen "
        f"{totals['lowest_seen']}, {totals['lost_waiting']} lost"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

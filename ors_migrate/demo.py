"""`ors-migrate demo`: a whole migration rehearsed on a throwaway lab, then a summary."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ors_migrate.errors import OrsMigrateError
from ors_migrate.events import EventKind

# The lab's call load swings between about 7 and 50 sessions in progress per primary over
# 30 s, the same swing in every demo (its seed). Before each pair's first switchover the demo
# watches for 10 s, then switches at the lowest number in progress seen so far, within 30 s.
DEMO_LOAD_SEED = 7
QUIET_WAIT_S = 30.0
QUIET_WATCH_S = 10.0


def _state_durations(journal: Any, run_id: str) -> list[tuple[str, str, float]]:
    rows = []
    seeds = {}
    for event in journal.events(run_id):
        if event.kind == EventKind.STATE_STARTED:
            seeds[(event.phase, event.state_id)] = event.payload.get("seed_step")
        if event.kind == EventKind.STATE_ENDED:
            seed = seeds.get((event.phase, event.state_id)) or "tool step"
            rows.append(
                (
                    f"{event.state_id}" + (" (rollback)" if event.phase == "rollback" else ""),
                    seed,
                    float(event.payload.get("seconds", 0.0)),
                )
            )
    return rows


def _quiet_wait_lines(journal: Any, run_id: str, load_seed: int | None = None) -> list[str]:
    """The first switchover of each pair (enable.1) loses the sessions in progress. On one
    load: what switching at once would have lost (in progress when the switchover was due),
    the lowest number in progress the wait saw, and what the switchover lost after waiting."""
    seeded = f", load seed {load_seed}" if load_seed is not None else ""
    lines = [f"First switchover (enable.1){seeded}: sessions lost switching at once vs. waiting:"]
    at_risk = lowest_total = lost_total = 0
    for event in journal.events(run_id):
        observed = event.payload.get("observed", {}) if event.kind == EventKind.ACTION_ENDED else {}
        wait = observed.get("quiet_wait")
        if not wait:
            continue
        lost = (observed.get("promotion") or {}).get("lost")
        lowest = wait.get("lowest_seen")
        at_risk += wait["sessions_when_due"] or 0
        lowest_total += lowest or 0
        lost_total += lost or 0
        lines.append(
            f"  {observed['primary']:<16} at once: {wait['sessions_when_due']!s:>4} in progress; "
            f"waited {wait['waited_s']:5.1f} s ({wait.get('policy', 'below')}): lowest seen "
            f"{lowest!s:>4}, lost {lost!s:>4}"
        )
    if len(lines) == 1:
        lines.append("  (no wait: set quiet_switchover in the site file for a quiet moment)")
    else:
        lines.append(
            f"  in all: {at_risk} in progress when due (lost switching at once), lowest seen "
            f"{lowest_total}, {lost_total} lost after waiting"
        )
        lines.append("  (bench/quiet_switchover.py runs both on two labs of the same load seed)")
    return lines


def summary_text(
    journal: Any, run_id: str, status: dict[str, Any], outcome: Any, wall_s: float
) -> str:
    lines = ["", "=" * 72, f"Demo migration: {outcome.status} in {wall_s:.1f} s (run {run_id})", ""]
    lines.append("States run:")
    for state, seed, seconds in _state_durations(journal, run_id):
        lines.append(f"  {seed:<12} {state:<34} {seconds:6.1f} s")
    lines.append("")
    lines.append("Switchovers (sessions in progress at the switchover -> restored / lost):")
    for promo in status["switchovers"]:
        lines.append(
            f"  {promo['pair']:<12} -> {promo['app']:<14} store {promo['store']:<9} "
            f"in progress {promo['in_progress']:>4}  restored {promo['restored']:>4}  "
            f"lost {promo['lost']:>4}"
        )
    lines += ["", *_quiet_wait_lines(journal, run_id, status.get("load_seed"))]
    lines.append("")
    lines.append("Applications at the end:")
    for a in status["apps"]:
        lines.append(
            f"  {a['app']:<16} {a['ha_pair']:<12} {a['role']:<8} {a['version'] or '-':<12} "
            f"type={a['type']}  created {a['created']}  restored {a['restored']}  "
            f"lost {a['lost']}"
        )
    lines.append("=" * 72)
    return "\n".join(lines)


def run_demo(
    *,
    keep: bool = False,
    pairs_per_cluster: int = 2,
    from_site: Path | None = None,
    monitor_window_s: float | None = None,
) -> int:
    from ors_migrate.journal import Journal
    from ors_migrate.lab.lab import LabShape, lab_down, lab_status, lab_up
    from ors_migrate.runner import Runner
    from ors_migrate.step import SwitchoverPolicy
    from ors_migrate.ui import Ui

    root = Path(tempfile.mkdtemp(prefix="ors-migrate-demo-"))
    print(f"demo: lab in {root}", file=sys.stderr)
    started = time.monotonic()
    try:
        if from_site is None:
            shape = LabShape(pairs_per_cluster=pairs_per_cluster, load_seed=DEMO_LOAD_SEED)
            layout = lab_up(root / "lab", shape)
        else:
            from ors_migrate.rehearsal import describe, lab_up_from_site

            rehearsal = lab_up_from_site(root / "lab", from_site, monitor_window_s=monitor_window_s)
            layout = rehearsal.layout
            print(describe(rehearsal), file=sys.stderr)
        print(f"demo: lab up in {time.monotonic() - started:.1f} s; migrating", file=sys.stderr)
        state_dir = root / "state"
        policy = SwitchoverPolicy(None, QUIET_WAIT_S, "lowest", watch_s=QUIET_WATCH_S)
        runner = Runner(state_dir, Ui(assume_yes=True), switchover_policy=policy)
        try:
            run_id, outcome = runner.start(
                str(layout.site), "migrate-to-redis", resume=False, run_id=None, auto_rollback=True
            )
        finally:
            runner.close()
        status = lab_status(layout.root)
        journal = Journal(state_dir)
        try:
            print(summary_text(journal, run_id, status, outcome, time.monotonic() - started))
        finally:
            journal.close()
        all_redis = all(a["type"] == "redis" for a in status["apps"])
        ok = outcome.status == "succeeded" and all_redis
        if not ok:
            print(f"demo: migration did not succeed: {outcome.message}", file=sys.stderr)
        return 0 if ok else 1
    except OrsMigrateError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        stopped = lab_down(root / "lab")
        print(f"demo: lab down ({len(stopped)} process groups stopped)", file=sys.stderr)
        if not keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)

"""How much of a migration's time is the tool's own, in one run.

(a) CPU and wall time per executed action in full lab migrations of 2, 9 and 30 HA pairs, and
    the share of the run's wall time that is the tool's own;
(b) `--help` and `plan` start-up time (new processes, median of N);
(c) `plan` of a site of 500 HA pairs, in-process step by step and through the command line;
(d) what `run --resume` does before it touches the world, on a journal of 10,000 events;
(e) the serialization check on a Redis Cluster holding 1,000,000 unrelated keys, and the
    servers' SLOWLOG at a 10 ms threshold afterwards.

Usage: `.venv/bin/python bench/run.py [--quick] [--pairs 2,9,30] [--only a,b,c,d,e]`.
Needs `redis-server` and `redis-cli` (a, e). The numbers are wall-clock measurements on
whatever else the machine is doing: read them next to the load average printed with them.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECTIONS = "abcde"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 HA pairs, N=3, 200,000 keys: a few minutes instead of ~20",
    )
    parser.add_argument("--pairs", default=None, help="lab sizes for (a), e.g. 2,9,30")
    parser.add_argument("--plan-pairs", type=int, default=500, help="site size for (c) and (d)")
    parser.add_argument("--events", type=int, default=10_000, help="journal size for (d)")
    parser.add_argument("--keys", type=int, default=None, help="unrelated keys for (e)")
    parser.add_argument("--repeat", type=int, default=None, help="N for medians")
    parser.add_argument("--only", default=SECTIONS, help="sections to run, e.g. b,c")
    args = parser.parse_args(argv)
    args.pairs = [int(p) for p in (args.pairs or ("2" if args.quick else "2,9,30")).split(",")]
    args.keys = args.keys or (200_000 if args.quick else 1_000_000)
    args.repeat = args.repeat or (3 if args.quick else 7)
    args.only = {s for s in args.only.replace(",", "") if s in SECTIONS}
    return args


def say(line: str = "") -> None:
    print(line, flush=True)


def machine() -> Iterator[str]:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    yield f"host {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}"
    yield f"  {redis.stdout.split(' sha=')[0] if redis.returncode == 0 else 'no redis-server'}"
    yield f"  load average at start: {load}"
    yield (
        "  this machine is shared with other engineers' test runs: wall times include their load"
    )


def section(title: str, lines: Callable[[], Iterator[str]]) -> None:
    say()
    say(title)
    began = time.monotonic()
    try:
        for line in lines():
            say(line)
    except Exception as exc:  # one failed section must not hide the others' numbers
        say(f"  FAILED: {type(exc).__name__}: {exc}")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    say(f"  [section took {time.monotonic() - began:.0f} s; load average now {load}]")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from lab_migration import migrate, warm_imports
    from planning import big_site_yaml, large_plan, startup
    from redis_scan import serialization_at_scale
    from resume import resume

    for line in machine():
        say(line)
    work = Path(tempfile.mkdtemp(prefix="ors-migrate-bench-"))
    try:
        if "a" in args.only:
            warm_imports()
            for pairs in args.pairs:
                section(f"(a) lab migration, {pairs} HA pairs", functools.partial(migrate, pairs))
        if "b" in args.only:
            section("(b) start-up time", lambda: startup(args.repeat))
        if "c" in args.only:
            section(
                f"(c) plan for {args.plan_pairs} HA pairs",
                lambda: large_plan(args.plan_pairs, work, max(1, args.repeat // 2)),
            )
        if "d" in args.only:
            site = work / "resume-site.yaml"
            site.write_text(big_site_yaml(args.plan_pairs))

            section(
                f"(d) resume with a journal of {args.events} events",
                lambda: resume(site, work, args.events, 3),
            )
        if "e" in args.only:
            section(
                f"(e) serialization check among {args.keys} unrelated keys",
                lambda: serialization_at_scale(args.keys),
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The parallelism of a run is journaled on every start and resume: a plain `--resume` keeps the
latest one given, and the report names it. `--parallel-per-cluster` alone is refused."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import cli
from tiny_site import STANDARD_RESTART_STATE, make_tiny_site

from ors_migrate.cli import _parallelism
from ors_migrate.errors import InputError
from ors_migrate.journal import Journal
from ors_migrate.report import build_report, estimate_line

RESTART = (
    """
name: restart
title: The standard restart
states:
"""
    + STANDARD_RESTART_STATE
)
# 90 s for the pair's restart, switchover and restart: a window of a minute pauses before it.
DURATIONS = "durations:\n  restart_s: 40\n  switchover_s: 10\n"


def _soon() -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)).isoformat()


def test_a_plain_resume_keeps_the_parallelism_of_the_latest_resume_and_the_report_names_it(
    tmp_path,
):
    site = make_tiny_site(tmp_path / "site")
    site.path.write_text(site.path.read_text() + DURATIONS)
    playbook = site.write_playbook("pb", RESTART)
    state = str(tmp_path / "state")
    run = ("run", str(site.path), "-p", str(playbook), "--yes", "--state-dir", state)

    started = cli(*run, "--parallel", "3", "--window-end", _soon())
    assert started.returncode == 130, started.stderr
    again = cli(*run, "--resume", "--parallel", "2", "--window-end", _soon())
    assert again.returncode == 130, again.stderr
    assert "(up to 2 HA pairs at a time)" in again.stderr
    finished = cli(*run, "--resume")
    assert finished.returncode == 0, finished.stderr
    assert "(up to 2 HA pairs at a time)" in finished.stderr  # not the start's 3

    journal = Journal(tmp_path / "state")
    try:
        record = journal.runs()[-1]
        journaled = [e.payload for e in journal.events(record.run_id) if e.kind == "parallelism"]
        report = build_report(journal, record)
    finally:
        journal.close()
    assert journaled == [
        {"pairs": 3, "per_cluster": None},
        {"pairs": 2, "per_cluster": None},
        {"pairs": 2, "per_cluster": None},
    ]
    assert report["estimate"]["parallel"] == {"pairs": 3, "per_cluster": None}
    assert report["estimate"]["parallel_latest"] == {"pairs": 2, "per_cluster": None}
    line = estimate_line(report) or ""
    assert "(up to 3 HA pairs at a time)" in line  # what the estimate at the start assumed
    assert line.endswith("resumed with up to 2 HA pairs at a time")


def test_a_cap_per_cluster_without_parallel_is_refused_with_one_message(tmp_path):
    site = make_tiny_site(tmp_path / "site")
    refused = cli("run", str(site.path), "--yes", "--state-dir", str(tmp_path / "state"),
                  "--resume", "--parallel-per-cluster", "2")  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: --parallel-per-cluster 2 limits the HA pairs of --parallel N in each ORS "
        "cluster and means nothing alone: give --parallel N with it (on --resume too; a plain "
        "--resume keeps the run's own parallelism) [parallel-per-cluster]"
    ]
    assert not (tmp_path / "state").exists()  # refused before anything was opened
    with pytest.raises(InputError, match="means nothing alone"):
        _parallelism(None, 1)
    assert _parallelism(4, 2) is not None and _parallelism(None, None) is None

"""A lab for rollback tests: simulated ORS already at the version Redis persistence needs, a
short Redis monitoring window and ready timeout, and a playbook of the migration's enable
steps (enable.1-5, after prepare.4 configured the Redis options) with its documented rollback.
The preparation steps that change nothing an enable step's failure depends on (the upgrade
and its restart) are done when the lab starts, so each run costs only its enable steps.

Faults are set from the run's journal, seen from outside as an operator would: `arm` waits for
an action's intent and then acts, while the run goes on."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from conftest import REPO
from durable_runs import Event, journal_events, lab_apps, run_status
from durable_runs import start_run as run_in_background

from ors_migrate.lab.faults import add_fault, clear_faults
from ors_migrate.lab.lab import LabShape, generic_topology, lab_up
from ors_migrate.lab.layout import UPGRADE_VERSION, LabLayout
from ors_migrate.lab.redis_cluster import RedisClusterLab

ENABLE_1 = "enable-redis-on-backups"
ENABLE_4 = "enable-redis-on-new-backups"
READY_TIMEOUT_S = 6
FIRST_KEPT = "configure-redis-options"


def upgraded_lab(root: Path, pairs: int) -> LabLayout:
    """One ORS cluster of `pairs` HA pairs on ORS 8.1.401.12, Redis monitored for 1 s."""
    shape = LabShape(clusters=1, pairs_per_cluster=pairs, monitor_window_s=1.0)
    topology = generic_topology(shape)
    topology = replace(topology, versions={app: UPGRADE_VERSION for app in topology.versions})
    lab = lab_up(root, shape, topology=topology)
    site = lab.site.read_text().replace(
        "ready_timeout_s: 30", f"ready_timeout_s: {READY_TIMEOUT_S}"
    )
    lab.site.write_text(site)
    return lab


def enable_playbook(lab: LabLayout) -> Path:
    """The bundled migration from prepare.4 on: its enable states exactly as shipped."""
    bundled = yaml.safe_load((REPO / "playbooks" / "migrate-to-redis.yaml").read_text())
    ids = [s["id"] for s in bundled["states"]]
    kept = ids.index(FIRST_KEPT)
    states = [bundled["states"][kept]]
    states += [s for s in bundled["states"][kept + 1 :] if str(s["seed_step"]).startswith("enable")]
    playbook = {**bundled, "name": "migrate-to-redis-enable", "states": states}
    path = lab.root / "enable.yaml"
    path.write_text(yaml.safe_dump(playbook, sort_keys=False))
    return path


def start_run(lab: LabLayout, state_dir: Path, playbook: Path) -> subprocess.Popen[str]:
    return run_in_background(lab.site, state_dir, "--playbook", str(playbook), "--yes")


def intent_of(state: str, index: int) -> Callable[[Event], bool]:
    """The intent of the `index`th action of `state` (keys are STATE/TARGET/INDEX)."""

    def match(event: Event) -> bool:
        parts = (event.action_key or "").split("/")
        return event.kind == "action_intent" and parts[0] == state and parts[-1] == str(index)

    return match


def wait_for(
    state_dir: Path, match: Callable[[Event], bool], proc: subprocess.Popen[str]
) -> dict[str, Any]:
    """The payload of the first journal event that `match`es, once the run has written it."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = [e for e in journal_events(state_dir) if match(e)]
        if found:
            return found[0].payload
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended first: {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.02)
    raise AssertionError("the journal never showed the awaited action")


def fault(lab: LabLayout, app: str, kind: str, times: int | None = 1) -> None:
    add_fault(lab, app, kind, times=times)


def lose_redis(lab: LabLayout) -> None:
    """Every Redis node killed, as an outage would."""
    redis = RedisClusterLab.from_dir(lab.root)
    for port, pid in redis.pids().items():
        if pid is not None:
            redis.kill_node(port)


def reset(lab: LabLayout) -> None:
    """Between cases: no fault left, Redis back."""
    clear_faults(lab)
    RedisClusterLab.from_dir(lab.root).restart_stopped()


def assert_rolled_back(lab: LabLayout, state_dir: Path) -> None:
    """The documented end state: every application on its persistence type before the run,
    running it, one primary and one backup per pair; the run rolled back."""
    apps = lab_apps(lab)
    assert {a["app"]: a["type"] for a in apps} == {a["app"]: "cassandra" for a in apps}
    for app in apps:
        assert "type=cassandra" in lab.options(app["app"]).read_text()
    roles: dict[str, list[str]] = {}
    for app in apps:
        roles.setdefault(app["ha_pair"], []).append(app["role"])
    assert all(sorted(r) == ["backup", "primary"] for r in roles.values()), roles
    assert run_status(state_dir) == "rolled_back"

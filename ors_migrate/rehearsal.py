"""Rehearsing a site's own migration (`lab up --from SITE`, `demo --from SITE`): the lab shaped
like the site (`lab.from_site`), both site files planned and compared, and what a rehearsal's
report says about the site it stands for."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ors_migrate.errors import OrsMigrateError
from ors_migrate.lab.from_site import Rehearsal, rehearsal_of, site_writer
from ors_migrate.lab.lab import LabError
from ors_migrate.lab.layout import LabLayout
from ors_migrate.site import load_site


@dataclass(frozen=True)
class PlanOutline:
    plan_hash: str
    states: list[tuple[str, int]]  # state id, number of actions


def plan_outline(site_path: Path, playbook: str) -> PlanOutline:
    """States and action counts of a site's plan (offline, as `ors-migrate plan` does)."""
    from ors_migrate.runner import load_playbook, make_plan
    from ors_migrate.site import load_site

    plan = make_plan(load_site(site_path), load_playbook(playbook))
    return PlanOutline(plan.plan_hash, [(s.id, len(s.actions)) for s in plan.states])


@dataclass(frozen=True)
class RehearsalLab:
    layout: LabLayout
    rehearsal: Rehearsal
    production: PlanOutline
    lab: PlanOutline


def lab_up_from_site(
    directory: Path,
    site_path: Path,
    *,
    monitor_window_s: float | None = None,
    playbook: str = "migrate-to-redis",
) -> RehearsalLab:
    """Start a lab shaped like the site and check that both site files plan the same states
    with the same number of actions; a lab that would rehearse another plan is brought down."""
    from ors_migrate.lab.lab import LabShape, lab_down, lab_up

    production = plan_outline(site_path, playbook)  # refuses a site that cannot be planned
    rehearsal = rehearsal_of(site_path, load_site(site_path), monitor_window_s)
    layout = lab_up(
        directory, LabShape(), topology=rehearsal.topology, site_writer=site_writer(rehearsal)
    )
    try:
        lab = plan_outline(layout.site, playbook)
    except BaseException:
        lab_down(layout.root)
        raise
    if lab.states != production.states:
        lab_down(layout.root)
        raise LabError(
            f"the lab's plan differs from the plan of {site_path}: "
            f"production {production.states}, lab {lab.states}"
        )
    return RehearsalLab(layout, rehearsal, production, lab)


def describe(lab: RehearsalLab) -> str:
    """What `lab up --from` prints: the shape, the plans compared, what is not rehearsed."""
    topology = lab.rehearsal.topology
    pairs = sum(len(names) for names in topology.clusters.values())
    actions = sum(count for _, count in lab.production.states)
    lines = [
        f"lab up in {lab.layout.root}; site file: {lab.layout.site}",
        f"rehearses {lab.rehearsal.site_path} (site '{lab.rehearsal.site.name}'): "
        f"ORS clusters {', '.join(topology.clusters)}; {pairs} HA pairs; Redis Cluster of "
        f"{topology.redis_masters} masters x {1 + topology.redis_replicas} nodes"
        f"{' with TLS' if topology.redis_tls else ''}"
        f"{f', ACL user {topology.redis_user}' if topology.redis_user else ''}",
        f"plan: the same {len(lab.production.states)} states and {actions} actions in both "
        f"files; plan hash {lab.production.plan_hash[:12]} (site), "
        f"{lab.lab.plan_hash[:12]} (lab)",
        "not rehearsed as production will run it:",
        *[f"  - {note}" for note in lab.rehearsal.differences],
    ]
    return "\n".join(lines)


def rehearsal_facts(lab_site: Path, playbook: str, lab_plan_hash: str) -> dict[str, Any] | None:
    """For the report of a run on a lab made by `lab up --from`: the production site it
    rehearses and both plan hashes. None when the run's site file is not such a lab site."""
    try:
        of = load_site(lab_site).site.rehearsal_of
    except OrsMigrateError:
        return None
    if of is None:
        return None
    facts: dict[str, Any] = {
        "production_site": of.site,
        "production_name": of.name,
        "lab_plan_hash": lab_plan_hash,
        "production_plan_hash": None,
        "note": None,
    }
    production = Path(of.site)
    if not production.is_file():
        facts["note"] = "the production site file is no longer there"
    elif hashlib.sha256(production.read_bytes()).hexdigest() != of.sha256:
        facts["note"] = "the production site file changed since the lab was made"
    else:
        try:
            facts["production_plan_hash"] = plan_outline(production, playbook).plan_hash
        except OrsMigrateError as exc:
            facts["note"] = f"the production site cannot be planned: {exc}"
    return facts

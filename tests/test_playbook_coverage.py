"""Every documented step id is implemented by a bundled playbook, as `plan --format json` shows it
on the example sites (the stable contract of SPEC section 5)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from conftest import REPO, cli

from ors_migrate.playbook import bundled_playbooks

EXAMPLES = REPO / "examples"


def steps(family: str, last: int) -> set[str]:
    return {f"{family}.{n}" for n in range(1, last + 1)}


# playbook -> (example site it is planned on, the documented steps it must cover)
COVERAGE: dict[str, tuple[str, set[str]]] = {
    "migrate-to-redis": ("site.yaml", steps("prepare", 6) | steps("enable", 5)),
    "rollback": ("site.yaml", steps("rollback", 3)),
    "remove-cassandra": ("site-windows.yaml", {"post.1"}),
    "fips-linux": ("site-linux-fips.yaml", steps("fips-linux", 2)),
    "fips-linux-off": ("site-linux-fips.yaml", {"fips-linux.2"}),
    "fips-windows": ("site-windows.yaml", steps("fips-windows", 6)),
}
SEED_STEP = re.compile(
    r"^(prepare\.[1-6]|enable\.[1-5]|rollback\.[1-3]|post\.1|fips-windows\.[1-6]|fips-linux\.[12])$"
)


def plan_of(playbook: str) -> dict[str, Any]:
    site = EXAMPLES / COVERAGE[playbook][0]
    result = cli("plan", str(site), "--playbook", playbook, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_bundled_playbook_has_an_expected_coverage() -> None:
    assert sorted(COVERAGE) == bundled_playbooks()


@pytest.mark.parametrize("playbook", sorted(COVERAGE))
def test_plan_covers_every_documented_step_of_the_playbook(playbook: str) -> None:
    plan = plan_of(playbook)
    assert plan["playbook"] == playbook and re.fullmatch(r"[0-9a-f]{64}", plan["plan_hash"])
    covered = {s["seed_step"] for s in plan["states"]} - {None}
    assert COVERAGE[playbook][1] <= covered


@pytest.mark.parametrize("playbook", sorted(COVERAGE))
def test_every_state_names_a_documented_step_or_null(playbook: str) -> None:
    for state in plan_of(playbook)["states"]:
        assert "seed_step" in state and state["id"] and state["title"]
        assert state["seed_step"] is None or SEED_STEP.match(state["seed_step"]), state["id"]
        for action in state["actions"]:
            if state["scope"] == "app":
                assert action["app"] and action["host"], action["key"]


def test_rollback_keeps_the_state_ids_the_automatic_rollback_relies_on() -> None:
    ids = [s["id"] for s in plan_of("rollback")["states"]]
    assert ids == ["disable-redis", "standard-restart", "verify-rolled-back", "investigate"]


@pytest.mark.parametrize("site", ["site.yaml", "site-windows.yaml", "site-linux-fips.yaml"])
def test_example_sites_are_valid(site: str) -> None:
    result = cli("validate", str(EXAMPLES / site), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["valid"] is True

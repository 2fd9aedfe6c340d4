"""A new action family is one module plus its registration: here a third-party module, found
through the `ors_migrate.actions` entry point of an installed distribution, planned and run
like a built-in, and seen by the real command line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import cli
from tiny_site import make_tiny_site

from ors_migrate.actions.registry import ENTRY_POINT_GROUP, build_action_table
from ors_migrate.engine import Engine
from ors_migrate.journal import Journal
from ors_migrate.runner import build_context, load_playbook, make_plan
from ors_migrate.secrets import Secrets
from ors_migrate.site import load_site
from ors_migrate.ui import Ui

PLUGIN = '''
"""A third-party action family: stamps a file on each application's host."""

from typing import Any

from ors_migrate.step import Action, PlannedAction, PlanningView, Preview, RunContext


class Stamp(Action):
    name = "stamp.write"
    scopes = frozenset({"app"})
    changes_world = True

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        path = step.args["dir"] + "/" + str(step.target.app)
        return Preview(f"stamp {step.target.app}", [f"[{step.target.host}] write {path}"])

    def _path(self, step: PlannedAction) -> str:
        return step.args["dir"] + "/" + str(step.target.app)

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        return ctx.pool.for_host(str(step.target.host)).read_file(self._path(step)) is not None

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        transport = ctx.pool.for_host(str(step.target.host))
        transport.write_file_atomic(self._path(step), ctx.run_id.encode(), backup_path=None)
        return {"stamped": self._path(step)}


ACTIONS = [Stamp]
'''

PLAYBOOK = """
name: stamps
title: Stamp every application
states:
  - id: stamp
    title: Stamp them
    seed_step: null
    scope: app
    actions:
      - do: stamp.write
        with: {{dir: "{dir}"}}
"""


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`orsm_stamp` installed as a distribution would be: the module and a dist-info whose
    entry_points.txt registers it in the `ors_migrate.actions` group."""
    root = tmp_path / "site-packages"
    (root / "orsm_stamp-1.0.dist-info").mkdir(parents=True)
    (root / "orsm_stamp.py").write_text(textwrap.dedent(PLUGIN))
    (root / "orsm_stamp-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: orsm-stamp\nVersion: 1.0\n"
    )
    (root / "orsm_stamp-1.0.dist-info" / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nstamp = orsm_stamp\n"
    )
    monkeypatch.syspath_prepend(str(root))
    return root


def test_without_the_plugin_its_actions_are_unknown() -> None:
    assert "stamp.write" not in build_action_table()


def test_a_plugin_family_from_an_entry_point_is_planned_and_run_like_a_built_in(
    installed_plugin: Path, tmp_path: Path
) -> None:
    actions = build_action_table()
    assert "stamp.write" in actions and "service.switchover" in actions
    site = make_tiny_site(tmp_path / "site")
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    playbook = load_playbook(
        str(site.write_playbook("stamps", PLAYBOOK.format(dir=stamps))), actions
    )
    loaded = load_site(site.path)
    plan = make_plan(loaded, playbook)
    assert [a.preview.description for a in plan.states[0].actions] == [
        f"stamp {app.name}" for _, _, app in loaded.site.apps()
    ]

    journal = Journal(tmp_path / "state")
    run_id = journal.create_run(
        site_name=loaded.site.name,
        site_path=str(site.path),
        site_digest=loaded.digest,
        playbook=playbook.spec.name,
        playbook_digest=playbook.digest,
        plan_hash=plan.plan_hash,
        plan_json=json.dumps(plan.as_dict()),
    )
    ui = Ui(assume_yes=True, quiet=True)
    ctx = build_context(loaded, run_id, journal, ui, secrets=Secrets(interactive=False))
    try:
        outcome = Engine(ctx, plan, actions).run()
    finally:
        ctx.close()
        journal.close()

    assert outcome.status == "succeeded", outcome.message
    assert sorted(p.name for p in stamps.iterdir()) == sorted(
        a.name for _, _, a in loaded.site.apps()
    )
    assert {p.read_text() for p in stamps.iterdir()} == {run_id}


def test_the_command_line_plans_with_an_installed_plugin(
    installed_plugin: Path, tmp_path: Path
) -> None:
    site = make_tiny_site(tmp_path / "site")
    playbook = site.write_playbook("stamps", PLAYBOOK.format(dir=tmp_path / "stamps"))

    planned = cli(
        "plan", str(site.path), "--playbook", str(playbook), "--format", "json",
        env={"PYTHONPATH": str(installed_plugin)},
    )  # fmt: skip

    assert planned.returncode == 0, planned.stderr
    actions = json.loads(planned.stdout)["states"][0]["actions"]
    assert {a["action"] for a in actions} == {"stamp.write"}

    without = cli("plan", str(site.path), "--playbook", str(playbook))
    assert without.returncode == 2 and "unknown action 'stamp.write'" in without.stderr

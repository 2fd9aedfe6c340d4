"""A resume takes back the plan its run stored when nothing the plan was made from changed, and
plans again (to compare hashes, with the usual refusals) when the site file, the playbook, the
code or a planning option did. No lab: a tiny site of files and shell commands."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import cli
from durable_runs import PARTIAL_ENABLE
from tiny_site import TinySite, gated_playbook, make_tiny_site

import ors_migrate
from ors_migrate import stored_plan as stored
from ors_migrate.journal import Journal, RunRecord
from ors_migrate.plan import plan_hash
from ors_migrate.playbook import LoadedPlaybook
from ors_migrate.runner import load_playbook, make_plan, plan_for_resume
from ors_migrate.site import load_site
from ors_migrate.step import Plan
from ors_migrate.stored_plan import StoredPlanError, StoredState, encode_plan, plan_inputs


@dataclass
class PausedRun:
    """A run of the gated playbook, started by `run` and paused at its gate."""

    site: TinySite
    playbook: Path
    state_dir: Path

    def run(self) -> tuple[RunRecord, str]:
        """The run and the plan it stored, as JSON."""
        journal = Journal(self.state_dir, create=False)
        try:
            run = journal.runs()[0]
            return run, run.plan_json
        finally:
            journal.close()

    def plan_for_resume(self, playbook: Path | None = None) -> Plan:
        """The plan `run --resume` would act on, with the files as they are now."""
        journal = Journal(self.state_dir)
        try:
            run = journal.runs()[0]
            loaded_playbook = load_playbook(str(playbook or self.playbook))
            plan = plan_for_resume(journal, run, load_site(self.site.path), loaded_playbook)
            assert plan.plan_hash == run.plan_hash
            _ = [s.actions for s in plan.states]  # decoded while the journal is open
            return plan
        finally:
            journal.close()


@pytest.fixture(scope="module")
def paused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PausedRun]:
    root = tmp_path_factory.mktemp("stored-plan")
    site = make_tiny_site(root / "site")
    playbook = gated_playbook(site)
    state = root / "state"
    done = cli(
        "run", str(site.path), "--playbook", str(playbook), "--state-dir", str(state),
        *PARTIAL_ENABLE,
    )  # fmt: skip
    assert done.returncode != 0 and "gate" in done.stderr, done.stderr
    yield PausedRun(site, playbook, state)


def is_stored(plan: Plan) -> bool:
    return all(isinstance(s, StoredState) for s in plan.states)


@pytest.fixture
def restore(paused: PausedRun) -> Iterator[None]:
    """Each test edits the files; the next one finds them as the run started with them."""
    files = [paused.site.path, paused.playbook]
    texts = [f.read_bytes() for f in files]
    yield
    for file, text in zip(files, texts, strict=True):
        file.write_bytes(text)


def test_unchanged_inputs_give_back_the_stored_plan_equal_to_planning_again(
    paused: PausedRun, restore: None
) -> None:
    plan = paused.plan_for_resume()

    assert is_stored(plan)
    # Planning again now reads the options the run already edited: only the old values differ.
    again = make_plan(load_site(paused.site.path), load_playbook(str(paused.playbook)))
    assert [s.as_dict(with_old=False) for s in plan.states] == [
        s.as_dict(with_old=False) for s in again.states
    ]
    actions = [a for s in plan.states for a in s.actions]
    assert [(a.role, a.args) for a in actions] == [
        (a.role, a.args) for s in again.states for a in s.actions
    ]
    assert any(a.role == "backup" for a in actions)
    run, plan_json = paused.run()
    assert plan_hash(plan) == run.plan_hash
    assert json.loads(plan_json) == plan.as_dict()


def test_a_changed_site_file_is_planned_again_even_when_only_a_comment_changed(
    paused: PausedRun, restore: None
) -> None:
    with paused.site.path.open("a") as site:
        site.write("# reviewed\n")

    assert not is_stored(paused.plan_for_resume())


def test_a_changed_playbook_is_planned_again(paused: PausedRun, restore: None) -> None:
    with paused.playbook.open("a") as playbook:
        playbook.write("# reviewed\n")

    assert not is_stored(paused.plan_for_resume())


def test_another_playbook_file_given_on_resume_is_planned_again(
    paused: PausedRun, restore: None
) -> None:
    other = paused.playbook.with_name("gated-copy.yaml")
    other.write_text(paused.playbook.read_text() + "# a copy\n")

    assert not is_stored(paused.plan_for_resume(other))
    assert is_stored(paused.plan_for_resume())


def test_another_version_of_the_tool_plans_again(
    paused: PausedRun, restore: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ors_migrate, "__version__", ors_migrate.__version__ + ".1")

    assert not is_stored(paused.plan_for_resume())


def test_changed_source_of_the_tool_or_of_a_plugin_plans_again(
    paused: PausedRun, restore: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stored, "_source_digest", lambda root: "edited")

    assert not is_stored(paused.plan_for_resume())


def test_the_inputs_cover_the_flags_the_playbook_the_site_and_the_actions(
    paused: PausedRun, tmp_path: Path
) -> None:
    loaded = load_site(paused.site.path)
    playbook = load_playbook(str(paused.playbook))
    base = plan_inputs(loaded, playbook, read_current=True, flags=frozenset())
    plugin = type("Plugin", (playbook.actions["service.switchover"],), {"name": "x.plugin"})
    with_plugin = LoadedPlaybook(
        playbook.spec,
        playbook.path,
        playbook.digest,
        playbook.document,
        {**playbook.actions, "x.plugin": plugin},
    )
    copy = tmp_path / "site.yaml"
    copy.write_bytes(paused.site.path.read_bytes() + b"\n")

    assert base is not None
    assert base == plan_inputs(loaded, playbook, read_current=True, flags=frozenset())
    others = [
        plan_inputs(loaded, playbook, read_current=True, flags=frozenset({"to_start"})),
        plan_inputs(loaded, playbook, read_current=False, flags=frozenset()),
        plan_inputs(load_site(copy), playbook, read_current=True, flags=frozenset()),
        plan_inputs(loaded, with_plugin, read_current=True, flags=frozenset()),
    ]
    assert len({base, *others}) == 5


def test_a_resume_with_the_stored_plan_finishes_the_run(
    paused: PausedRun, restore: None, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    shutil.copytree(paused.state_dir, state)
    resumed = cli(
        "run", str(paused.site.path), "--resume", "--yes", "--state-dir", str(state),
        *PARTIAL_ENABLE,
    )  # fmt: skip

    assert resumed.returncode == 0, resumed.stderr
    journal = Journal(state)
    try:
        run = journal.runs()[0]
        ended = {e.action_key for e in journal.events(run.run_id) if e.kind == "action_ended"}
        planned = {a["key"] for s in json.loads(run.plan_json)["states"] for a in s["actions"]}
    finally:
        journal.close()
    assert run.status == "succeeded"
    assert ended == planned


def test_the_stored_text_is_the_plan_json_and_a_state_is_decoded_only_when_used(
    paused: PausedRun,
) -> None:
    playbook = load_playbook(str(paused.playbook))
    plan = make_plan(load_site(paused.site.path), playbook)
    text, layout = encode_plan(plan)
    assert text == json.dumps(plan.as_dict())

    # A journal altered in the second state's actions: the first state still reads, the second
    # is refused when the engine reaches it, with a message instead of a wrong action.
    altered = text.replace('"action": "service.switchover"', '"action": "service.switchov3r"')
    taken = stored.stored_plan(altered, layout, playbook)

    assert taken is not None and [s.id for s in taken.states] == [s.id for s in plan.states]
    assert taken.states[0].actions[0].key == plan.states[0].actions[0].key
    with pytest.raises(StoredPlanError, match="service.switchov3r"):
        _ = taken.states[1].actions
    assert stored.stored_plan(text[:-1], layout, playbook) is None
    assert stored.stored_plan(text, json.dumps([[0, 1]]), playbook) is None

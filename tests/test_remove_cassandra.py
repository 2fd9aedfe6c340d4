"""Cassandra removal after the migration (seed post.1): refused while any application may still
persist to Cassandra; in the lab it removes the Cassandra options, restarts by the standard
procedure, snapshots, and drops the stand-in's keyspace only once its name is confirmed."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, cli
from ruamel.yaml import YAML

from ors_migrate.actions.cassandra_checks import keyspace_exists
from ors_migrate.actions.cassandra_removal import CONFIRM_ENV, confirm_drop, removed_options
from ors_migrate.actions.options_file import read_options
from ors_migrate.errors import GateStopped
from ors_migrate.lab.layout import LabLayout
from ors_migrate.site import load_site

EXAMPLE = REPO / "examples" / "site.yaml"
WINDOWS_EXAMPLE = REPO / "examples" / "site-windows.yaml"
FAKE_NODETOOL = """#!/bin/sh
# Test double of nodetool: `snapshot -t TAG KEYSPACE` records a snapshot, `listsnapshots` lists.
dir="$(dirname "$0")/snapshots"
mkdir -p "$dir"
case "$1" in
    snapshot)
        echo "$4" > "$dir/$3"
        echo "Requested creating snapshot(s) for [$4] with snapshot name [$3]" ;;
    listsnapshots)
        echo "Snapshot Details:"
        for f in "$dir"/*; do
            if [ -e "$f" ]; then echo "$(basename "$f") $(cat "$f") sessions 0 bytes 13 bytes"; fi
        done ;;
    *) exit 1 ;;
esac
"""


class FakeUi:
    def __init__(self, *, interactive: bool, assume_yes: bool = True) -> None:
        self.interactive = interactive
        self.assume_yes = assume_yes

        class Console:
            def print(self, *args: Any, **kwargs: Any) -> None:
                return None

        self.console = Console()


def edited_site(source: Path, target: Path, **removal: Any) -> Path:
    yaml = YAML()
    site = yaml.load(source.read_text())
    site["cassandra"]["removal"] = removal
    with target.open("w") as fh:
        yaml.dump(site, fh)
    return target


def plan_states(site: Path) -> list[dict[str, Any]]:
    result = cli("plan", str(site), "--playbook", "remove-cassandra", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["states"]


# ----------------------------------------------------------------------------- the confirmation


def test_yes_alone_never_confirms_dropping_the_keyspace() -> None:
    with pytest.raises(GateStopped, match=f"{CONFIRM_ENV}=orchestration"):
        confirm_drop(FakeUi(interactive=False), "orchestration", "ops", environ={})


def test_the_keyspace_named_in_the_environment_confirms_only_that_keyspace() -> None:
    ui = FakeUi(interactive=False)
    env = {CONFIRM_ENV: "orchestration"}
    assert confirm_drop(ui, "orchestration", "ops", environ=env) == "environment"
    with pytest.raises(GateStopped, match="names keyspace 'orchestration'.*'ors_prod'"):
        confirm_drop(ui, "ors_prod", "ops", environ=env)


def test_at_a_terminal_the_operator_types_the_name_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import questionary

    answers = iter(["orchestration", "orchestrat"])

    class Prompt:
        def ask(self) -> str:
            return next(answers)

    monkeypatch.setattr(questionary, "text", lambda message: Prompt())
    ui = FakeUi(interactive=True)
    assert confirm_drop(ui, "orchestration", "ops", environ={}) == "typed"
    with pytest.raises(GateStopped, match="not typed back"):
        confirm_drop(ui, "orchestration", "ops", environ={})


# ----------------------------------------------------------------------------- the plan


def test_plan_removes_options_everywhere_and_keeps_the_keyspace_by_default() -> None:
    """Without cassandra.removal.options, and with options the plan cannot read, the plan says
    the options are found at run time: no name is guessed."""
    states = plan_states(EXAMPLE)
    ids = [s["id"] for s in states]
    assert "drop-keyspace" not in ids and "snapshot-keyspace" not in ids
    removal = next(s for s in states if s["id"] == "remove-cassandra-options")
    assert removal["seed_step"] == "post.1" and removal["gate"]
    apps = {a["app"] for a in removal["actions"]}
    assert apps == {a.name for _, _, a in load_site(EXAMPLE).site.apps()}
    changes = removal["actions"][0]["option_changes"]
    assert [(c["section"], c["option"], c["new"], c["source"]) for c in changes] == [
        ("persistence", "cassandra*", None, "found at run time"),
    ]
    assert "cassandra-nodes" not in json.dumps(states)


def test_removed_options_are_the_site_files_else_those_found_never_a_guess() -> None:
    site = load_site(EXAMPLE).site
    current = {
        ("persistence", "cassandra-nodes"): "10.0.0.1:9160",
        ("persistence", "Cassandra-Keyspace"): "orchestration",
        ("persistence", "redis-nodes"): "r1:6379",
        ("persistence", "type"): "cassandra",
        ("orchestration", "cassandra-legacy"): "x",
    }
    found = removed_options(site, current)
    assert found is not None
    assert [(c.section, c.option, c.source) for c in found] == [
        ("persistence", "Cassandra-Keyspace", "found at run time"),
        ("persistence", "cassandra-nodes", "found at run time"),
    ]
    assert removed_options(site, None) is None
    windows = load_site(WINDOWS_EXAMPLE).site  # it lists cassandra.removal.options
    named = removed_options(windows, current)
    assert named is not None
    assert [(c.option, c.source) for c in named] == [
        ("cassandra-nodes", "site file"),
        ("cassandra-keyspace", "site file"),
    ]


def test_plan_snapshots_then_drops_behind_a_gate_when_the_site_asks() -> None:
    states = plan_states(WINDOWS_EXAMPLE)
    ids = [s["id"] for s in states]
    assert (
        ids.index("standard-restart") < ids.index("snapshot-keyspace") < ids.index("drop-keyspace")
    )
    snapshot = states[ids.index("snapshot-keyspace")]["actions"][0]
    assert snapshot["commands"] == [
        "[cass-apac-01] nodetool snapshot -t ors-migrate-RUN_ID orchestration"
    ]
    assert states[ids.index("drop-keyspace")]["gate"]


def test_removal_options_may_not_include_what_redis_needs(tmp_path: Path) -> None:
    site = edited_site(EXAMPLE, tmp_path / "site.yaml", options=["cassandra-nodes", "type"])
    result = cli("plan", str(site), "--playbook", "remove-cassandra")
    assert result.returncode == 2
    assert "without [persistence] type=redis, ORS goes back to Cassandra" in result.stderr


def test_a_snapshot_needs_a_host_to_take_it_on(tmp_path: Path) -> None:
    site = edited_site(EXAMPLE, tmp_path / "site.yaml", drop_keyspace=True)
    text = site.read_text().replace("  nodetool_host: ors-emea-01\n", "")
    site.write_text(text)
    result = cli("plan", str(site), "--playbook", "remove-cassandra")
    assert result.returncode == 2
    assert "cassandra.removal.snapshot_hosts" in result.stderr


# ----------------------------------------------------------------------------- in the lab


def cassandra_options(lab: LabLayout) -> dict[str, dict[str, str]]:
    out = {}
    for app in lab.load_config()["apps"]:
        values = read_options(lab.options(app).read_text(), str(lab.options(app)))
        out[app] = {o: v for (s, o), v in values.items() if s == "persistence"}
    return out


def removal_site(lab: LabLayout, tmp_path: Path) -> Path:
    nodetool = tmp_path / "nodetool"
    nodetool.write_text(FAKE_NODETOOL)
    nodetool.chmod(nodetool.stat().st_mode | stat.S_IXUSR)
    return edited_site(
        lab.site,
        lab.root / "site-removal.yaml",
        drop_keyspace=True,
        snapshot_hosts=["lab"],
        snapshot_command=f"{nodetool} snapshot -t {{tag}} {{keyspace}}",
        list_snapshots_command=f"{nodetool} listsnapshots",
    )


def test_remove_cassandra_in_the_lab_after_the_migration(make_lab, tmp_path: Path) -> None:
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    cassandra = load_site(lab.site).site.cassandra
    assert cassandra is not None

    refused = cli(
        "run",
        str(lab.site),
        "-p",
        "remove-cassandra",
        "--yes",
        "--state-dir",
        str(tmp_path / "too-early"),
    )
    assert refused.returncode == 1
    assert "Cassandra is still needed" in refused.stderr
    assert "no migrate-to-redis run of this site is in the journal" in refused.stderr
    assert all("cassandra-nodes" in o for o in cassandra_options(lab).values())

    state_dir = str(tmp_path / "state")
    migrated = cli("run", str(lab.site), "--yes", "--state-dir", state_dir)
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    site = removal_site(lab, tmp_path)
    paused = cli("run", str(site), "-p", "remove-cassandra", "--yes", "--state-dir", state_dir)
    assert paused.returncode == 130, paused.stderr[-3000:]
    assert f"{CONFIRM_ENV}=orchestration" in paused.stderr
    options = cassandra_options(lab)
    assert all(o["type"] == "redis" for o in options.values())
    assert not any("cassandra-nodes" in o or "cassandra-keyspace" in o for o in options.values())
    for app in options:
        backup = Path(str(lab.options(app)) + ".ors-migrate.bak").read_text()
        assert "cassandra-keyspace=orchestration" in backup
    assert keyspace_exists(cassandra, None, "orchestration")
    snapshots = list((tmp_path / "snapshots").iterdir())
    assert [p.read_text().strip() for p in snapshots] == ["orchestration"]

    resumed = cli(
        "run",
        str(site),
        "-p",
        "remove-cassandra",
        "--resume",
        "--yes",
        "--state-dir",
        state_dir,
        env={CONFIRM_ENV: "orchestration"},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not keyspace_exists(cassandra, None, "orchestration")
    assert len(list((tmp_path / "snapshots").iterdir())) == 1
    status = json.loads(cli("lab", "status", "--dir", str(lab.root), "--json").stdout)
    assert {a["type"] for a in status["apps"]} == {"redis"}
    assert sorted(a["role"] for a in status["apps"]) == ["backup", "primary"]
    runs = json.loads(cli("runs", "--json", "--state-dir", state_dir).stdout)
    assert [(r["playbook"], r["status"]) for r in runs] == [
        ("migrate-to-redis", "succeeded"),
        ("remove-cassandra", "succeeded"),
    ]


def test_the_plan_of_options_found_at_run_time_stays_the_same_as_they_are_removed(
    tmp_path: Path,
) -> None:
    """What is found is shown as the row's current value, which the plan hash leaves out, so
    that a run paused after removing the options can be resumed."""
    from tiny_site import APPS, make_tiny_site

    from ors_migrate.runner import load_playbook, make_plan

    site = make_tiny_site(tmp_path)
    with site.path.open("a") as fh:
        fh.write("cassandra:\n  contact_points: [127.0.0.1:9042]\n  keyspace: orchestration\n")
    for app in APPS:
        with site.options(app).open("a") as fh:
            fh.write("cassandra-nodes=10.0.0.1:9160\ncassandra-keyspace=orchestration\n")

    def removal_rows() -> tuple[str, list[dict[str, Any]]]:
        plan = make_plan(load_site(site.path), load_playbook("remove-cassandra"))
        state = plan.as_dict()["states"]
        rows = next(s for s in state if s["id"] == "remove-cassandra-options")["actions"]
        return plan.plan_hash, [r for a in rows for r in a["option_changes"]]

    before_hash, before = removal_rows()
    assert {(r["option"], r["source"], r["old"]) for r in before} == {
        ("cassandra*", "found at run time", "cassandra-keyspace, cassandra-nodes"),
    }
    for app in APPS:
        site.options(app).write_text(
            "\n".join(
                line
                for line in site.options(app).read_text().splitlines()
                if not line.startswith("cassandra-")
            )
        )
    after_hash, after = removal_rows()
    assert after_hash == before_hash
    assert {(r["option"], r["old"]) for r in after} == {("cassandra*", None)}


SECRET = "S3cr3t-auth-value"


def test_values_of_options_found_at_run_time_never_reach_plan_intent_or_journal(
    tmp_path: Path,
) -> None:
    """Any `cassandra*` option may hold a secret: the plan shows only the names found, and what
    the removal journals (its intent and result) holds no value."""
    from tiny_site import APPS, make_tiny_site

    from ors_migrate.actions.cassandra_removal import RemoveOptions
    from ors_migrate.options import FOUND

    site = make_tiny_site(tmp_path)
    with site.path.open("a") as fh:
        fh.write("cassandra:\n  contact_points: [127.0.0.1:9042]\n  keyspace: orchestration\n")
    for app in APPS:
        with site.options(app).open("a") as fh:
            fh.write(f"cassandra-auth-secret={SECRET}\ncassandra-nodes=10.0.0.1:9160\n")
    for output in ("json", "text"):
        shown = cli("plan", str(site.path), "-p", "remove-cassandra", "--format", output)
        assert shown.returncode == 0, shown.stderr
        assert "cassandra-auth-secret" in shown.stdout
        assert SECRET not in shown.stdout + shown.stderr
        assert "10.0.0.1:9160" not in shown.stdout

    path = site.options(APPS[0])
    options = read_options(path.read_text(), str(path))
    written: list[Any] = []

    class Store:
        def read(self) -> dict[tuple[str, str], str]:
            return dict(options)

        def write(self, changes: list[Any]) -> None:
            written.extend(changes)

    loaded = load_site(site.path).site

    class Ctx:
        site = loaded

        def capture_originals(self, app: str) -> None:
            return None

        def option_store(self, app: str) -> Store:
            return Store()

    class Step:
        class target:  # noqa: N801 - the attribute the action reads
            app = APPS[0]

    action = RemoveOptions()
    intent = action.prepare(Ctx(), Step())  # type: ignore[arg-type]
    result = action.apply(Ctx(), Step(), intent)  # type: ignore[arg-type]
    assert [c.option for c, _ in written] == ["cassandra-auth-secret", "cassandra-nodes"]
    assert all(source == FOUND for _, _, source in intent["options"])
    journaled = json.dumps([intent, result])
    assert SECRET not in journaled and "10.0.0.1:9160" not in journaled


def test_named_options_that_look_secret_are_masked_in_any_case() -> None:
    from ors_migrate.actions.cassandra_removal import shown

    assert shown("Cassandra-PASSWORD", "x") == "***"
    assert shown("cassandra-api-Token", "x") == "***"
    assert shown("cassandra-keyspace", "orchestration") == "orchestration"

"""Safe by default on a real lab (one lab, one migration, then every refusal against it):
options files 0600; `run` on the migrated lab exits 3 with no application started; `rollback`
without a terminal exits 2 and starts nothing; `rollback --yes` after the site file's `stop`
command changed is refused naming it; the confirmed rollback then restores Cassandra. The lab's
`starts` counter per application is the measure of "nothing restarted"."""

from __future__ import annotations

import json
import stat

import pytest
from conftest import cli

pytestmark = pytest.mark.slow


def lab_state(lab_root) -> dict[str, dict]:
    shown = cli("lab", "status", "--dir", str(lab_root), "--json")
    assert shown.returncode == 0, shown.stderr
    return {a["app"]: a for a in json.loads(shown.stdout)["apps"]}


def starts(lab_root) -> dict[str, int]:
    return {app: a["starts"] for app, a in lab_state(lab_root).items()}


def test_a_migrated_lab_is_not_run_again_and_rollback_asks_and_checks_the_site_file(
    make_lab, tmp_path
):
    lab = make_lab(clusters=1, pairs_per_cluster=2)
    state = str(tmp_path / "state")
    apps = lab_state(lab.root)
    assert all(n == 1 for n in starts(lab.root).values()), "each application started once"
    for app in apps:
        assert stat.S_IMODE(lab.options(app).stat().st_mode) == 0o600

    migrated = cli("run", str(lab.site), "--yes", "--state-dir", state)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    assert {a["type"] for a in lab_state(lab.root).values()} == {"redis"}
    after_run = starts(lab.root)
    assert all(n > 1 for n in after_run.values())
    for app in apps:
        options = lab.options(app)
        backups = list(options.parent.glob(options.name + ".ors-migrate.bak"))
        pristine = list(options.parent.glob(options.name + ".*.orig"))
        assert backups and pristine
        assert {stat.S_IMODE(p.stat().st_mode) for p in backups + pristine} == {0o600}
    run_id = json.loads(cli("runs", "--json", "--state-dir", state).stdout)[0]["run_id"]

    again = cli("run", str(lab.site), "--yes", "--state-dir", state)
    assert again.returncode == 3, again.stderr
    assert "already runs with [persistence] type=redis" in again.stderr
    assert starts(lab.root) == after_run
    assert [
        r["run_id"] for r in json.loads(cli("runs", "--json", "--state-dir", state).stdout)
    ] == [run_id]

    asked = cli("rollback", "--state-dir", state)
    assert asked.returncode == 2, asked.stderr
    assert "no terminal; nothing was done" in asked.stderr
    assert "switchovers: 2" in asked.stderr and "sessions in progress at risk" in asked.stderr
    assert starts(lab.root) == after_run
    assert {a["type"] for a in lab_state(lab.root).values()} == {"redis"}

    text = lab.site.read_text()
    lab.site.write_text(text.replace('  stop: "', '  stop: "logger ors-stop; ', 1))
    refused = cli("rollback", run_id, "--yes", "--state-dir", state)
    assert refused.returncode == 2, refused.stderr
    assert "the site file" in refused.stderr and "changed since it started" in refused.stderr
    assert "logger ors-stop;" in refused.stderr
    assert starts(lab.root) == after_run

    lab.site.write_text(text)
    back = cli("rollback", run_id, "--yes", "--state-dir", state)
    assert back.returncode == 0, back.stderr[-3000:]
    assert {a["type"] for a in lab_state(lab.root).values()} == {"cassandra"}
    assert (
        json.loads(cli("status", run_id, "--json", "--state-dir", state).stdout)["status"]
        == "rolled_back"
    )

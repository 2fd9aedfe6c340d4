"""The same playbook runs unchanged on every option backend: `command` (the site's own
Configuration Server tooling, values on stdin) end to end in the lab, and `manual` (the operator
sets the options in Genesys Administrator) in a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pexpect
from conftest import REPO, cli

from ors_migrate.actions.options_file import read_options
from ors_migrate.lab import cfgtool


def _switch_backend(site: Path, backend: str) -> None:
    text = site.read_text()
    text = re.sub(r"options_backend:\n  kind: ini-file\n  path: .*\n", backend, text)
    site.write_text(text)


def test_command_backend_runs_the_whole_migration_with_values_on_stdin_only(make_lab, tmp_path):
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    tool = cfgtool.command(lab.root)
    _switch_backend(
        lab.site,
        (
            "options_backend:\n  kind: command\n"
            f"  get_command: {json.dumps(tool + ' get {app}')}\n"
            f"  set_command: {json.dumps(tool + ' set {app}')}\n"
        ),
    )
    result = cli("run", str(lab.site), "--yes", "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 0, result.stderr[-3000:]

    status = json.loads(cli("lab", "status", "--dir", str(lab.root), "--json").stdout)
    assert {a["type"] for a in status["apps"]} == {"redis"}
    calls = [json.loads(line) for line in (lab.root / "cfgtool.argv.log").read_text().splitlines()]
    assert {c[2] for c in calls} == {"get", "set"}
    redis_nodes = json.loads(lab.config.read_text())["redis_nodes"]
    assert not any(redis_nodes[0] in arg or "redis" == arg for c in calls for arg in c), calls
    originals = list((tmp_path / "state" / "originals").rglob("*.ini"))
    assert len(originals) == 2 and all(p.stat().st_mode & 0o077 == 0 for p in originals)


MANUAL_PLAYBOOK = """
name: configure-only
title: Configure the Redis options by hand
states:
  - id: configure-redis-options
    title: Configure every Redis persistence option, but not type=redis yet
    seed_step: prepare.4
    scope: app
    actions:
      - do: options.set
        with: {set: preparation}
"""


def test_manual_backend_asks_the_operator_per_application_and_records_the_answers(
    make_lab, tmp_path
):
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    _switch_backend(lab.site, "options_backend:\n  kind: manual\n")
    playbook = tmp_path / "configure-only.yaml"
    playbook.write_text(MANUAL_PLAYBOOK)
    state_dir = tmp_path / "state"
    env = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "NO_COLOR": "1", "TERM": "xterm"}
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "ors_migrate",
            "run",
            str(lab.site),
            "--playbook",
            str(playbook),
            "--state-dir",
            str(state_dir),
        ],
        cwd=str(REPO),
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )
    apps = sorted(json.loads(lab.config.read_text())["apps"])
    seen = []
    for _ in apps:
        child.expect(r"Application object '([^']+)'")
        seen.append(child.match.group(1))
        child.expect("sessionid-with-nodeid")
        child.expect(r"is it done\?")
        # The operator makes the change in Genesys Administrator, then confirms.
        child.send("y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert sorted(seen) == apps

    for app in apps:
        record = json.loads((state_dir / "manual-options" / "ors-lab" / f"{app}.json").read_text())
        assert record["orchestration/sessionid-with-nodeid"] == {"value": "true"}
        assert "persistence/redis-nodes" in record
        # The tool never edits the options itself with the manual backend.
        options = read_options(lab.options(app).read_text(), "x")
        assert ("persistence", "redis-nodes") not in options

    # --yes cannot stand in for a person's confirmation of a manual step.
    unattended = cli(
        "run",
        str(lab.site),
        "--playbook",
        str(playbook),
        "--yes",
        "--state-dir",
        str(tmp_path / "state2"),
    )
    assert unattended.returncode == 130
    assert "must be done by a person" in unattended.stderr

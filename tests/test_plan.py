"""The dry-run plan: the documented steps in order, a hash that only changes with what the plan
does, option diffs with type=redis last, no secret in any format, and no network library."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ors_migrate.errors import SiteError
from ors_migrate.plan import plan_hash
from ors_migrate.render import FORMATS, render_plan
from ors_migrate.runner import load_playbook, make_plan
from ors_migrate.site import load_site
from ors_migrate.step import Plan

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "site.yaml"
DOCUMENTED_STEPS = [f"prepare.{n}" for n in range(1, 7)] + [f"enable.{n}" for n in range(1, 6)]
NETWORK_LIBRARIES = ("paramiko", "redis", "cassandra")

# Known secret values: the environment and files of the test hold them, the plan must not.
REDIS_PASSWORD = "redis-pw-7Hq2xZ"
CASSANDRA_PASSWORD = "cass-pw-Lm83Vd"
SSH_PASSPHRASE = "ssh-pp-Q9wK1e"
OLD_INI_PASSWORD = "old-ini-pw-Rt5Yb"
SECRET_VALUES = (REDIS_PASSWORD, CASSANDRA_PASSWORD, SSH_PASSPHRASE, OLD_INI_PASSWORD)
SECRET_ENV = {
    "PLAN_REDIS_PASSWORD": REDIS_PASSWORD,
    "PLAN_SSH_PASSPHRASE": SSH_PASSPHRASE,
}

SITE = """\
version: 1
name: plan-site
hosts:
  lab:
    transport: local
  remote:
    transport: ssh
    ssh: {{address: 10.9.9.9, user: ors, key_passphrase: env:PLAN_SSH_PASSPHRASE}}
options_backend:
  kind: ini-file
  path: {root}/{{app}}.ini
services:
  start: ctl start {{app}}
  stop: ctl stop {{app}}
  status: ctl status {{app}}
  switchover: ctl switchover {{pair}} | tee -a {root}/switchovers.log
  upgrade: ctl upgrade {{app}} {{version}}
ors:
  digital_persistence:
    {{section: persistence, option: enable-multimedia-persistence, value: "false"}}
ors_clusters:
  - name: VOICE
    ha_pairs:
      - name: v1
        apps:
          - {{name: V1A, host: lab, role: primary, version: 8.1.401.12}}
          - {{name: V1B, host: lab, role: backup, version: 8.1.401.12}}
      - name: v2
        apps:
          - {{name: V2A, host: remote, role: primary, version: 8.1.401.12}}
          - {{name: V2B, host: remote, role: backup, version: 8.1.401.12}}
  - name: OUTBOUND
    ha_pairs:
      - name: o1
        apps:
          - {{name: O1A, host: lab, role: primary, version: 8.1.401.12}}
          - {{name: O1B, host: lab, role: backup, version: 8.1.401.12}}
redis:
  nodes: [r1:7001, r2:7002, r3:7003]
  username: ors
  password: env:PLAN_REDIS_PASSWORD
  aof: true
  replicas_per_master: 1
  tls: {{enabled: true, cert: /tls/c.crt, key: /tls/c.key, cacert: /tls/ca.crt}}
cassandra:
  contact_points: [127.0.0.1:9042]
  version: 3.11.4
  password: file:{root}/cassandra.password
"""

CURRENT_OPTIONS = f"""\
[persistence]
type = cassandra
password = {OLD_INI_PASSWORD}

[orchestration]
sessionid-with-nodeid = false
"""


@pytest.fixture
def site_path(tmp_path: Path) -> Path:
    """A site with local applications whose current options (and an old password) are read
    from ini files, plus one SSH host; its secrets are env and file references."""
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(root=tmp_path), encoding="utf-8")
    (tmp_path / "cassandra.password").write_text(CASSANDRA_PASSWORD, encoding="utf-8")
    for app in ("V1A", "V1B", "O1A", "O1B"):
        (tmp_path / f"{app}.ini").write_text(CURRENT_OPTIONS, encoding="utf-8")
    return path


def plan_for(path: Path, playbook: str = "migrate-to-redis") -> Plan:
    return make_plan(load_site(path), load_playbook(playbook))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ors_migrate", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def option_rows(plan: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every option change of a JSON plan, per application, in execution order."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for state in plan["states"]:
        for action in state["actions"]:
            for change in action["option_changes"]:
                rows.setdefault(action["app"], []).append({**change, "state": state["id"]})
    return rows


def test_json_plan_lists_the_documented_steps_prepare_1_to_6_then_enable_1_to_5(
    site_path: Path,
) -> None:
    done = cli("plan", str(site_path), "--format", "json", env=SECRET_ENV)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert set(plan) >= {"playbook", "plan_hash", "states"}
    steps = [s["seed_step"] for s in plan["states"] if s["seed_step"] is not None]
    assert list(dict.fromkeys(steps)) == DOCUMENTED_STEPS
    assert steps == sorted(steps, key=DOCUMENTED_STEPS.index), "steps run in documented order"
    for state in plan["states"]:
        assert {"id", "title", "seed_step", "actions"} <= set(state)


def test_every_action_names_its_target_and_roles_are_marked_as_resolved_at_run_time(
    site_path: Path,
) -> None:
    plan = plan_for(site_path)
    restart = plan.state("standard-restart").actions[0]
    assert restart.target.as_dict() == {
        "cluster": "VOICE",
        "ha_pair": "v1",
        "app": "V1B",
        "host": "lab",
        "role": "backup",
        "role_resolved_at_run_time": True,
    }
    for state in plan.states:
        if state.scope == "app":
            assert all(a.target.app and a.target.host for a in state.actions), state.id


def test_plan_hash_is_the_same_in_two_processes_and_in_this_one(site_path: Path) -> None:
    hashes = {
        json.loads(
            cli(
                "plan", str(site_path), "-f", "json", env={**SECRET_ENV, "PYTHONHASHSEED": seed}
            ).stdout
        )["plan_hash"]
        for seed in ("1", "2")
    }
    assert hashes == {plan_for(site_path).plan_hash}


def canonical_hash(plan: Plan) -> str:
    """The plan hash as runs have stored it: SHA-256 of the plan without old option values,
    as JSON with sorted keys and no spaces."""
    body = {
        "playbook": plan.playbook,
        "site": plan.site,
        "rollback_playbook": plan.rollback_playbook,
        "states": [s.as_dict(with_old=False) for s in plan.states],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_plan_hash_keeps_its_value_however_it_is_computed(site_path: Path) -> None:
    """Runs store the hash and a resume compares a new plan's with it: the lists of option
    changes the hash encodes once for many applications, and a value it cannot share, must
    give the hash the canonical JSON gives."""
    plan = plan_for(site_path)
    lists = [
        json.dumps(a.as_dict(with_old=False)["option_changes"])
        for s in plan.states
        for a in s.actions
        if a.preview.option_changes
    ]
    assert len(set(lists)) < len(lists), "some applications share a list of changes"
    assert plan.plan_hash == canonical_hash(plan)
    first, second = plan.state("configure-redis-options").actions[:2]
    second.preview.option_changes[0]["new"] = "another value"  # lists in a state differ
    assert plan_hash(plan) == canonical_hash(plan) != plan.plan_hash
    first.preview.option_changes[0]["new"] = ["not", "hashable"]
    assert plan_hash(plan) == canonical_hash(plan)


def test_plan_hash_changes_with_the_topology_and_not_with_current_option_values(
    site_path: Path,
) -> None:
    before = plan_for(site_path).plan_hash
    (site_path.parent / "V1A.ini").write_text("[persistence]\ntype = redis\n", encoding="utf-8")
    assert plan_for(site_path).plan_hash == before
    text = site_path.read_text(encoding="utf-8")
    site_path.write_text(text.replace("version: 3.11.4", "version: 3.11.5"), encoding="utf-8")
    assert plan_for(site_path).plan_hash == before, "a fact the plan does not act on"
    site_path.write_text(text.replace("r3:7003", "r3:7004"), encoding="utf-8")
    assert plan_for(site_path).plan_hash != before


def test_type_redis_is_the_last_option_change_of_every_application_and_in_a_later_state(
    site_path: Path,
) -> None:
    plan = json.loads(render_plan(plan_for(site_path), "json"))
    rows = option_rows(plan)
    assert sorted(rows) == ["O1A", "O1B", "V1A", "V1B", "V2A", "V2B"]
    order = [s["id"] for s in plan["states"]]
    for app, changes in rows.items():
        last = changes[-1]
        assert (last["section"], last["option"], last["new"]) == ("persistence", "type", "redis")
        assert [c for c in changes if c["option"] == "type"] == [last], app
        others = [order.index(c["state"]) for c in changes[:-1]]
        assert max(others) < order.index(last["state"]), app


def test_redis_is_enabled_on_the_predicted_backups_then_on_the_other_members(
    site_path: Path,
) -> None:
    plan = plan_for(site_path)
    first = [
        a.target.app
        for a in plan.state("enable-redis-on-backups").actions
        if a.action == "options.set"
    ]
    second = [
        a.target.app
        for a in plan.state("enable-redis-on-new-backups").actions
        if a.action == "options.set"
    ]
    # prepare.5 switched every pair over, so the site's primaries are the backups of enable.1.
    assert first == ["V1A", "V2A", "O1A"]
    assert second == ["V1B", "V2B", "O1B"]


def test_option_diffs_show_current_values_read_from_local_option_files(site_path: Path) -> None:
    rows = option_rows(json.loads(render_plan(plan_for(site_path), "json")))
    sessionid = next(r for r in rows["V1A"] if r["option"] == "sessionid-with-nodeid")
    assert (sessionid["old"], sessionid["new"]) == ("false", "true")
    type_change = rows["V1A"][-1]
    assert (type_change["old"], type_change["new"]) == ("cassandra", "redis")
    remote = next(r for r in rows["V2A"] if r["option"] == "sessionid-with-nodeid")
    assert remote["old_known"] is False, "options on an SSH host are read at run time"


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_secret_value_appears_in_any_format(site_path: Path, fmt: str) -> None:
    done = cli("plan", str(site_path), "--format", fmt, env=SECRET_ENV)
    assert done.returncode == 0, done.stderr
    for secret in SECRET_VALUES:
        assert secret not in done.stdout + done.stderr
    if fmt != "mermaid":
        assert "***" in done.stdout


def test_gates_and_the_rollback_point_are_marked_in_every_human_format(site_path: Path) -> None:
    plan = plan_for(site_path)
    assert plan.rollback_point() == "enable-redis-on-backups"
    text = render_plan(plan, "text")
    assert text.count("GATE: ") == 2 and text.count("ROLLBACK POINT") == 1
    markdown = render_plan(plan, "markdown")
    assert markdown.count("**Gate**") == 2 and markdown.count("**Rollback point**") == 1
    mermaid = render_plan(plan, "mermaid")
    assert (
        mermaid.count("GATE") == 2 and "note left of enable_redis_on_backups: ROLLBACK" in mermaid
    )


def test_markdown_escapes_pipes_in_commands(site_path: Path) -> None:
    markdown = render_plan(plan_for(site_path), "markdown")
    assert "ctl switchover v1 \\| tee -a" in markdown


def test_mermaid_labels_escape_characters_mermaid_reads_as_syntax(site_path: Path) -> None:
    mermaid = render_plan(plan_for(site_path), "mermaid")
    assert "<cluster>" not in mermaid and "ORS#58;#lt;cluster#gt;" in mermaid


def test_validate_of_a_site_on_cassandra_4_exits_0_with_a_warning(site_path: Path) -> None:
    text = site_path.read_text(encoding="utf-8")
    site_path.write_text(text.replace("version: 3.11.4", "version: 4.1.3"), encoding="utf-8")
    done = cli("validate", str(site_path), env=SECRET_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cassandra.version-4" in done.stdout
    assert "could not have persisted sessions" in done.stdout


def test_plan_refuses_a_site_that_breaks_a_documented_rule(site_path: Path) -> None:
    text = site_path.read_text(encoding="utf-8")
    site_path.write_text(text.replace("version: 3.11.4", "version: latest"), encoding="utf-8")
    done = cli("plan", str(site_path), "--format", "json", env=SECRET_ENV)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "[cassandra.version]" in done.stderr and f"{site_path}:" in done.stderr


def _imports_after(args: list[str], tmp_path: Path) -> list[str]:
    report = tmp_path / "modules.json"
    probe = (
        "import json, sys\n"
        "from ors_migrate.cli import main\n"
        f"sys.argv = ['ors-migrate', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        f"names = sorted(m for m in sys.modules if m.split('.')[0] in {NETWORK_LIBRARIES!r})\n"
        f"open({str(report)!r}, 'w').write(json.dumps(names))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **SECRET_ENV},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text())


@pytest.mark.parametrize(
    "args",
    [["--help"], ["plan", "SITE", "--format", "json"], ["plan", "EXAMPLE"], ["validate", "SITE"]],
)
def test_help_plan_and_validate_import_no_network_library(
    args: list[str], site_path: Path, tmp_path: Path
) -> None:
    args = [str(site_path) if a == "SITE" else str(EXAMPLE) if a == "EXAMPLE" else a for a in args]
    assert _imports_after(args, tmp_path) == []


# The only (example, playbook) pairs refused, and the rule that refuses them: a FIPS playbook for a
# platform the example has no ORS application on, or on a site not prepared for FIPS.
REFUSED = {
    ("site.yaml", "fips-windows"): "fips-platform",
    ("site.yaml", "fips-linux"): "fips-install-dir",
    ("site.yaml", "fips-linux-off"): "fips-install-dir",
    ("site-linux-fips.yaml", "fips-windows"): "fips-platform",
    ("site-windows.yaml", "fips-linux"): "fips-platform",
}
OPTION_SOURCES = ("documents", "documents (section: site file)", "site file", "found at run time")


def test_no_plan_of_a_bundled_playbook_and_example_prints_none() -> None:
    """`None` is Python's, not the operator's: a value not known, not checked or removed is
    said in words in every format; and every option change says where its name comes from."""
    from ors_migrate.playbook import bundled_playbooks

    examples = sorted(p.name for p in (REPO / "examples").glob("*.yaml"))
    planned: dict[str, list[str]] = {}
    for example in examples:
        for playbook in bundled_playbooks():
            site = str(REPO / "examples" / example)
            if (example, playbook) in REFUSED:
                with pytest.raises(SiteError) as refused:
                    plan_for(Path(site), playbook)
                assert refused.value.rule == REFUSED[example, playbook]
                continue
            rows = [
                change
                for state in plan_for(Path(site), playbook).as_dict()["states"]
                for action in state["actions"]
                for change in action["option_changes"]
            ]
            assert all(c["source"] in OPTION_SOURCES for c in rows), (example, playbook, rows)
            for fmt in ("text", "markdown"):
                done = cli("plan", site, "-p", playbook, "--format", fmt, env=SECRET_ENV)
                assert done.returncode == 0, done.stderr
                assert "None" not in done.stdout, f"{example} {playbook} {fmt}"
                if fmt == "text":
                    changes = [line for line in done.stdout.splitlines() if " -> " in line]
                    assert len(changes) == len(rows), (example, playbook)
                    assert all(
                        any(line.endswith(f"(name from: {s})") for s in OPTION_SOURCES)
                        for line in changes
                    ), changes
            planned.setdefault(playbook, []).append(example)
    assert sorted(planned) == bundled_playbooks()  # each bundled playbook planned on an example
    assert sum(map(len, planned.values())) == len(examples) * len(planned) - len(REFUSED)


def test_option_names_are_marked_with_their_source(site_path: Path) -> None:
    text = render_plan(plan_for(site_path), "text")
    assert "[persistence] redis-nodes:" in text
    line = next(x for x in text.splitlines() if "[persistence] redis-nodes:" in x)
    assert line.endswith("(name from: documents)")
    nodeid = next(x for x in text.splitlines() if "sessionid-with-nodeid:" in x)
    assert "(section: site file)" in nodeid
